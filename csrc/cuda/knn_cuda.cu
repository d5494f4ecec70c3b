// k nearest neighbours, CUDA: tensors to pointers; the kernel and its launch
// configuration are in cuda/kernels/knn.cuh (also run by the CPU emulator of
// tests/cuda_emu).
#include <torch/library.h>

#include <limits>
#include <tuple>

#include "cuda/common.cuh"
#include "cuda/kernels/knn.cuh"

namespace pointcmt {
namespace cuda {
namespace {

std::tuple<at::Tensor, at::Tensor> knn_cuda(const at::Tensor& x, const at::Tensor& y, const at::Tensor& ptr_x,
                                            const at::Tensor& ptr_y, int64_t k, bool cosine) {
  check_cuda_points(x, "x");
  check_cuda_points(y, "y");
  check_cuda_index(ptr_x, x, "ptr_x");
  check_cuda_index(ptr_y, x, "ptr_y");
  TORCH_CHECK(x.device() == y.device(), "pointcmt::knn: 'x' and 'y' must be on the same device");
  TORCH_CHECK(x.scalar_type() == y.scalar_type(), "pointcmt::knn: 'x' and 'y' must have the same dtype");
  TORCH_CHECK(x.size(1) == y.size(1) && x.size(1) >= 1,
              "pointcmt::knn: 'x' and 'y' must have the same number of coordinates D >= 1");
  TORCH_CHECK(k >= 1, "pointcmt::knn: 'k' must be >= 1, got ", k);
  TORCH_CHECK(ptr_x.numel() >= 2 && ptr_x.numel() == ptr_y.numel(),
              "pointcmt::knn: 'ptr_x' and 'ptr_y' must describe the same clouds");
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t num_queries = y.size(0);
  auto dist = at::full({num_queries, k}, std::numeric_limits<double>::infinity(), y.options());
  auto idx = at::full({num_queries, k}, -1, y.options().dtype(at::kLong));
  if (num_queries == 0 || x.size(0) == 0) return {dist, idx};
  auto xc = x.contiguous(), yc = y.contiguous(), px = ptr_x.contiguous(), py = ptr_y.contiguous();
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "pointcmt_knn_cuda", [&] {
    at::Tensor norm_x, norm_y;
    if (cosine) {
      norm_x = at::empty({xc.size(0)}, xc.options());
      norm_y = at::empty({num_queries}, yc.options());
    }
    knn_kernels::launch<scalar_t>(
        xc.data_ptr<scalar_t>(), yc.data_ptr<scalar_t>(), px.data_ptr<int64_t>(), py.data_ptr<int64_t>(),
        px.numel() - 1, xc.size(0), num_queries, xc.size(1), k, cosine,
        cosine ? norm_x.data_ptr<scalar_t>() : nullptr, cosine ? norm_y.data_ptr<scalar_t>() : nullptr,
        dist.data_ptr<scalar_t>(), idx.data_ptr<int64_t>(), stream);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {dist, idx};
}

}  // namespace
}  // namespace cuda
}  // namespace pointcmt

TORCH_LIBRARY_IMPL(pointcmt, CUDA, m) { m.impl("knn", &pointcmt::cuda::knn_cuda); }
