// Helpers shared by the CPU point kernels (fps, knn, radius).
//
// Exactness contract (see pointcmt_pyg/ops/_reference.py): every distance is
// summed over the coordinates one at a time in ascending order,
//   acc = (a_0 - b_0)^2;  acc = acc + (a_d - b_d)^2  for d = 1 .. D-1,
// each operation rounded in the points' dtype. The loops below vectorise over
// points, never over coordinates, so the compiler keeps that order; no -ffast-math
// and no FMA contraction (the multiversioned clones target AVX2 without FMA).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

// Never fuse a*b+c into one rounding (it would break bit-identity with the
// references even under -march=native).
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace pointcmt {
namespace cpu {

// Hot loops get an AVX2 clone picked at load time, plus the baseline build.
#if !defined(POINTCMT_NO_MV) && defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define POINTCMT_MULTIVERSION __attribute__((target_clones("avx2", "default")))
#else
#define POINTCMT_MULTIVERSION
#endif

// Instruction sets of the hand-vectorised paths (kNN's selection), narrowest
// first.
enum class CpuIsa : int { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };

// The widest of them this CPU runs (x86-64 with GCC or Clang; scalar
// elsewhere), capped by the environment variable POINTCMT_CPU_ISA=scalar,
// avx2 or avx512 when it is set (read on first use; the tests run every path
// through it). The paths give identical results.
inline CpuIsa cpu_isa() {
  static const CpuIsa isa = [] {
    CpuIsa best = CpuIsa::kScalar;
#if !defined(POINTCMT_NO_MV) && defined(__GNUC__) && defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt")) best = CpuIsa::kAvx2;
    if (best == CpuIsa::kAvx2 && __builtin_cpu_supports("avx512f")) best = CpuIsa::kAvx512;
#endif
    const char* cap = std::getenv("POINTCMT_CPU_ISA");
    if (cap != nullptr && *cap != '\0') {
      const std::string name(cap);
      CpuIsa limit;
      if (name == "scalar") {
        limit = CpuIsa::kScalar;
      } else if (name == "avx2") {
        limit = CpuIsa::kAvx2;
      } else if (name == "avx512") {
        limit = CpuIsa::kAvx512;
      } else {
        TORCH_CHECK(false, "pointcmt: the environment variable POINTCMT_CPU_ISA must be scalar, avx2 or avx512, got '",
                    name, "'");
      }
      best = std::min(best, limit);
    }
    return best;
  }();
  return isa;
}

inline void check_points_tensor(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), "pointcmt: '", name, "' must be a CPU tensor");
  TORCH_CHECK(t.dim() == 2, "pointcmt: '", name, "' must have shape (N, D), got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble,
              "pointcmt: '", name, "' must be float32 or float64, got ", t.scalar_type());
}

// Returns the CSR offsets of `ptr` (int64, B+1 entries, non-decreasing, from 0
// to num_rows) as a vector, checking them.
inline std::vector<int64_t> read_ptr(const at::Tensor& ptr, int64_t num_rows, const char* name) {
  TORCH_CHECK(ptr.dim() == 1 && ptr.numel() >= 2, "pointcmt: '", name,
              "' must be a vector of size B + 1 >= 2, got ", ptr.sizes());
  TORCH_CHECK(ptr.scalar_type() == at::kLong, "pointcmt: '", name, "' must be int64, got ",
              ptr.scalar_type());
  auto c = ptr.to(at::kCPU).contiguous();
  const int64_t* p = c.data_ptr<int64_t>();
  std::vector<int64_t> out(p, p + c.numel());
  TORCH_CHECK(out.front() == 0 && out.back() == num_rows, "pointcmt: '", name,
              "' must start at 0 and end at ", num_rows);
  for (size_t i = 1; i < out.size(); ++i)
    TORCH_CHECK(out[i] >= out[i - 1], "pointcmt: '", name, "' must be non-decreasing");
  return out;
}

// Index of the cloud owning row `row`: the b with ptr[b] <= row < ptr[b+1]
// (the last such b when empty clouds share an offset).
inline int64_t cloud_of(const std::vector<int64_t>& ptr, int64_t row) {
  auto it = std::upper_bound(ptr.begin(), ptr.end(), row);
  return static_cast<int64_t>(it - ptr.begin()) - 1;
}

// Copies x (N, D) row-major into xt (D, N): coordinate d of point i at
// xt[d * N + i], so the distance loops read consecutive points.
template <typename scalar_t>
void transpose_points(const scalar_t* x, int64_t n, int64_t dim, scalar_t* xt) {
  at::parallel_for(0, n, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t d = 0; d < dim; ++d) {
      scalar_t* dst = xt + d * n;
      for (int64_t i = begin; i < end; ++i) dst[i] = x[i * dim + d];
    }
  });
}

// out[j] = sum_d (xt[d * stride + j] - q[d])^2 for j in [0, count), summed in
// ascending d. `xt` points at the first point of the block in coordinate 0.
template <typename scalar_t>
POINTCMT_MULTIVERSION void sqdist_block(const scalar_t* __restrict xt, int64_t stride, int64_t dim,
                                        const scalar_t* __restrict q, int64_t count,
                                        scalar_t* __restrict out) {
  if (dim == 3) {
    const scalar_t* x0 = xt;
    const scalar_t* x1 = xt + stride;
    const scalar_t* x2 = xt + 2 * stride;
    const scalar_t q0 = q[0], q1 = q[1], q2 = q[2];
#pragma omp simd
    for (int64_t j = 0; j < count; ++j) {
      scalar_t a = x0[j] - q0;
      scalar_t acc = a * a;
      scalar_t b = x1[j] - q1;
      acc = acc + b * b;
      scalar_t c = x2[j] - q2;
      acc = acc + c * c;
      out[j] = acc;
    }
    return;
  }
  {
    const scalar_t q0 = q[0];
#pragma omp simd
    for (int64_t j = 0; j < count; ++j) {
      scalar_t a = xt[j] - q0;
      out[j] = a * a;
    }
  }
  for (int64_t d = 1; d < dim; ++d) {
    const scalar_t* xd = xt + d * stride;
    const scalar_t qd = q[d];
#pragma omp simd
    for (int64_t j = 0; j < count; ++j) {
      scalar_t a = xd[j] - qd;
      out[j] = out[j] + a * a;
    }
  }
}

// out[j] = sum_d xt[d * stride + j] * q[d], summed in ascending d.
template <typename scalar_t>
POINTCMT_MULTIVERSION void dot_block(const scalar_t* __restrict xt, int64_t stride, int64_t dim,
                                     const scalar_t* __restrict q, int64_t count,
                                     scalar_t* __restrict out) {
  {
    const scalar_t q0 = q[0];
#pragma omp simd
    for (int64_t j = 0; j < count; ++j) out[j] = xt[j] * q0;
  }
  for (int64_t d = 1; d < dim; ++d) {
    const scalar_t* xd = xt + d * stride;
    const scalar_t qd = q[d];
#pragma omp simd
    for (int64_t j = 0; j < count; ++j) out[j] = out[j] + xd[j] * qd;
  }
}

// Euclidean norm of every row of x (N, D): sqrt of the squares summed in
// ascending d.
template <typename scalar_t>
void row_norms(const scalar_t* x, int64_t n, int64_t dim, scalar_t* out) {
  at::parallel_for(0, n, 2048, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const scalar_t* row = x + i * dim;
      scalar_t acc = row[0] * row[0];
      for (int64_t d = 1; d < dim; ++d) acc = acc + row[d] * row[d];
      out[i] = std::sqrt(acc);
    }
  });
}

}  // namespace cpu
}  // namespace pointcmt
