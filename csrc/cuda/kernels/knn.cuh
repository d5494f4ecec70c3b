// k nearest neighbours, CUDA device code (torch-free; see device.cuh): one
// thread per query, exact brute force over the points of its cloud in
// ascending index order, keeping a sorted top-k list (in registers/local memory
// for k <= 32, in the output row otherwise). Only a strictly smaller distance
// displaces an entry, so the list is sorted by (distance, index), ties to the
// lower index, exactly as on CPU.
#pragma once

#include <cstdint>

#include "cuda/kernels/device.cuh"

namespace pointcmt {
namespace cuda {
namespace knn_kernels {

constexpr int kThreads = 128;

// `top_dist` / `top_idx`: the list (stride 1), either local arrays or the
// query's output row.
template <typename scalar_t, int KMAX>
__global__ void knn_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ y,
                           const int64_t* __restrict__ ptr_x, const int64_t* __restrict__ ptr_y,
                           int64_t num_clouds, int64_t num_points, int64_t num_queries, int64_t dim, int64_t k,
                           const scalar_t* __restrict__ norm_x, const scalar_t* __restrict__ norm_y,
                           scalar_t* __restrict__ out_dist, int64_t* __restrict__ out_idx) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= num_queries) return;
  const int64_t b = cloud_of(ptr_y, num_clouds, i);
  const int64_t first = ptr_x[b], last = ptr_x[b + 1];
  if (first < 0 || last > num_points || first >= last) return;

  scalar_t local_dist[KMAX > 0 ? KMAX : 1];
  int64_t local_idx[KMAX > 0 ? KMAX : 1];
  scalar_t* top_dist = KMAX > 0 ? local_dist : out_dist + i * k;
  int64_t* top_idx = KMAX > 0 ? local_idx : out_idx + i * k;

  const scalar_t* q = y + i * dim;
  const bool cosine = norm_x != nullptr;
  const scalar_t norm_q = cosine ? norm_y[i] : scalar_t(0);
  int64_t filled = 0;
  for (int64_t j = first; j < last; ++j) {
    scalar_t d;
    if (cosine) {
      const scalar_t denom = mul_rn(norm_q, norm_x[j]);
      d = denom > scalar_t(0) ? sub_rn(scalar_t(1), div_rn(dot(x + j * dim, q, dim), denom)) : scalar_t(1);
    } else {
      d = sqdist(x + j * dim, q, dim);
    }
    int64_t pos;
    if (filled < k) {
      pos = filled++;
    } else if (d < top_dist[k - 1]) {
      pos = k - 1;
    } else {
      continue;
    }
    while (pos > 0 && top_dist[pos - 1] > d) {
      top_dist[pos] = top_dist[pos - 1];
      top_idx[pos] = top_idx[pos - 1];
      --pos;
    }
    top_dist[pos] = d;
    top_idx[pos] = j;
  }
  if (KMAX > 0) {
    for (int64_t s = 0; s < filled; ++s) {
      out_dist[i * k + s] = top_dist[s];
      out_idx[i * k + s] = top_idx[s];
    }
  }
}

// The launch. x: (num_points, dim); y: (num_queries, dim); ptr_x, ptr_y:
// (num_clouds + 1); out_dist/out_idx: (num_queries, k), pre-filled with inf / -1
// (slots beyond a cloud's size stay so). cosine: 1 - <x, y> / (|x| |y|), the
// norms computed here into norm_x (num_points) and norm_y (num_queries).
template <typename scalar_t>
void launch(const scalar_t* x, const scalar_t* y, const int64_t* ptr_x, const int64_t* ptr_y,
            int64_t num_clouds, int64_t num_points, int64_t num_queries, int64_t dim, int64_t k,
            bool cosine, scalar_t* norm_x, scalar_t* norm_y, scalar_t* out_dist, int64_t* out_idx,
            cudaStream_t stream) {
  if (num_queries <= 0 || num_points <= 0) return;
  if (cosine) {
    norms::launch_row_norms(x, num_points, dim, norm_x, stream);
    norms::launch_row_norms(y, num_queries, dim, norm_y, stream);
  } else {
    norm_x = norm_y = nullptr;
  }
  const unsigned int grid = blocks_for(num_queries, kThreads);
  if (k <= 8) {
    POINTCMT_LAUNCH(grid, kThreads, stream, knn_kernel<scalar_t, 8>)(
        x, y, ptr_x, ptr_y, num_clouds, num_points, num_queries, dim, k, norm_x, norm_y, out_dist, out_idx);
  } else if (k <= 32) {
    POINTCMT_LAUNCH(grid, kThreads, stream, knn_kernel<scalar_t, 32>)(
        x, y, ptr_x, ptr_y, num_clouds, num_points, num_queries, dim, k, norm_x, norm_y, out_dist, out_idx);
  } else {
    POINTCMT_LAUNCH(grid, kThreads, stream, knn_kernel<scalar_t, 0>)(
        x, y, ptr_x, ptr_y, num_clouds, num_points, num_queries, dim, k, norm_x, norm_y, out_dist, out_idx);
  }
}

}  // namespace knn_kernels
}  // namespace cuda
}  // namespace pointcmt
