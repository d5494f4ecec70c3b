// Radius search, CUDA device code (torch-free; see device.cuh): one thread per
// query, brute force over the points of its cloud in ascending index order,
// stopping at max_num neighbours, so the kept neighbours are the lowest-index
// ones, exactly as on CPU.
#pragma once

#include <cstdint>

#include "cuda/kernels/device.cuh"

namespace pointcmt {
namespace cuda {
namespace radius_kernels {

constexpr int kThreads = 128;

template <typename scalar_t>
__global__ void radius_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ y,
                              const int64_t* __restrict__ ptr_x, const int64_t* __restrict__ ptr_y,
                              int64_t num_clouds, int64_t num_points, int64_t num_queries, int64_t dim,
                              scalar_t r2, int64_t max_num, int64_t* __restrict__ out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= num_queries) return;
  const int64_t b = cloud_of(ptr_y, num_clouds, i);
  const int64_t first = ptr_x[b], last = ptr_x[b + 1];
  if (first < 0 || last > num_points) return;
  const scalar_t* q = y + i * dim;
  int64_t* row = out + i * max_num;
  int64_t found = 0;
  for (int64_t j = first; j < last && found < max_num; ++j) {
    if (sqdist(x + j * dim, q, dim) < r2) row[found++] = j;
  }
}

// The launch. x: (num_points, dim); y: (num_queries, dim); ptr_x, ptr_y:
// (num_clouds + 1); out: (num_queries, max_num), pre-filled with -1. r2 is r * r
// rounded once to the points' dtype.
template <typename scalar_t>
void launch(const scalar_t* x, const scalar_t* y, const int64_t* ptr_x, const int64_t* ptr_y,
            int64_t num_clouds, int64_t num_points, int64_t num_queries, int64_t dim, scalar_t r2,
            int64_t max_num, int64_t* out, cudaStream_t stream) {
  if (num_queries <= 0 || num_points <= 0) return;
  POINTCMT_LAUNCH(blocks_for(num_queries, kThreads), kThreads, stream, radius_kernel<scalar_t>)(
      x, y, ptr_x, ptr_y, num_clouds, num_points, num_queries, dim, r2, max_num, out);
}

}  // namespace radius_kernels
}  // namespace cuda
}  // namespace pointcmt
