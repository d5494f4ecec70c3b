// Shared by the CPU point kernels (knn, radius): a uniform grid per cloud for
// low-dimensional (D <= 3) neighbour searches. Its loops run through
// cpu/parallel.h (Team, parallel_chunks).
//
// PointGrid: the points of every cloud are counting-sorted by cell (x fastest,
// then y, then z; ascending index inside a cell) into a copy, so any run of
// cells along x is one contiguous run of points. The grid only decides which
// points are looked at; distances are computed exactly as in the brute force
// (cpu/common.h), and the searches stop only when every point not looked at is
// provably (with a margin for rounding) out of reach, so the results are
// identical to the brute force.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "cpu/common.h"
#include "cpu/parallel.h"

namespace pointcmt {
namespace cpu {

// Computed squared distances (D <= 3, every operation rounded once in float32
// or float64) are within a few units of roundoff of the true ones; a region
// whose true squared distance is g2 cannot hold a point computed below
// g2 * kRoundKeep<scalar_t>().
template <typename scalar_t>
constexpr double kRoundKeep() {
  return 1.0 - 16.0 * static_cast<double>(std::numeric_limits<scalar_t>::epsilon());
}

struct CloudGrid {
  int64_t first = 0;      // first row (and first sorted slot) of the cloud
  int64_t n = 0;          // number of points
  int64_t cells = 1;      // g[0] * g[1] * g[2]
  int64_t cell_base = 0;  // offset of this cloud's cell_start entries
  int64_t g[3] = {1, 1, 1};
  double lo[3] = {0, 0, 0};
  double hi[3] = {0, 0, 0};
  double inv_h[3] = {0, 0, 0};  // cells per unit length (0 on a flat or unused axis)
  double h[3] = {0, 0, 0};      // cell side
  double slack = 0;             // absolute margin for cell-assignment rounding

  // Cell coordinate of value v on axis a (monotone non-decreasing in v).
  int64_t coord(int a, double v) const {
    const double t = (v - lo[a]) * inv_h[a];
    if (!(t > 0)) return 0;
    if (t >= static_cast<double>(g[a])) return g[a] - 1;
    return static_cast<int64_t>(t);
  }
  // Position of the lower face of cell c on axis a.
  double face(int a, int64_t c) const { return lo[a] + static_cast<double>(c) * h[a]; }
  // Lower bound on the distance from coordinate v to the points of the slab
  // of cell `cell` on axis a (the slack absorbs assignment rounding); 0 inside.
  // The outer slabs extend to the bounding box of the points only.
  double gap(int a, int64_t cell, double v) const {
    double below, above;
    if (inv_h[a] > 0) {
      below = (cell == 0 ? lo[a] : face(a, cell)) - v;
      above = v - (cell == g[a] - 1 ? hi[a] : face(a, cell + 1));
    } else {
      below = lo[a] - v;
      above = v - hi[a];
    }
    const double d = std::max(below, above) - slack;
    return d > 0 ? d : 0.0;
  }
  double gap2(int a, int64_t cell, double v) const {
    const double d = gap(a, cell, v);
    return d * d;
  }
};

template <typename scalar_t>
struct PointGrid {
  int64_t dim = 0;
  int64_t num_points = 0;
  std::vector<CloudGrid> clouds;
  std::vector<int64_t> cell_start;  // per cloud: cells + 1 slot offsets (global slots)
  std::vector<scalar_t> coords;     // num_points x dim, sorted slots (rows of x, reordered)
  std::vector<int64_t> row;         // sorted slot -> row of x

