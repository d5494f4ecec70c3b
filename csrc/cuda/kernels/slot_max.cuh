// Max over the slots of a padded block, CUDA device code (torch-free; see
// device.cuh). Forward: one thread per (centre m, channel c), scanning the W
// slots in ascending order, so the slot kept is the first reaching the
// maximum, as on CPU; neighbouring threads read neighbouring channels
// (coalesced). A NaN wins (the first NaN), as in torch.max. Backward: one
// thread per element of the (M, W, C) gradient.
#pragma once

#include <cstdint>

#include "cuda/kernels/device.cuh"

namespace pointcmt {
namespace cuda {
namespace slot_max_kernels {

constexpr int kThreads = 256;

template <typename scalar_t>
__global__ void forward_kernel(const scalar_t* __restrict__ block, int64_t num_centres, int64_t width,
                               int64_t channels, scalar_t* __restrict__ values, int64_t* __restrict__ slot) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= num_centres * channels) return;
  const int64_t m = i / channels, c = i - m * channels;
  const scalar_t* col = block + m * width * channels + c;
  scalar_t best = col[0];
  int64_t best_w = 0;
  for (int64_t w = 1; w < width; ++w) {
    const scalar_t v = col[w * channels];
    if (v > best || (v != v && best == best)) {
      best = v;
      best_w = w;
    }
  }
  values[i] = best;
  slot[i] = best_w;
}

template <typename scalar_t>
__global__ void backward_kernel(const scalar_t* __restrict__ grad, const int64_t* __restrict__ slot,
                                int64_t num_centres, int64_t width, int64_t channels, scalar_t* __restrict__ out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= num_centres * width * channels) return;
  const int64_t c = i % channels;
  const int64_t mw = i / channels;
  const int64_t m = mw / width, w = mw - m * width;
  const int64_t j = m * channels + c;
  out[i] = slot[j] == w ? grad[j] : scalar_t(0);
}

// block: (num_centres, width, channels) contiguous, width >= 1; values, slot:
// (num_centres, channels).
template <typename scalar_t>
void launch_forward(const scalar_t* block, int64_t num_centres, int64_t width, int64_t channels,
                    scalar_t* values, int64_t* slot, cudaStream_t stream) {
  const int64_t n = num_centres * channels;
  if (n <= 0 || width <= 0) return;
  POINTCMT_LAUNCH(blocks_for(n, kThreads), kThreads, stream, forward_kernel<scalar_t>)(
      block, num_centres, width, channels, values, slot);
}

// grad, slot: (num_centres, channels); out: (num_centres, width, channels).
template <typename scalar_t>
void launch_backward(const scalar_t* grad, const int64_t* slot, int64_t num_centres, int64_t width,
                     int64_t channels, scalar_t* out, cudaStream_t stream) {
  const int64_t n = num_centres * width * channels;
  if (n <= 0) return;
  POINTCMT_LAUNCH(blocks_for(n, kThreads), kThreads, stream, backward_kernel<scalar_t>)(
      grad, slot, num_centres, width, channels, out);
}

}  // namespace slot_max_kernels
}  // namespace cuda
}  // namespace pointcmt
