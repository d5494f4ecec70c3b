// Earth Mover's Distance, CUDA: tensors to pointers and scratch buffers; the
// auction kernel, its description and its launch configuration are in
// cuda/kernels/emd.cuh (also run by the CPU emulator of tests/cuda_emu).
#include <torch/library.h>

#include <tuple>

#include "cuda/common.cuh"
#include "cuda/kernels/emd.cuh"

namespace pointcmt {
namespace cuda {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> emd_cuda(const at::Tensor& x, const at::Tensor& y, double eps,
                                                        int64_t max_iters) {
  TORCH_CHECK(x.is_cuda() && y.is_cuda() && x.device() == y.device(),
              "pointcmt::emd: 'x' and 'y' must be CUDA tensors on the same device");
  TORCH_CHECK(x.dim() == 3, "pointcmt::emd: 'x' must have shape (B, N, D), got ", x.sizes());
  TORCH_CHECK(x.sizes() == y.sizes(), "pointcmt::emd: 'x' and 'y' must have the same shape, got ", x.sizes(),
              " and ", y.sizes());
  TORCH_CHECK(x.scalar_type() == y.scalar_type(), "pointcmt::emd: 'x' and 'y' must have the same dtype");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "pointcmt::emd: 'x' must be float32 or float64, got ", x.scalar_type());
  TORCH_CHECK(x.size(2) >= 1, "pointcmt::emd: points need at least one coordinate");
  TORCH_CHECK(x.size(1) < (int64_t{1} << 31) - 1, "pointcmt::emd: too many points per set");
  TORCH_CHECK(eps >= 0.0, "pointcmt::emd: 'eps' must be >= 0, got ", eps);
  TORCH_CHECK(max_iters >= 1, "pointcmt::emd: 'max_iters' must be >= 1, got ", max_iters);
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t B = x.size(0), n = x.size(1), dim = x.size(2);
  auto dist = at::empty({B, n}, x.options());
  auto assignment = at::empty({B, n}, x.options().dtype(at::kLong));
  auto gap = at::zeros({B}, x.options());
  if (B == 0 || n == 0) return {dist, assignment, gap};
  auto xc = x.contiguous(), yc = y.contiguous();
  auto doubles = at::empty({emd_kernels::scratch_doubles(B, n, dim)}, x.options().dtype(at::kDouble));
  auto ints = at::empty({emd_kernels::scratch_ints(B, n)}, x.options().dtype(at::kInt));
  auto keys = at::empty({emd_kernels::scratch_keys(B, n)}, x.options().dtype(at::kLong));
  const emd_kernels::PairScratch scratch = emd_kernels::make_scratch(
      doubles.data_ptr<double>(), ints.data_ptr<int>(),
      reinterpret_cast<unsigned long long*>(keys.data_ptr<int64_t>()), B, n, dim);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "pointcmt_emd_cuda", [&] {
    emd_kernels::launch<scalar_t>(xc.data_ptr<scalar_t>(), yc.data_ptr<scalar_t>(), B, static_cast<int>(n),
                                  static_cast<int>(dim), eps, max_iters, scratch, dist.data_ptr<scalar_t>(),
                                  assignment.data_ptr<int64_t>(), gap.data_ptr<scalar_t>(),
                                  at::cuda::getCurrentCUDAStream());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {dist, assignment, gap};
}

}  // namespace
}  // namespace cuda
}  // namespace pointcmt

TORCH_LIBRARY_IMPL(pointcmt, CUDA, m) { m.impl("emd", &pointcmt::cuda::emd_cuda); }