  // Builds the grid of every cloud of x (n_points x d, d <= 3, clouds given by
  // ptr). `cell_side(n, volume, active)` is the wanted side of a cell for a
  // cloud of n points whose bounding box has `volume` over its `active`
  // non-flat axes: cells are at most that long, or, with `side_is_minimum`, at
  // least that long on every axis. Returns false (and builds nothing) when a
  // coordinate is not finite: the callers then use the brute force.
  template <typename CellSide>
  bool build(Team& team, const scalar_t* x, int64_t n_points, int64_t d, const std::vector<int64_t>& ptr,
             CellSide cell_side, bool side_is_minimum = false) {
    dim = d;
    num_points = n_points;
    const int64_t num_clouds = static_cast<int64_t>(ptr.size()) - 1;
    clouds.assign(num_clouds, CloudGrid());
    int64_t total_cells = 0;
    for (int64_t b = 0; b < num_clouds; ++b) {
      CloudGrid& c = clouds[b];
      c.first = ptr[b];
      c.n = ptr[b + 1] - ptr[b];
      double scale = 0;
      for (int a = 0; a < dim; ++a) {
        double lo = std::numeric_limits<double>::infinity(), hi = -lo;
        for (int64_t i = c.first; i < c.first + c.n; ++i) {
          const double v = x[i * dim + a];
          lo = v < lo ? v : lo;
          hi = v > hi ? v : hi;
        }
        if (c.n == 0) lo = hi = 0;
        if (!std::isfinite(lo) || !std::isfinite(hi)) return false;
        c.lo[a] = lo;
        c.hi[a] = hi;
        scale = std::max(scale, std::max(std::abs(lo), std::abs(hi)));
      }
      double volume = 1;
      int active = 0;
      for (int a = 0; a < dim; ++a) {
        if (c.hi[a] > c.lo[a]) {
          volume *= c.hi[a] - c.lo[a];
          ++active;
        }
      }
      // Cell faces are computed as lo + c * h, assignments as (v - lo) * inv_h:
      // both within a few roundings of `scale` of the exact face.
      c.slack = 64 * std::numeric_limits<double>::epsilon() * (scale + 1);
      if (active > 0 && c.n > 1) {
        double side = cell_side(c.n, volume, active);
        if (side_is_minimum) side += 4 * c.slack;
        for (int a = 0; a < dim; ++a) {
          const double extent = c.hi[a] - c.lo[a];
          if (extent > 0 && side > 0) {
            const double cells = side_is_minimum ? std::floor(extent / side) : std::ceil(extent / side);
            c.g[a] = static_cast<int64_t>(std::min(std::max(cells, 1.0), 2048.0));
          }
        }
        // At most ~4 cells per point.
        while (c.g[0] * c.g[1] * c.g[2] > 4 * c.n + 8) {
          for (int a = 0; a < dim; ++a) c.g[a] = (c.g[a] + 1) / 2;
        }
        for (int a = 0; a < dim; ++a) {
          const double extent = c.hi[a] - c.lo[a];
          if (extent > 0 && c.g[a] > 1) {
            c.inv_h[a] = static_cast<double>(c.g[a]) / extent;
            c.h[a] = extent / static_cast<double>(c.g[a]);
          } else {
            c.g[a] = 1;
          }
        }
      }
      c.cells = c.g[0] * c.g[1] * c.g[2];
      c.cell_base = total_cells;
      total_cells += c.cells + 1;
    }
    // A NaN never wins the comparisons above; v * 0 is NaN for NaN and inf.
    double sum = 0;
    for (int64_t i = 0; i < n_points * dim; ++i) sum += static_cast<double>(x[i]) * 0.0;
    if (!(sum == 0)) return false;

    cell_start.assign(total_cells, 0);
    coords.resize(dim * num_points);
    row.resize(num_points);
    team.run(num_clouds, 1, [&](int64_t begin, int64_t end) {
      std::vector<int64_t> cell_of;
      for (int64_t b = begin; b < end; ++b) {
        const CloudGrid& c = clouds[b];
        int64_t* start = cell_start.data() + c.cell_base;
        cell_of.resize(c.n);
        for (int64_t i = 0; i < c.n; ++i) {
          const int64_t cell = cell_of_point(c, x + (c.first + i) * dim);
          cell_of[i] = cell;
          ++start[cell + 1];
        }
        for (int64_t cell = 0; cell < c.cells; ++cell) start[cell + 1] += start[cell];
        for (int64_t cell = 0; cell <= c.cells; ++cell) start[cell] += c.first;  // global slots
        std::vector<int64_t> fill(start, start + c.cells);
        for (int64_t i = 0; i < c.n; ++i) {
          const int64_t slot = fill[cell_of[i]]++;
          row[slot] = c.first + i;
          for (int a = 0; a < dim; ++a) coords[slot * dim + a] = x[(c.first + i) * dim + a];
        }
      }
    });
    return true;
  }

  // Cell of point p in cloud c (clamped to the grid).
  int64_t cell_of_point(const CloudGrid& c, const scalar_t* p) const {
    int64_t cell = 0;
    for (int a = static_cast<int>(dim) - 1; a >= 0; --a) cell = cell * c.g[a] + c.coord(a, p[a]);
    return cell;
  }

  // The rows of y (packed by ptr_y, same clouds) ordered by cloud, then by the
  // cell of this grid they fall in (counting sort, stable): consecutive
  // queries then touch the same memory.
  std::vector<int64_t> query_order(Team& team, const scalar_t* y, const std::vector<int64_t>& ptr_y) const {
    const int64_t num_clouds = static_cast<int64_t>(clouds.size());
    std::vector<int64_t> order(ptr_y.back());
    team.run(num_clouds, 1, [&](int64_t begin, int64_t end) {
      std::vector<int64_t> count, cell;
      for (int64_t b = begin; b < end; ++b) {
        const CloudGrid& c = clouds[b];
        const int64_t q0 = ptr_y[b], m = ptr_y[b + 1] - ptr_y[b];
        count.assign(c.cells + 1, 0);
        cell.resize(m);
        for (int64_t i = 0; i < m; ++i) {
          cell[i] = cell_of_point(c, y + (q0 + i) * dim);
          ++count[cell[i] + 1];
        }
        for (int64_t j = 0; j < c.cells; ++j) count[j + 1] += count[j];
        for (int64_t i = 0; i < m; ++i) order[q0 + count[cell[i]]++] = q0 + i;
      }
    });
    return order;
  }

