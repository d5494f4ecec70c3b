// k nearest neighbours, CPU: queries in parallel (at::parallel_for), exact
// brute force within each cloud. Distances to a block of points are computed
// in one vectorised pass over a struct-of-arrays copy of x; a block whose
// minimum cannot enter the current top k is skipped, the others are merged by
// insertion into a sorted list. Points arrive in ascending index order and
// only a strictly smaller distance displaces an entry, so the result is sorted
// by (distance, index). Buffers are allocated once per thread.
#include <torch/library.h>

#include <limits>
#include <tuple>

#include "cpu/common.h"

namespace pointcmt {
namespace cpu {
namespace {

constexpr int64_t kBlock = 256;
constexpr int64_t kChunk = 16;

template <typename scalar_t>
POINTCMT_MULTIVERSION scalar_t block_min(const scalar_t* __restrict v, int64_t count) {
  scalar_t m = std::numeric_limits<scalar_t>::infinity();
#pragma omp simd reduction(min : m)
  for (int64_t j = 0; j < count; ++j) m = v[j] < m ? v[j] : m;
  return m;
}

// tmp[j] = 1 - dot[j] / (|q| |x_j|), or 1 when either norm is zero.
template <typename scalar_t>
POINTCMT_MULTIVERSION void cosine_from_dot(scalar_t* __restrict tmp, const scalar_t* __restrict norm_x,
                                           scalar_t norm_q, int64_t count) {
#pragma omp simd
  for (int64_t j = 0; j < count; ++j) {
    const scalar_t denom = norm_q * norm_x[j];
    const scalar_t safe = denom > scalar_t(0) ? denom : scalar_t(1);
    const scalar_t value = scalar_t(1) - tmp[j] / safe;
    tmp[j] = denom > scalar_t(0) ? value : scalar_t(1);
  }
}

template <typename scalar_t>
void knn_queries(const scalar_t* xt, int64_t num_points, const scalar_t* y, int64_t num_queries,
                 int64_t dim, const std::vector<int64_t>& ptr_x, const std::vector<int64_t>& ptr_y,
                 int64_t k, const scalar_t* norm_x, const scalar_t* norm_y, scalar_t* out_dist,
                 int64_t* out_idx) {
  at::parallel_for(0, num_queries, 16, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> tmp(kBlock), top_dist(k);
    std::vector<int64_t> top_idx(k);
    int64_t b = cloud_of(ptr_y, begin);
    for (int64_t i = begin; i < end; ++i) {
      while (i >= ptr_y[b + 1]) ++b;
      const int64_t first = ptr_x[b], n = ptr_x[b + 1] - ptr_x[b];
      if (n == 0) continue;
      const scalar_t* q = y + i * dim;
      int64_t filled = 0;
      for (int64_t j0 = 0; j0 < n; j0 += kBlock) {
        const int64_t count = std::min(kBlock, n - j0);
        const scalar_t* block = xt + first + j0;
        if (norm_x != nullptr) {
          dot_block(block, num_points, dim, q, count, tmp.data());
          cosine_from_dot(tmp.data(), norm_x + first + j0, norm_y[i], count);
        } else {
          sqdist_block(block, num_points, dim, q, count, tmp.data());
        }
        // Points of the block in chunks of kChunk: a chunk whose minimum cannot
        // displace the current k-th neighbour is skipped after one vectorised pass.
        for (int64_t c0 = 0; c0 < count; c0 += kChunk) {
          const int64_t chunk = std::min(kChunk, count - c0);
          if (filled == k && !(block_min(tmp.data() + c0, chunk) < top_dist[k - 1])) continue;
          for (int64_t j = c0; j < c0 + chunk; ++j) {
            const scalar_t d = tmp[j];
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
            top_idx[pos] = first + j0 + j;
          }
        }
      }
      std::copy(top_dist.begin(), top_dist.begin() + filled, out_dist + i * k);
      std::copy(top_idx.begin(), top_idx.begin() + filled, out_idx + i * k);
    }
  });
}

std::tuple<at::Tensor, at::Tensor> knn_cpu(const at::Tensor& x, const at::Tensor& y,
                                           const at::Tensor& ptr_x, const at::Tensor& ptr_y, int64_t k,
                                           bool cosine) {
  check_points_tensor(x, "x");
  check_points_tensor(y, "y");
  TORCH_CHECK(x.scalar_type() == y.scalar_type(), "pointcmt::knn: 'x' and 'y' must have the same dtype");
  TORCH_CHECK(x.size(1) == y.size(1) && x.size(1) >= 1,
              "pointcmt::knn: 'x' and 'y' must have the same number of coordinates D >= 1");
  TORCH_CHECK(k >= 1, "pointcmt::knn: 'k' must be >= 1, got ", k);
  const int64_t num_points = x.size(0), num_queries = y.size(0), dim = x.size(1);
  const auto px = read_ptr(ptr_x, num_points, "ptr_x");
  const auto py = read_ptr(ptr_y, num_queries, "ptr_y");
  TORCH_CHECK(px.size() == py.size(), "pointcmt::knn: 'ptr_x' and 'ptr_y' must describe the same clouds");

  auto dist = at::full({num_queries, k}, std::numeric_limits<double>::infinity(), y.options());
  auto idx = at::full({num_queries, k}, -1, y.options().dtype(at::kLong));
  if (num_queries == 0 || num_points == 0) return {dist, idx};
  auto xc = x.contiguous(), yc = y.contiguous();
  auto xt = at::empty({dim, num_points}, x.options());
  at::Tensor norm_x, norm_y;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "pointcmt_knn_cpu", [&] {
    transpose_points(xc.data_ptr<scalar_t>(), num_points, dim, xt.data_ptr<scalar_t>());
    const scalar_t* nx = nullptr;
    const scalar_t* ny = nullptr;
    if (cosine) {
      norm_x = at::empty({num_points}, x.options());
      norm_y = at::empty({num_queries}, y.options());
      row_norms(xc.data_ptr<scalar_t>(), num_points, dim, norm_x.data_ptr<scalar_t>());
      row_norms(yc.data_ptr<scalar_t>(), num_queries, dim, norm_y.data_ptr<scalar_t>());
      nx = norm_x.data_ptr<scalar_t>();
      ny = norm_y.data_ptr<scalar_t>();
    }
    knn_queries(xt.data_ptr<scalar_t>(), num_points, yc.data_ptr<scalar_t>(), num_queries, dim, px, py, k,
                nx, ny, dist.data_ptr<scalar_t>(), idx.data_ptr<int64_t>());
  });
  return {dist, idx};
}

}  // namespace
}  // namespace cpu
}  // namespace pointcmt

TORCH_LIBRARY_IMPL(pointcmt, CPU, m) { m.impl("knn", &pointcmt::cpu::knn_cpu); }
