// Max over gathered rows, CUDA device code (torch-free; see device.cuh): one
// thread per (centre m, channel c) scans the K slots of m in ascending order
// and reads values[slots[m, k], c], so the row kept comes from the first slot
// reaching the maximum, as on CPU; neighbouring threads read neighbouring
// channels of the same row (coalesced). A NaN wins (the first NaN), as in
// torch.max; a centre without a valid slot (every slot -1) gets 0 and arg -1.
// Slots must be < num_rows (checked by the Python wrapper on this device).
#pragma once

#include <cstdint>

#include "cuda/kernels/device.cuh"

namespace pointcmt {
namespace cuda {
namespace gather_max_kernels {

constexpr int kThreads = 256;

template <typename scalar_t>
__global__ void forward_kernel(const scalar_t* __restrict__ values, const int64_t* __restrict__ slots,
                               int64_t num_centres, int64_t num_slots, int64_t channels,
                               scalar_t* __restrict__ out, int64_t* __restrict__ arg) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= num_centres * channels) return;
  const int64_t m = i / channels, c = i - m * channels;
  const int64_t* row_slots = slots + m * num_slots;
  scalar_t best = scalar_t(0);
  int64_t best_row = -1;
  for (int64_t k = 0; k < num_slots; ++k) {
    const int64_t j = row_slots[k];
    if (j < 0) continue;
    const scalar_t v = values[j * channels + c];
    if (best_row < 0 || v > best || (v != v && best == best)) {
      best = v;
      best_row = j;
    }
  }
  out[i] = best;
  arg[i] = best_row;
}

// values: (num_rows, channels) contiguous; slots: (num_centres, num_slots)
// int64 in [-1, num_rows); out, arg: (num_centres, channels).
template <typename scalar_t>
void launch_forward(const scalar_t* values, const int64_t* slots, int64_t num_centres, int64_t num_slots,
                    int64_t channels, scalar_t* out, int64_t* arg, cudaStream_t stream) {
  const int64_t n = num_centres * channels;
  if (n <= 0) return;
  POINTCMT_LAUNCH(blocks_for(n, kThreads), kThreads, stream, forward_kernel<scalar_t>)(
      values, slots, num_centres, num_slots, channels, out, arg);
}

}  // namespace gather_max_kernels
}  // namespace cuda
}  // namespace pointcmt
