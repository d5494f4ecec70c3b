// Max over the rows of each segment of a CSR layout, CUDA: tensors to
// pointers; the kernels and their launch configuration are in
// cuda/kernels/segment_max.cuh (also run by the CPU emulator of tests/cuda_emu).
// The offsets are not read on the host (no synchronisation): the Python
// wrapper checks them where they live on the CPU, and the kernels trust them.
#include <torch/library.h>

#include "cuda/common.cuh"
#include "cuda/kernels/segment_max.cuh"

namespace pointcmt {
namespace cuda {
namespace {

void check_float(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.is_cuda(), "pointcmt::", op, ": '", name, "' must be a CUDA tensor");
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble,
              "pointcmt::", op, ": '", name, "' must be float32 or float64, got ", t.scalar_type());
}

void check_ptr(const at::Tensor& ptr, const at::Tensor& like, const char* op) {
  TORCH_CHECK(ptr.device() == like.device() && ptr.dim() == 1 && ptr.size(0) >= 1 && ptr.scalar_type() == at::kLong,
              "pointcmt::", op, ": 'ptr' must be a 1-d int64 tensor of M + 1 >= 1 offsets on ", like.device());
}

std::tuple<at::Tensor, at::Tensor> segment_max_cuda(const at::Tensor& src, const at::Tensor& ptr) {
  check_float(src, "segment_max", "src");
  TORCH_CHECK(src.dim() == 2, "pointcmt::segment_max: 'src' must have shape (E, C), got ", src.sizes());
  check_ptr(ptr, src, "segment_max");
  const int64_t M = ptr.size(0) - 1, C = src.size(1);
  const c10::cuda::CUDAGuard guard(src.device());
  auto values = at::empty({M, C}, src.options());
  auto arg = at::empty({M, C}, src.options().dtype(at::kLong));
  if (M == 0 || C == 0) return {values, arg};
  auto sc = src.contiguous();
  auto pc = ptr.contiguous();
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(sc.scalar_type(), "pointcmt_segment_max_cuda", [&] {
    segment_max_kernels::launch_forward<scalar_t>(sc.data_ptr<scalar_t>(), pc.data_ptr<int64_t>(), M, C,
                                                  values.data_ptr<scalar_t>(), arg.data_ptr<int64_t>(), stream);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {values, arg};
}

at::Tensor segment_max_backward_cuda(const at::Tensor& grad, const at::Tensor& arg, const at::Tensor& ptr,
                                     int64_t num_rows) {
  check_float(grad, "segment_max_backward", "grad");
  TORCH_CHECK(grad.dim() == 2, "pointcmt::segment_max_backward: 'grad' must have shape (M, C), got ", grad.sizes());
  TORCH_CHECK(arg.device() == grad.device() && arg.sizes() == grad.sizes() && arg.scalar_type() == at::kLong,
              "pointcmt::segment_max_backward: 'arg' must be int64 of the shape of 'grad' ", grad.sizes(), " on ",
              grad.device());
  check_ptr(ptr, grad, "segment_max_backward");
  TORCH_CHECK(ptr.size(0) == grad.size(0) + 1, "pointcmt::segment_max_backward: 'ptr' must hold M + 1 = ",
              grad.size(0) + 1, " offsets, got ", ptr.size(0));
  TORCH_CHECK(num_rows >= 0, "pointcmt::segment_max_backward: 'num_rows' must be >= 0, got ", num_rows);
  const int64_t M = grad.size(0), C = grad.size(1);
  const c10::cuda::CUDAGuard guard(grad.device());
  auto out = at::empty({num_rows, C}, grad.options());
  if (num_rows == 0 || C == 0) return out;
  auto gc = grad.contiguous();
  auto ac = arg.contiguous();
  auto pc = ptr.contiguous();
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(gc.scalar_type(), "pointcmt_segment_max_backward_cuda", [&] {
    segment_max_kernels::launch_backward<scalar_t>(gc.data_ptr<scalar_t>(), ac.data_ptr<int64_t>(),
                                                   pc.data_ptr<int64_t>(), M, C, out.data_ptr<scalar_t>(), stream);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace
}  // namespace cuda
}  // namespace pointcmt

TORCH_LIBRARY_IMPL(pointcmt, CUDA, m) {
  m.impl("segment_max", &pointcmt::cuda::segment_max_cuda);
  m.impl("segment_max_backward", &pointcmt::cuda::segment_max_backward_cuda);
}
