// Device helpers shared by the CUDA point kernels, free of ATen and torch so
// that the same code is compiled by nvcc for the extension and by a plain C++
// compiler against the CPU emulator of tests/cuda_emu (which defines the CUDA
// keywords, built-in variables and intrinsics used here).
//
// Exactness contract (see pointcmt_pyg/ops/_reference.py): distances are
// summed over the coordinates one at a time in ascending order, each operation
// rounded in the points' dtype. nvcc fuses a*b+c into an FMA by default, which
// would change the last bit, so every operation below goes through the
// explicitly rounded intrinsics (__fmul_rn & co. are never contracted; the
// emulator is compiled with -ffp-contract=off for the same reason).
#pragma once

#include <cstdint>

// A kernel launch, written once for both compilers:
// POINTCMT_LAUNCH(grid, block, stream, kernel)(args...); the kernel comes last
// so that template arguments with commas need no parentheses.
#if defined(POINTCMT_CUDA_EMU)
#define POINTCMT_LAUNCH(grid, block, stream, ...) ::cuda_emu::launcher((grid), (block), &__VA_ARGS__)
#else
#define POINTCMT_LAUNCH(grid, block, stream, ...) __VA_ARGS__<<<(grid), (block), 0, (stream)>>>
#endif

namespace pointcmt {
namespace cuda {

constexpr int kWarp = 32;

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

inline unsigned int blocks_for(int64_t n, int threads) {
  return static_cast<unsigned int>((n + threads - 1) / threads);
}

namespace norms {

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

constexpr int kThreads = 256;

// out[i] = |x_i| for the n rows of x (n x dim, row-major).
template <typename scalar_t>
void launch_row_norms(const scalar_t* x, int64_t n, int64_t dim, scalar_t* out, cudaStream_t stream) {
  if (n <= 0) return;
  POINTCMT_LAUNCH(blocks_for(n, kThreads), kThreads, stream, row_norms_kernel<scalar_t>)(x, n, dim, out);
}

}  // namespace norms
}  // namespace cuda
}  // namespace pointcmt
