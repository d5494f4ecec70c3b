// Radius search, CPU: queries in parallel (at::parallel_for), brute force
// within each cloud in ascending index order over a struct-of-arrays copy of
// x, vectorised per block of points, stopping as soon as max_num_neighbors
// points are found (so the kept neighbours are the lowest-index ones).
#include <torch/library.h>

#include "cpu/common.h"

namespace pointcmt {
namespace cpu {
namespace {

constexpr int64_t kBlock = 64;

template <typename scalar_t>
void radius_queries(const scalar_t* xt, int64_t num_points, const scalar_t* y, int64_t num_queries,
                    int64_t dim, const std::vector<int64_t>& ptr_x, const std::vector<int64_t>& ptr_y,
                    scalar_t r2, int64_t max_num, int64_t* out) {
  at::parallel_for(0, num_queries, 16, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> tmp(kBlock);
    int64_t b = cloud_of(ptr_y, begin);
    for (int64_t i = begin; i < end; ++i) {
      while (i >= ptr_y[b + 1]) ++b;
      const int64_t first = ptr_x[b], n = ptr_x[b + 1] - ptr_x[b];
      const scalar_t* q = y + i * dim;
      int64_t* row = out + i * max_num;
      int64_t found = 0;
      for (int64_t j0 = 0; j0 < n && found < max_num; j0 += kBlock) {
        const int64_t count = std::min(kBlock, n - j0);
        sqdist_block(xt + first + j0, num_points, dim, q, count, tmp.data());
        for (int64_t j = 0; j < count; ++j) {
          if (tmp[j] < r2) {
            row[found++] = first + j0 + j;
            if (found == max_num) break;
          }
        }
      }
    }
  });
}

at::Tensor radius_cpu(const at::Tensor& x, const at::Tensor& y, const at::Tensor& ptr_x,
                      const at::Tensor& ptr_y, double r, int64_t max_num_neighbors) {
  check_points_tensor(x, "x");
  check_points_tensor(y, "y");
  TORCH_CHECK(x.scalar_type() == y.scalar_type(), "pointcmt::radius: 'x' and 'y' must have the same dtype");
  TORCH_CHECK(x.size(1) == y.size(1) && x.size(1) >= 1,
              "pointcmt::radius: 'x' and 'y' must have the same number of coordinates D >= 1");
  TORCH_CHECK(r > 0, "pointcmt::radius: 'r' must be positive, got ", r);
  TORCH_CHECK(max_num_neighbors >= 1, "pointcmt::radius: 'max_num_neighbors' must be >= 1, got ",
              max_num_neighbors);
  const int64_t num_points = x.size(0), num_queries = y.size(0), dim = x.size(1);
  const auto px = read_ptr(ptr_x, num_points, "ptr_x");
  const auto py = read_ptr(ptr_y, num_queries, "ptr_y");
  TORCH_CHECK(px.size() == py.size(), "pointcmt::radius: 'ptr_x' and 'ptr_y' must describe the same clouds");

  auto out = at::full({num_queries, max_num_neighbors}, -1, y.options().dtype(at::kLong));
  if (num_queries == 0 || num_points == 0) return out;
  auto xc = x.contiguous(), yc = y.contiguous();
  auto xt = at::empty({dim, num_points}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "pointcmt_radius_cpu", [&] {
    // r * r in double, rounded once to the points' dtype (as the reference does).
    const scalar_t r2 = static_cast<scalar_t>(r * r);
    transpose_points(xc.data_ptr<scalar_t>(), num_points, dim, xt.data_ptr<scalar_t>());
    radius_queries(xt.data_ptr<scalar_t>(), num_points, yc.data_ptr<scalar_t>(), num_queries, dim, px, py,
                   r2, max_num_neighbors, out.data_ptr<int64_t>());
  });
  return out;
}

}  // namespace
}  // namespace cpu
}  // namespace pointcmt

TORCH_LIBRARY_IMPL(pointcmt, CPU, m) { m.impl("radius", &pointcmt::cpu::radius_cpu); }