  // Slots of the cells x0..x1 (inclusive) in row (y, z) of cloud c.
  std::pair<int64_t, int64_t> run(const CloudGrid& c, int64_t x0, int64_t x1, int64_t y, int64_t z) const {
    const int64_t base = (z * c.g[1] + y) * c.g[0];
    const int64_t* start = cell_start.data() + c.cell_base;
    return {start[base + x0], start[base + x1 + 1]};
  }
};

// Sorted (distance, row) list of the k best seen so far, lexicographic order,
// kept directly in the query's output row; finish() pads the rest of the row.
template <typename scalar_t>
struct TopK {
  int64_t k = 0, filled = 0;
  scalar_t* dist = nullptr;
  int64_t* idx = nullptr;

  void reset(scalar_t* out_dist, int64_t* out_idx, int64_t /*cloud_first*/) {
    dist = out_dist;
    idx = out_idx;
    filled = 0;
  }
  bool full() const { return filled == k; }
  scalar_t worst() const { return filled == k ? dist[k - 1] : std::numeric_limits<scalar_t>::infinity(); }
  void offer(scalar_t d, int64_t i) {
    int64_t pos;
    if (filled < k) {
      pos = filled++;
    } else if (d < dist[k - 1] || (d == dist[k - 1] && i < idx[k - 1])) {
      pos = k - 1;
    } else {
      return;
    }
    while (pos > 0 && (dist[pos - 1] > d || (dist[pos - 1] == d && idx[pos - 1] > i))) {
      dist[pos] = dist[pos - 1];
      idx[pos] = idx[pos - 1];
      --pos;
    }
    dist[pos] = d;
    idx[pos] = i;
  }
  // Pads the row past the neighbours found (a cloud of fewer than k points)
  // with (+inf, -1).
  void finish() {
    std::fill(dist + filled, dist + k, std::numeric_limits<scalar_t>::infinity());
    std::fill(idx + filled, idx + k, int64_t(-1));
  }
};

// The same list for float32 as one sorted array of 64-bit keys: the distance's
// bits above (non-negative floats order like their bit patterns) and the row
// within the cloud below (clouds of < 2^32 points), so (distance, index) order
// is integer order.
struct PackedTopK {
  int64_t k = 0, filled = 0, first = 0;
  std::vector<int64_t> keys;
  float* dist = nullptr;
  int64_t* idx = nullptr;

  void reset(float* out_dist, int64_t* out_idx, int64_t cloud_first) {
    if (static_cast<int64_t>(keys.size()) < k) keys.resize(k);
    dist = out_dist;
    idx = out_idx;
    first = cloud_first;
    filled = 0;
  }
  bool full() const { return filled == k; }
  static int64_t key_of(float d, int64_t local) {
    uint32_t bits;
    std::memcpy(&bits, &d, sizeof(bits));
    return (static_cast<int64_t>(bits) << 32) | local;
  }
  float worst() const {
    if (filled < k) return std::numeric_limits<float>::infinity();
    const uint32_t bits = static_cast<uint32_t>(keys[k - 1] >> 32);
    float d;
    std::memcpy(&d, &bits, sizeof(d));
    return d;
  }
  void offer(float d, int64_t i) { offer_key(key_of(d, i - first)); }
  void offer_key(int64_t key) {
    int64_t* kk = keys.data();
    int64_t pos;
    if (filled < k) {
      pos = filled++;
    } else if (key < kk[k - 1]) {
      pos = k - 1;
    } else {
      return;
    }
    while (pos > 0 && kk[pos - 1] > key) {
      kk[pos] = kk[pos - 1];
      --pos;
    }
    kk[pos] = key;
  }
  // Fills an empty list at once with the min(n, k) smallest of n distinct
  // candidate keys: select(candidates, n, keep, out) writes the `keep`
  // smallest, sorted, to out.
  template <typename Select>
  void assign_ranked(const int64_t* candidates, int64_t n, Select select) {
    filled = std::min(n, k);
    select(candidates, n, filled, keys.data());
  }
  void finish() {
    for (int64_t j = 0; j < filled; ++j) {
      const uint32_t bits = static_cast<uint32_t>(keys[j] >> 32);
      std::memcpy(dist + j, &bits, sizeof(float));
      idx[j] = first + (keys[j] & 0xFFFFFFFFll);
    }
    std::fill(dist + filled, dist + k, std::numeric_limits<float>::infinity());
    std::fill(idx + filled, idx + k, int64_t(-1));
  }
};

}  // namespace cpu
}  // namespace pointcmt
