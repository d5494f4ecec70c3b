// Farthest point sampling, CUDA: tensors to pointers; the kernel and its launch
// configuration are in cuda/kernels/fps.cuh (also run by the CPU emulator of
// tests/cuda_emu).
#include <torch/library.h>

#include "cuda/common.cuh"
#include "cuda/kernels/fps.cuh"

namespace pointcmt {
namespace cuda {
namespace {

at::Tensor fps_cuda(const at::Tensor& x, const at::Tensor& ptr, const at::Tensor& out_ptr,
                    const at::Tensor& start, int64_t num_out) {
  check_cuda_points(x, "x");
  check_cuda_index(ptr, x, "ptr");
  check_cuda_index(out_ptr, x, "out_ptr");
  check_cuda_index(start, x, "start");
  const int64_t num_clouds = ptr.numel() - 1;
  TORCH_CHECK(num_clouds >= 1 && out_ptr.numel() == num_clouds + 1 && start.numel() == num_clouds,
              "pointcmt::fps: 'ptr' (B+1), 'out_ptr' (B+1) and 'start' (B) disagree");
  TORCH_CHECK(num_out >= 0, "pointcmt::fps: 'num_out' must be >= 0");
  TORCH_CHECK(x.size(0) < (int64_t(1) << 32), "pointcmt::fps: at most 2^32 - 1 points");
  const c10::cuda::CUDAGuard guard(x.device());
  auto out = at::empty({num_out}, x.options().dtype(at::kLong));
  if (num_out == 0 || x.size(0) == 0) return out;
  auto xc = x.contiguous();
  auto ptr_c = ptr.contiguous(), out_ptr_c = out_ptr.contiguous(), start_c = start.contiguous();
  auto dist = at::empty({x.size(0)}, x.options());
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "pointcmt_fps_cuda", [&] {
    fps_kernels::launch<scalar_t>(xc.data_ptr<scalar_t>(), ptr_c.data_ptr<int64_t>(),
                                  out_ptr_c.data_ptr<int64_t>(), start_c.data_ptr<int64_t>(), num_clouds,
                                  x.size(0), x.size(1), num_out, dist.data_ptr<scalar_t>(),
                                  out.data_ptr<int64_t>(), stream);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace
}  // namespace cuda
}  // namespace pointcmt

TORCH_LIBRARY_IMPL(pointcmt, CUDA, m) { m.impl("fps", &pointcmt::cuda::fps_cuda); }
