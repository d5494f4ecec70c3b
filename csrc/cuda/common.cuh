// Helpers shared by the CUDA point kernels (fps, knn, radius).
//
// Exactness contract (see pointcmt_pyg/ops/_reference.py): distances are
// summed over the coordinates one at a time in ascending order, each operation
// rounded in the points' dtype. nvcc fuses a*b+c into an FMA by default, which
// would change the last bit, so every operation below goes through the
// explicitly rounded intrinsics (__fmul_rn & co. are never contracted).
#pragma once

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace pointcmt {
namespace cuda {

__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ float sub_rn(float a, float b) { return __fsub_rn(a, b); }
__device__ __forceinline__ double sub_rn(double a, double b) { return __dsub_rn(a, b); }
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float div_rn(float a, float b) { return __fdiv_rn(a, b); }
__device__ __forceinline__ double div_rn(double a, double b) { return __ddiv_rn(a, b); }
__device__ __forceinline__ float sqrt_rn(float a) { return __fsqrt_rn(a); }
__device__ __forceinline__ double sqrt_rn(double a) { return __dsqrt_rn(a); }

// |p - q|^2 for two points of `dim` coordinates, summed in ascending order.
template <typename scalar_t>
__device__ __forceinline__ scalar_t sqdist(const scalar_t* __restrict__ p, const scalar_t* __restrict__ q,
                                           int64_t dim) {
  scalar_t diff = sub_rn(p[0], q[0]);
  scalar_t acc = mul_rn(diff, diff);
  for (int64_t d = 1; d < dim; ++d) {
    diff = sub_rn(p[d], q[d]);
    acc = add_rn(acc, mul_rn(diff, diff));
  }
  return acc;
}

// <p, q> summed in ascending order, each product as x_d * q_d.
template <typename scalar_t>
__device__ __forceinline__ scalar_t dot(const scalar_t* __restrict__ p, const scalar_t* __restrict__ q,
                                        int64_t dim) {
  scalar_t acc = mul_rn(p[0], q[0]);
  for (int64_t d = 1; d < dim; ++d) acc = add_rn(acc, mul_rn(p[d], q[d]));
  return acc;
}

// Cloud owning row `row` of a packed tensor: the last b with ptr[b] <= row.
__device__ __forceinline__ int64_t cloud_of(const int64_t* __restrict__ ptr, int64_t num_clouds, int64_t row) {
  int64_t lo = 0, hi = num_clouds;  // answer in [lo, hi)
  while (hi - lo > 1) {
    const int64_t mid = (lo + hi) / 2;
    if (ptr[mid] <= row) lo = mid; else hi = mid;
  }
  return lo;
}

// Euclidean norm of every row (sqrt of the squares summed in ascending order).
template <typename scalar_t>
__global__ void row_norms_kernel(const scalar_t* __restrict__ x, int64_t n, int64_t dim,
                                 scalar_t* __restrict__ out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const scalar_t* row = x + i * dim;
  scalar_t acc = mul_rn(row[0], row[0]);
  for (int64_t d = 1; d < dim; ++d) acc = add_rn(acc, mul_rn(row[d], row[d]));
  out[i] = sqrt_rn(acc);
}

inline void check_cuda_points(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda(), "pointcmt: '", name, "' must be a CUDA tensor");
  TORCH_CHECK(t.dim() == 2, "pointcmt: '", name, "' must have shape (N, D), got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble,
              "pointcmt: '", name, "' must be float32 or float64, got ", t.scalar_type());
}

inline void check_cuda_index(const at::Tensor& t, const at::Tensor& like, const char* name) {
  TORCH_CHECK(t.device() == like.device(), "pointcmt: '", name, "' must be on ", like.device());
  TORCH_CHECK(t.dim() == 1 && t.scalar_type() == at::kLong, "pointcmt: '", name,
              "' must be an int64 vector");
}

inline unsigned int blocks_for(int64_t n, int threads) {
  return static_cast<unsigned int>((n + threads - 1) / threads);
}

}  // namespace cuda
}  // namespace pointcmt
