// Max over gathered rows, CUDA: tensors to pointers; the kernel and its launch
// configuration are in cuda/kernels/gather_max.cuh (also run by the CPU
// emulator of tests/cuda_emu). The backward is torch's scatter_add
// (pointcmt_pyg/ops/gather_max.py).
#include <torch/library.h>

#include "cuda/common.cuh"
#include "cuda/kernels/gather_max.cuh"

namespace pointcmt {
namespace cuda {
namespace {

std::tuple<at::Tensor, at::Tensor> gather_max_cuda(const at::Tensor& values, const at::Tensor& slots) {
  TORCH_CHECK(values.is_cuda() && slots.device() == values.device(),
              "pointcmt::gather_max: 'values' and 'slots' must be on the same CUDA device");
  TORCH_CHECK(values.dim() == 2, "pointcmt::gather_max: 'values' must have shape (N, C), got ", values.sizes());
  TORCH_CHECK(values.scalar_type() == at::kFloat || values.scalar_type() == at::kDouble,
              "pointcmt::gather_max: 'values' must be float32 or float64, got ", values.scalar_type());
  TORCH_CHECK(slots.dim() == 2 && slots.scalar_type() == at::kLong,
              "pointcmt::gather_max: 'slots' must be int64 of shape (M, K), got ", slots.scalar_type(), " ",
              slots.sizes());
  const int64_t C = values.size(1), M = slots.size(0), K = slots.size(1);
  const c10::cuda::CUDAGuard guard(values.device());
  auto out = at::empty({M, C}, values.options());
  auto arg = at::empty({M, C}, values.options().dtype(at::kLong));
  if (M == 0 || C == 0) return {out, arg};
  auto vc = values.contiguous();
  auto sc = slots.contiguous();
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(vc.scalar_type(), "pointcmt_gather_max_cuda", [&] {
    gather_max_kernels::launch_forward<scalar_t>(vc.data_ptr<scalar_t>(), sc.data_ptr<int64_t>(), M, K, C,
                                                 out.data_ptr<scalar_t>(), arg.data_ptr<int64_t>(), stream);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {out, arg};
}

}  // namespace
}  // namespace cuda
}  // namespace pointcmt

TORCH_LIBRARY_IMPL(pointcmt, CUDA, m) {
  m.impl("gather_max", &pointcmt::cuda::gather_max_cuda);
}
