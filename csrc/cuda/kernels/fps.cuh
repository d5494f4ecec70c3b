// Farthest point sampling, CUDA device code (torch-free; see device.cuh): one
// thread block per cloud. Each step every thread updates the running distance
// of its points to the newest sample and keeps its best (distance, index); the
// block then reduces them with warp shuffles. For float32 the pair is one
// 64-bit key (distance bits above, ~index below: non-negative floats order like
// their bit patterns), so a max reduction picks the largest distance and, among
// equal ones, the lowest index. float64 reduces (distance, index) pairs with
// the same order.
#pragma once

#include <cstdint>
#include <limits>

#include "cuda/kernels/device.cuh"

namespace pointcmt {
namespace cuda {
namespace fps_kernels {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / kWarp;

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
  for (int offset = kWarp / 2; offset > 0; offset /= 2) best.merge(best.shuffle_down(offset));
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

  const int tid = threadIdx.x, lane = tid % kWarp, warp = tid / kWarp;
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

// The launch: one block of kThreads per cloud. `dist` is scratch of num_points.
// x: (num_points, dim); ptr, out_ptr: (num_clouds + 1); start: (num_clouds); out: (num_out).
template <typename scalar_t>
void launch(const scalar_t* x, const int64_t* ptr, const int64_t* out_ptr, const int64_t* start,
            int64_t num_clouds, int64_t num_points, int64_t dim, int64_t num_out, scalar_t* dist,
            int64_t* out, cudaStream_t stream) {
  if (num_clouds <= 0 || num_out <= 0 || num_points <= 0) return;
  POINTCMT_LAUNCH(static_cast<unsigned int>(num_clouds), kThreads, stream, fps_kernel<scalar_t>)(
      x, ptr, out_ptr, start, num_points, dim, num_out, dist, out);
}

}  // namespace fps_kernels
}  // namespace cuda
}  // namespace pointcmt
