// Radius search, CPU: queries in parallel (a Team, cpu/grid.h), exact; per
// query the first max_num_neighbors points in range in ascending index order.
//
// Brute force (any D): over a struct-of-arrays copy of x in ascending index
// order, vectorised per block of points, stopping as soon as
// max_num_neighbors points are found.
//
// Grid (D <= 3): the points of each cloud are put in a uniform grid
// (cpu/grid.h) whose cells are at least r long on every axis (with a margin
// for rounding), so every point in range of a query lies in the 3^D cells
// around the query's cell. The queries of one cell share that candidate block
// (copied once, struct of arrays) and test all of it in one vectorised pass
// with the brute force's distance; the hits are put back in index order with
// a bitmap over the cloud (or a sort for very large clouds) and truncated.
// Each query writes its whole output row (its neighbours, then -1), so the
// output is not filled beforehand.
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "cpu/common.h"
#include "cpu/grid.h"

namespace pointcmt {
namespace cpu {
namespace {

constexpr int64_t kBlock = 64;
constexpr int64_t kGrain = 64;              // queries per parallel chunk
constexpr int64_t kGridMinPoints = 64;      // below this many points in all, brute force
constexpr int64_t kBitmapMaxPoints = 8192;  // larger clouds sort their hits instead

template <typename scalar_t>
void radius_queries(const scalar_t* xt, int64_t num_points, const scalar_t* y, int64_t num_queries,
                    int64_t dim, const std::vector<int64_t>& ptr_x, const std::vector<int64_t>& ptr_y,
                    scalar_t r2, int64_t max_num, int64_t* out) {
  parallel_chunks(num_queries, kGrain, [&](int64_t begin, int64_t end) {
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
      std::fill(row + found, row + max_num, int64_t(-1));
    }
  });
}

// Bit j of the result: d[j] < r2, for j < count <= 64.
template <typename scalar_t>
POINTCMT_MULTIVERSION uint64_t below_mask(const scalar_t* __restrict d, int64_t count, scalar_t r2) {
  uint64_t mask = 0;
#pragma omp simd reduction(| : mask)
  for (int64_t j = 0; j < count; ++j) mask |= static_cast<uint64_t>(d[j] < r2) << j;
  return mask;
}

template <int DIM, typename scalar_t>
void radius_grid_queries(Team& team, const PointGrid<scalar_t>& grid, const scalar_t* y, int64_t num_queries,
                         const std::vector<int64_t>& ptr_y, scalar_t r2, int64_t max_num, int64_t* out) {
  constexpr int64_t dim = DIM;
  const scalar_t* coords = grid.coords.data();
  const int64_t* rows = grid.row.data();
  const std::vector<int64_t> order = grid.query_order(team, y, ptr_y);
  team.run(num_queries, kGrain, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> cand, tmp;
    std::vector<int64_t> cand_row, hits;
    std::vector<uint64_t> bitmap;
    int64_t count = 0, cap = 0, group_cloud = -1, group_cell = -1;
    int64_t b = cloud_of(ptr_y, begin);
    for (int64_t slot = begin; slot < end; ++slot) {
      while (slot >= ptr_y[b + 1]) ++b;  // `order` keeps the queries of a cloud together
      const int64_t i = order[slot];
      const CloudGrid& c = grid.clouds[b];
      int64_t* dst = out + i * max_num;
      if (c.n == 0) {
        std::fill(dst, dst + max_num, int64_t(-1));
        continue;
      }
      const scalar_t* q = y + i * dim;
      int64_t cq[3] = {0, 0, 0};
      for (int a = 0; a < dim; ++a) cq[a] = c.coord(a, static_cast<double>(q[a]));
      const int64_t cell = (cq[2] * c.g[1] + cq[1]) * c.g[0] + cq[0];
      if (b != group_cloud || cell != group_cell) {
        // Gather the block of 3^D cells around `cell` (rows along x are runs).
        group_cloud = b;
        group_cell = cell;
        int64_t lo[3], hi[3];
        for (int a = 0; a < 3; ++a) {
          lo[a] = std::max<int64_t>(0, cq[a] - 1);
          hi[a] = std::min<int64_t>(c.g[a] - 1, cq[a] + 1);
        }
        count = 0;
        for (int64_t z = lo[2]; z <= hi[2]; ++z)
          for (int64_t yy = lo[1]; yy <= hi[1]; ++yy) {
            const auto run = grid.run(c, lo[0], hi[0], yy, z);
            count += run.second - run.first;
          }
        if (count > cap) {
          cap = count + 64;
          cand.resize(dim * cap);
          cand_row.resize(cap);
          tmp.resize(cap);
          hits.resize(cap);
        }
        int64_t j = 0;
        for (int64_t z = lo[2]; z <= hi[2]; ++z)
          for (int64_t yy = lo[1]; yy <= hi[1]; ++yy) {
            const auto run = grid.run(c, lo[0], hi[0], yy, z);
            for (int64_t s = run.first; s < run.second; ++s, ++j) {
              for (int a = 0; a < dim; ++a) cand[a * cap + j] = coords[s * dim + a];
              cand_row[j] = rows[s];
            }
          }
      }
      sqdist_block(cand.data(), cap, dim, q, count, tmp.data());
      if (c.n <= kBitmapMaxPoints) {
        // Ascending index order through a bitmap of the cloud's points.
        const int64_t words = (c.n + 63) / 64;
        if (static_cast<int64_t>(bitmap.size()) < words) bitmap.assign(words, 0);
        int64_t w_lo = words, w_hi = -1;
        for (int64_t j0 = 0; j0 < count; j0 += 64) {
          uint64_t mask = below_mask(tmp.data() + j0, std::min<int64_t>(64, count - j0), r2);
          while (mask != 0) {
            const int64_t local = cand_row[j0 + __builtin_ctzll(mask)] - c.first;
            mask &= mask - 1;
            bitmap[local >> 6] |= uint64_t(1) << (local & 63);
            w_lo = std::min(w_lo, local >> 6);
            w_hi = std::max(w_hi, local >> 6);
          }
        }
        int64_t found = 0;
        for (int64_t w = w_lo; w <= w_hi; ++w) {
          uint64_t bits = bitmap[w];
          bitmap[w] = 0;
          while (bits != 0 && found < max_num) {
            dst[found++] = c.first + w * 64 + __builtin_ctzll(bits);
            bits &= bits - 1;
          }
        }
        std::fill(dst + found, dst + max_num, int64_t(-1));
      } else {
        int64_t m = 0;
        for (int64_t j0 = 0; j0 < count; j0 += 64) {
          uint64_t mask = below_mask(tmp.data() + j0, std::min<int64_t>(64, count - j0), r2);
          while (mask != 0) {
            hits[m++] = cand_row[j0 + __builtin_ctzll(mask)];
            mask &= mask - 1;
          }
        }
        const int64_t keep = std::min(m, max_num);
        std::partial_sort(hits.begin(), hits.begin() + keep, hits.begin() + m);
        std::copy(hits.begin(), hits.begin() + keep, dst);
        std::fill(dst + keep, dst + max_num, int64_t(-1));
      }
    }
  });
}

// The grid search for D <= 3; false (nothing written) when the points are not
// all finite.
template <typename scalar_t>
bool radius_grid(const at::Tensor& x, const at::Tensor& y, const std::vector<int64_t>& px,
                 const std::vector<int64_t>& py, scalar_t r2, int64_t max_num, at::Tensor& out) {
  const int64_t num_points = x.size(0), num_queries = y.size(0), dim = x.size(1);
  // A point whose computed squared distance is below r2 is truly closer than
  // sqrt(r2 / keep); cells at least that long on every axis (plus margins for
  // the rounding of that bound and of cell assignment) put it in the 3^D cells
  // around the query's.
  const double reach = std::sqrt(static_cast<double>(r2) / kRoundKeep<scalar_t>()) * (1 + 1e-6);
  Team team;
  PointGrid<scalar_t> grid;
  const bool ok = grid.build(
      team, x.data_ptr<scalar_t>(), num_points, dim, px,
      [&](int64_t, double, int) { return reach; }, /*side_is_minimum=*/true);
  if (!ok) return false;
  const scalar_t* yq = y.data_ptr<scalar_t>();
  int64_t* o = out.data_ptr<int64_t>();
  if (dim == 1) radius_grid_queries<1>(team, grid, yq, num_queries, py, r2, max_num, o);
  else if (dim == 2) radius_grid_queries<2>(team, grid, yq, num_queries, py, r2, max_num, o);
  else radius_grid_queries<3>(team, grid, yq, num_queries, py, r2, max_num, o);
  return true;
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

  if (num_queries == 0 || num_points == 0)
    return at::full({num_queries, max_num_neighbors}, -1, y.options().dtype(at::kLong));
  // Every row is written in full by the searches below (neighbours, then -1).
  auto out = at::empty({num_queries, max_num_neighbors}, y.options().dtype(at::kLong));
  auto xc = x.contiguous(), yc = y.contiguous();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "pointcmt_radius_cpu", [&] {
    // r * r in double, rounded once to the points' dtype (as the reference does).
    const scalar_t r2 = static_cast<scalar_t>(r * r);
    if (dim <= 3 && num_points >= kGridMinPoints && std::isfinite(static_cast<double>(r2)) &&
        radius_grid<scalar_t>(xc, yc, px, py, r2, max_num_neighbors, out))
      return;
    auto xt = at::empty({dim, num_points}, x.options());
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
