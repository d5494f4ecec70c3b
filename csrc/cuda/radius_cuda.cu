// Radius search, CUDA: tensors to pointers; the kernel and its launch
// configuration are in cuda/kernels/radius.cuh (also run by the CPU emulator of
// tests/cuda_emu).
#include <torch/library.h>

#include "cuda/common.cuh"
#include "cuda/kernels/radius.cuh"

namespace pointcmt {
namespace cuda {
namespace {

at::Tensor radius_cuda(const at::Tensor& x, const at::Tensor& y, const at::Tensor& ptr_x,
                       const at::Tensor& ptr_y, double r, int64_t max_num_neighbors) {
  check_cuda_points(x, "x");
  check_cuda_points(y, "y");
  check_cuda_index(ptr_x, x, "ptr_x");
  check_cuda_index(ptr_y, x, "ptr_y");
  TORCH_CHECK(x.device() == y.device(), "pointcmt::radius: 'x' and 'y' must be on the same device");
  TORCH_CHECK(x.scalar_type() == y.scalar_type(), "pointcmt::radius: 'x' and 'y' must have the same dtype");
  TORCH_CHECK(x.size(1) == y.size(1) && x.size(1) >= 1,
              "pointcmt::radius: 'x' and 'y' must have the same number of coordinates D >= 1");
  TORCH_CHECK(r > 0, "pointcmt::radius: 'r' must be positive, got ", r);
  TORCH_CHECK(max_num_neighbors >= 1, "pointcmt::radius: 'max_num_neighbors' must be >= 1, got ",
              max_num_neighbors);
  TORCH_CHECK(ptr_x.numel() >= 2 && ptr_x.numel() == ptr_y.numel(),
              "pointcmt::radius: 'ptr_x' and 'ptr_y' must describe the same clouds");
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t num_queries = y.size(0);
  auto out = at::full({num_queries, max_num_neighbors}, -1, y.options().dtype(at::kLong));
  if (num_queries == 0 || x.size(0) == 0) return out;
  auto xc = x.contiguous(), yc = y.contiguous(), px = ptr_x.contiguous(), py = ptr_y.contiguous();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "pointcmt_radius_cuda", [&] {
    // r * r in double, rounded once to the points' dtype (as on CPU).
    const scalar_t r2 = static_cast<scalar_t>(r * r);
    radius_kernels::launch<scalar_t>(xc.data_ptr<scalar_t>(), yc.data_ptr<scalar_t>(), px.data_ptr<int64_t>(),
                                     py.data_ptr<int64_t>(), px.numel() - 1, xc.size(0), num_queries,
                                     xc.size(1), r2, max_num_neighbors, out.data_ptr<int64_t>(),
                                     at::cuda::getCurrentCUDAStream());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace
}  // namespace cuda
}  // namespace pointcmt

TORCH_LIBRARY_IMPL(pointcmt, CUDA, m) { m.impl("radius", &pointcmt::cuda::radius_cuda); }
