// Max over the slots of a padded block, CUDA: tensors to pointers; the kernels
// and their launch configuration are in cuda/kernels/slot_max.cuh (also run by
// the CPU emulator of tests/cuda_emu).
#include <torch/library.h>

#include "cuda/common.cuh"
#include "cuda/kernels/slot_max.cuh"

namespace pointcmt {
namespace cuda {
namespace {

void check_float(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.is_cuda(), "pointcmt::", op, ": '", name, "' must be a CUDA tensor");
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble,
              "pointcmt::", op, ": '", name, "' must be float32 or float64, got ", t.scalar_type());
}

std::tuple<at::Tensor, at::Tensor> slot_max_cuda(const at::Tensor& block) {
  check_float(block, "slot_max", "block");
  TORCH_CHECK(block.dim() == 3, "pointcmt::slot_max: 'block' must have shape (M, W, C), got ", block.sizes());
  TORCH_CHECK(block.size(1) >= 1, "pointcmt::slot_max: 'block' needs at least one slot (W >= 1)");
  const int64_t M = block.size(0), W = block.size(1), C = block.size(2);
  const c10::cuda::CUDAGuard guard(block.device());
  auto values = at::empty({M, C}, block.options());
  auto slot = at::empty({M, C}, block.options().dtype(at::kLong));
  if (M == 0 || C == 0) return {values, slot};
  auto bc = block.contiguous();
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(bc.scalar_type(), "pointcmt_slot_max_cuda", [&] {
    slot_max_kernels::launch_forward<scalar_t>(bc.data_ptr<scalar_t>(), M, W, C, values.data_ptr<scalar_t>(),
                                               slot.data_ptr<int64_t>(), stream);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {values, slot};
}

at::Tensor slot_max_backward_cuda(const at::Tensor& grad, const at::Tensor& slot, int64_t width) {
  check_float(grad, "slot_max_backward", "grad");
  TORCH_CHECK(grad.dim() == 2, "pointcmt::slot_max_backward: 'grad' must have shape (M, C), got ", grad.sizes());
  TORCH_CHECK(slot.device() == grad.device() && slot.sizes() == grad.sizes() && slot.scalar_type() == at::kLong,
              "pointcmt::slot_max_backward: 'slot' must be int64 of the shape of 'grad' ", grad.sizes(),
              " on ", grad.device());
  TORCH_CHECK(width >= 1, "pointcmt::slot_max_backward: 'width' must be >= 1, got ", width);
  const int64_t M = grad.size(0), C = grad.size(1);
  const c10::cuda::CUDAGuard guard(grad.device());
  auto out = at::empty({M, width, C}, grad.options());
  if (M == 0 || C == 0) return out;
  auto gc = grad.contiguous();
  auto sc = slot.contiguous();
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(gc.scalar_type(), "pointcmt_slot_max_backward_cuda", [&] {
    slot_max_kernels::launch_backward<scalar_t>(gc.data_ptr<scalar_t>(), sc.data_ptr<int64_t>(), M, width, C,
                                                out.data_ptr<scalar_t>(), stream);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace
}  // namespace cuda
}  // namespace pointcmt

TORCH_LIBRARY_IMPL(pointcmt, CUDA, m) {
  m.impl("slot_max", &pointcmt::cuda::slot_max_cuda);
  m.impl("slot_max_backward", &pointcmt::cuda::slot_max_backward_cuda);
}
