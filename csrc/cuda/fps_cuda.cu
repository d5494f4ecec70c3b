// Farthest point sampling, CUDA: one thread block per cloud. Each step every
// thread updates the running distance of its points to the newest sample and
// keeps its best (distance, index); the block then reduces them with warp
// shuffles. For float32 the pair is one 64-bit key (distance bits above,
// ~index below: non-negative floats order like their bit patterns), so a max
// reduction picks the largest distance and, among equal ones, the lowest
// index. float64 reduces (distance, index) pairs with the same order.
#include <torch/library.h>

#include <limits>

#include "cuda/common.cuh"

namespace pointcmt {
namespace cuda {
namespace {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;

struct FloatKey {
  unsigned long long key;
  __device__ static FloatKey lowest() { return {0ull}; }
  __device__ static FloatKey make(float value, int64_t index) {
    const unsigned long long bits = __float_as_uint(value);
    return {(bits << 32) | (0xFFFFFFFFull - static_cast<unsigned long long>(index))};
  }
  __device__ void merge(const FloatKey& o) { key = key > o.key ? key : o.key; }
  __device__ FloatKey shuffle_down(int offset) const {
    return {__shfl_down_sync(0xFFFFFFFFu, key, offset)};
  }
  __device__ int64_t index() const { return static_cast<int64_t>(0xFFFFFFFFull - (key & 0xFFFFFFFFull)); }
};

struct DoublePair {
  double value;
  int64_t idx;
  __device__ static DoublePair lowest() { return {-1.0, 0}; }
  __device__ static DoublePair make(double value, int64_t index) { return {value, index}; }
  __device__ void merge(const DoublePair& o) {
    if (o.value > value || (o.value == value && o.idx < idx)) *this = o;
  }
  __device__ DoublePair shuffle_down(int offset) const {
    return {__shfl_down_sync(0xFFFFFFFFu, value, offset),
            static_cast<int64_t>(__shfl_down_sync(0xFFFFFFFFu, static_cast<long long>(idx), offset))};
  }
  __device__ int64_t index() const { return idx; }
};

template <typename scalar_t> struct ArgMaxOf;
template <> struct ArgMaxOf<float> { using type = FloatKey; };
template <> struct ArgMaxOf<double> { using type = DoublePair; };

template <typename Best>
__device__ __forceinline__ Best warp_reduce(Best best) {
  for (int offset = 16; offset > 0; offset /= 2) best.merge(best.shuffle_down(offset));
  return best;
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads) fps_kernel(const scalar_t* __restrict__ x,
                                                       const int64_t* __restrict__ ptr,
                                                       const int64_t* __restrict__ out_ptr,
                                                       const int64_t* __restrict__ start,
                                                       int64_t num_points, int64_t dim, int64_t num_out,
                                                       scalar_t* __restrict__ dist,
                                                       int64_t* __restrict__ out) {
  using Best = typename ArgMaxOf<scalar_t>::type;
  __shared__ Best warp_best[kWarps];
  __shared__ int64_t chosen;

  const int64_t b = blockIdx.x;
  const int64_t first = ptr[b], n = ptr[b + 1] - first;
  const int64_t out_first = out_ptr[b], num_samples = out_ptr[b + 1] - out_first;
  int64_t current = start[b];
  // Malformed offsets (the Python layer never passes them): write nothing.
  if (num_samples <= 0 || n <= 0 || first < 0 || first + n > num_points || out_first < 0 ||
      out_first + num_samples > num_out || current < 0 || current >= n)
    return;

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  scalar_t* cloud_dist = dist + first;
  const scalar_t* cloud = x + first * dim;
  for (int64_t j = tid; j < n; j += kThreads) cloud_dist[j] = std::numeric_limits<scalar_t>::infinity();

  for (int64_t step = 0; step < num_samples; ++step) {
    if (tid == 0) out[out_first + step] = first + current;
    if (step + 1 == num_samples) break;
    const scalar_t* centre = cloud + current * dim;
    Best best = Best::lowest();
    for (int64_t j = tid; j < n; j += kThreads) {
      const scalar_t d = sqdist(cloud + j * dim, centre, dim);
      const scalar_t old = cloud_dist[j];
      const scalar_t m = old < d ? old : d;
      cloud_dist[j] = m;
      best.merge(Best::make(m, j));
    }
    best = warp_reduce(best);
    if (lane == 0) warp_best[warp] = best;
    __syncthreads();
    if (warp == 0) {
      best = lane < kWarps ? warp_best[lane] : Best::lowest();
      best = warp_reduce(best);
      if (lane == 0) chosen = best.index();
    }
    __syncthreads();
    current = chosen;
  }
}

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
    fps_kernel<scalar_t><<<static_cast<unsigned int>(num_clouds), kThreads, 0, stream>>>(
        xc.data_ptr<scalar_t>(), ptr_c.data_ptr<int64_t>(), out_ptr_c.data_ptr<int64_t>(),
        start_c.data_ptr<int64_t>(), x.size(0), x.size(1), num_out, dist.data_ptr<scalar_t>(),
        out.data_ptr<int64_t>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace
}  // namespace cuda
}  // namespace pointcmt

TORCH_LIBRARY_IMPL(pointcmt, CUDA, m) { m.impl("fps", &pointcmt::cuda::fps_cuda); }
