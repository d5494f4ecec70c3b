// Max over the rows of each segment of a CSR layout, CUDA device code
// (torch-free; see device.cuh). Forward: one thread per (segment m, channel
// c), scanning the rows ptr[m] .. ptr[m + 1] - 1 in ascending order, so the
// row kept is the first reaching the maximum, as on CPU; neighbouring threads
// read neighbouring channels (coalesced). A NaN wins (the first NaN), as in
// torch.max; an empty segment gets value 0 and arg -1. Backward: one thread per
// (segment, channel) writing that channel of every row of its segment (every
// element of the (E, C) gradient once, no zero fill).
#pragma once

#include <cstdint>

#include "cuda/kernels/device.cuh"

namespace pointcmt {
namespace cuda {
namespace segment_max_kernels {

constexpr int kThreads = 256;

template <typename scalar_t>
__global__ void forward_kernel(const scalar_t* __restrict__ src, const int64_t* __restrict__ ptr,
                               int64_t num_segments, int64_t channels, scalar_t* __restrict__ values,
                               int64_t* __restrict__ arg) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= num_segments * channels) return;
  const int64_t m = i / channels, c = i - m * channels;
  const int64_t first = ptr[m], end = ptr[m + 1];
  if (first >= end) {
    values[i] = scalar_t(0);
    arg[i] = -1;
    return;
  }
  scalar_t best = src[first * channels + c];
  int64_t best_row = first;
  for (int64_t r = first + 1; r < end; ++r) {
    const scalar_t v = src[r * channels + c];
    if (v > best || (v != v && best == best)) {
      best = v;
      best_row = r;
    }
  }
  values[i] = best;
  arg[i] = best_row;
}

template <typename scalar_t>
__global__ void backward_kernel(const scalar_t* __restrict__ grad, const int64_t* __restrict__ arg,
                                const int64_t* __restrict__ ptr, int64_t num_segments, int64_t channels,
                                scalar_t* __restrict__ out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= num_segments * channels) return;
  const int64_t m = i / channels, c = i - m * channels;
  const int64_t winner = arg[i];
  const scalar_t g = grad[i];
  for (int64_t r = ptr[m]; r < ptr[m + 1]; ++r) out[r * channels + c] = r == winner ? g : scalar_t(0);
}

// src: (ptr[num_segments], channels) contiguous; ptr: num_segments + 1
// non-decreasing offsets from 0; values, arg: (num_segments, channels).
template <typename scalar_t>
void launch_forward(const scalar_t* src, const int64_t* ptr, int64_t num_segments, int64_t channels,
                    scalar_t* values, int64_t* arg, cudaStream_t stream) {
  const int64_t n = num_segments * channels;
  if (n <= 0) return;
  POINTCMT_LAUNCH(blocks_for(n, kThreads), kThreads, stream, forward_kernel<scalar_t>)(
      src, ptr, num_segments, channels, values, arg);
}

// grad, arg: (num_segments, channels); out: (ptr[num_segments], channels).
template <typename scalar_t>
void launch_backward(const scalar_t* grad, const int64_t* arg, const int64_t* ptr, int64_t num_segments,
                     int64_t channels, scalar_t* out, cudaStream_t stream) {
  const int64_t n = num_segments * channels;
  if (n <= 0) return;
  POINTCMT_LAUNCH(blocks_for(n, kThreads), kThreads, stream, backward_kernel<scalar_t>)(
      grad, arg, ptr, num_segments, channels, out);
}

}  // namespace segment_max_kernels
}  // namespace cuda
}  // namespace pointcmt
