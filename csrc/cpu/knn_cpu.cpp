// k nearest neighbours, CPU: queries in parallel (a Team, cpu/grid.h), exact
// within each cloud.
//
// Brute force (any D, and cosine): the points of each cloud are packed in
// groups of 16 (all coordinates of a group together); tiles of 4 queries
// compute their distances to a block of points in one vectorised pass; a chunk
// whose minimum cannot enter the current top k is skipped, the others are
// merged by insertion into a sorted list. Points arrive in ascending index
// order and only a strictly smaller distance displaces an entry, so the result
// is sorted by (distance, index).
//
// Grid (Euclidean, D <= 3): the points of each cloud are put in a uniform grid
// (cpu/grid.h). The queries of one cell take the points of the 3^D cells
// around it as candidates (one vectorised distance pass each); a query whose
// k-th distance is not provably below the distance to every other cell then
// visits shells of cells farther out until it is. The candidates and their
// distances are those of the brute force, only fewer of them are looked at,
// and ties are broken by index explicitly, so the result is identical. In
// float32 the k nearest of a block are picked by a vectorised threshold pass
// and a rank count over 64-bit (distance, index) keys (scalar, AVX2 and
// AVX-512 forms; see "float32 selection" below).
#include <torch/library.h>

#include <cstring>
#include <limits>
#include <tuple>
#include <type_traits>

#include "cpu/common.h"
#include "cpu/grid.h"

#if !defined(POINTCMT_NO_MV) && defined(__GNUC__) && defined(__x86_64__)
#define POINTCMT_KNN_X86 1
#include <immintrin.h>
#endif

namespace pointcmt {
namespace cpu {
namespace {

constexpr int64_t kBlock = 256;
constexpr int64_t kChunk = 16;
constexpr int64_t kGrain = 64;            // queries per parallel chunk
constexpr int64_t kGridMinPoints = 64;    // below this many points in all, brute force
constexpr int64_t kAhead = 4;             // grid queries: prefetch distance

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

// Offers the points of sorted slots [s0, s1) to `top`; `worst` caches the
// current k-th distance (+inf until k points were seen). Runs are short (a
// few cells), so a plain loop with the dimension fixed at compile time beats
// the vectorised block helpers.
template <int DIM, typename scalar_t, typename Top>
inline void offer_run(const scalar_t* __restrict coords, const int64_t* __restrict rows, int64_t s0, int64_t s1,
                      const scalar_t* q, Top& top, scalar_t& worst) {
  for (int64_t s = s0; s < s1; ++s) {
    const scalar_t* p = coords + s * DIM;
    scalar_t diff = p[0] - q[0];
    scalar_t d = diff * diff;
    for (int a = 1; a < DIM; ++a) {
      diff = p[a] - q[a];
      d = d + diff * diff;
    }
    if (d <= worst) {
      top.offer(d, rows[s]);
      worst = top.worst();
    }
  }
}

// ---------------------------------------------------------------------------
// float32 selection (the grid path with PackedTopK). A query's candidates are
// the points of the 3^D cells around it; those at or below a threshold are
// picked (their positions in the block, ascending), made into 64-bit keys
// (distance bits, then the row within the cloud: integer order is (distance,
// index) order, and the keys are distinct) and ranked: the rank of a key is
// the number of keys below it, so the `keep` smallest land sorted at their
// ranks without a data-dependent branch. Each step has a scalar, an AVX2 and
// an AVX-512 form with identical results, picked once per call (cpu_isa()).

// Candidate lists up to this long are ranked (n^2 / lanes compares); longer
// ones (a dense spot) are inserted one by one.
constexpr int64_t kRankMax = 96;
// Room past a buffer's last entry: whole vectors are stored.
constexpr int64_t kVectorSlack = 16;

// Writes the positions j < count with dist[j] <= threshold to `picked`, in
// ascending order, and returns how many (picked needs count + kVectorSlack
// entries).
using SelectWithin = int64_t (*)(const float*, int64_t, float, uint32_t*);
// Writes the `keep` smallest of the n distinct keys, sorted, to out (the
// rank of a key is the number of keys below it); keys[n, n + 7] must hold
// INT64_MAX.
using RankSelect = void (*)(const int64_t*, int64_t, int64_t, int64_t*);

int64_t select_within_scalar(const float* dist, int64_t count, float threshold, uint32_t* picked) {
  int64_t m = 0;
  for (int64_t j = 0; j < count; ++j) {
    picked[m] = static_cast<uint32_t>(j);
    m += dist[j] <= threshold ? 1 : 0;
  }
  return m;
}

void rank_select_scalar(const int64_t* keys, int64_t n, int64_t keep, int64_t* out) {
  for (int64_t i = 0; i < n; ++i) {
    const int64_t key = keys[i];
    int64_t rank = 0;
    for (int64_t j = 0; j < n; ++j) rank += keys[j] < key ? 1 : 0;
    if (rank < keep) out[rank] = key;
  }
}

#if defined(POINTCMT_KNN_X86)
// For every 8-bit mask, the positions of its set bits, ascending (then 0s).
struct CompressTable {
  alignas(8) uint8_t lanes[256][8];
  CompressTable() {
    for (int mask = 0; mask < 256; ++mask) {
      int n = 0;
      for (int l = 0; l < 8; ++l)
        if (mask & (1 << l)) lanes[mask][n++] = static_cast<uint8_t>(l);
      for (; n < 8; ++n) lanes[mask][n] = 0;
    }
  }
};
const CompressTable kCompress;

__attribute__((target("avx2,popcnt"))) int64_t select_within_avx2(const float* dist, int64_t count, float threshold,
                                                            uint32_t* picked) {
  const __m256 limit = _mm256_set1_ps(threshold);
  int64_t m = 0, j = 0;
  for (; j + 8 <= count; j += 8) {
    const int mask = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(dist + j), limit, _CMP_LE_OQ));
    const __m128i lanes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(kCompress.lanes[mask]));
    const __m256i positions = _mm256_add_epi32(_mm256_cvtepu8_epi32(lanes), _mm256_set1_epi32(static_cast<int>(j)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(picked + m), positions);
    m += __builtin_popcount(static_cast<unsigned>(mask));
  }
  for (; j < count; ++j) {
    picked[m] = static_cast<uint32_t>(j);
    m += dist[j] <= threshold ? 1 : 0;
  }
  return m;
}

// Ranks keys[i0, i0 + 4 V) against the n keys (V vectors of 4 at once: one
// broadcast and V compares per key, no horizontal sums) and writes those of
// rank < keep. Lanes past n hold INT64_MAX: their rank is n >= keep.
template <int V>
__attribute__((target("avx2"))) inline void rank_group_avx2(const int64_t* keys, int64_t n, int64_t i0,
                                                            int64_t keep, int64_t* out) {
  __m256i mine[V], below[V];  // below: -1 per smaller key
  for (int v = 0; v < V; ++v) {
    mine[v] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(keys + i0 + 4 * v));
    below[v] = _mm256_setzero_si256();
  }
  for (int64_t j = 0; j < n; ++j) {
    const __m256i other = _mm256_set1_epi64x(keys[j]);
    for (int v = 0; v < V; ++v) below[v] = _mm256_add_epi64(below[v], _mm256_cmpgt_epi64(mine[v], other));
  }
  alignas(32) int64_t rank[4 * V], key[4 * V];
  for (int v = 0; v < V; ++v) {
    _mm256_store_si256(reinterpret_cast<__m256i*>(rank + 4 * v), _mm256_sub_epi64(_mm256_setzero_si256(), below[v]));
    _mm256_store_si256(reinterpret_cast<__m256i*>(key + 4 * v), mine[v]);
  }
  for (int l = 0; l < 4 * V; ++l)
    if (rank[l] < keep) out[rank[l]] = key[l];
}

__attribute__((target("avx2"))) void rank_select_avx2(const int64_t* keys, int64_t n, int64_t keep, int64_t* out) {
  int64_t i0 = 0;
  for (; n - i0 > 12; i0 += 16) rank_group_avx2<4>(keys, n, i0, keep, out);
  switch ((n - i0 + 3) / 4) {
    case 3: rank_group_avx2<3>(keys, n, i0, keep, out); break;
    case 2: rank_group_avx2<2>(keys, n, i0, keep, out); break;
    case 1: rank_group_avx2<1>(keys, n, i0, keep, out); break;
    default: break;
  }
}

__attribute__((target("avx512f,popcnt"))) int64_t select_within_avx512(const float* dist, int64_t count, float threshold,
                                                                  uint32_t* picked) {
  const __m512 limit = _mm512_set1_ps(threshold);
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  int64_t m = 0, j = 0;
  for (; j < count; j += 16) {
    const __mmask16 valid = count - j >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (count - j)) - 1);
    const __mmask16 mask = _mm512_mask_cmp_ps_mask(valid, _mm512_maskz_loadu_ps(valid, dist + j), limit, _CMP_LE_OQ);
    const __m512i positions = _mm512_add_epi32(lane, _mm512_set1_epi32(static_cast<int>(j)));
    _mm512_storeu_si512(picked + m, _mm512_maskz_compress_epi32(mask, positions));
    m += __builtin_popcount(static_cast<unsigned>(mask));
  }
  return m;
}

// As rank_group_avx2, 8 keys per vector; the kept ones are scattered.
template <int V>
__attribute__((target("avx512f"))) inline void rank_group_avx512(const int64_t* keys, int64_t n, int64_t i0,
                                                                 int64_t keep, int64_t* out) {
  __m512i mine[V], rank[V];
  for (int v = 0; v < V; ++v) {
    mine[v] = _mm512_loadu_si512(keys + i0 + 8 * v);
    rank[v] = _mm512_setzero_si512();
  }
  const __m512i one = _mm512_set1_epi64(1);
  for (int64_t j = 0; j < n; ++j) {
    const __m512i other = _mm512_set1_epi64(keys[j]);
    for (int v = 0; v < V; ++v)
      rank[v] = _mm512_mask_add_epi64(rank[v], _mm512_cmplt_epi64_mask(other, mine[v]), rank[v], one);
  }
  const __m512i limit = _mm512_set1_epi64(keep);
  for (int v = 0; v < V; ++v)
    _mm512_mask_i64scatter_epi64(out, _mm512_cmplt_epi64_mask(rank[v], limit), rank[v], mine[v], 8);
}

__attribute__((target("avx512f"))) void rank_select_avx512(const int64_t* keys, int64_t n, int64_t keep,
                                                            int64_t* out) {
  int64_t i0 = 0;
  for (; n - i0 > 24; i0 += 32) rank_group_avx512<4>(keys, n, i0, keep, out);
  switch ((n - i0 + 7) / 8) {
    case 3: rank_group_avx512<3>(keys, n, i0, keep, out); break;
    case 2: rank_group_avx512<2>(keys, n, i0, keep, out); break;
    case 1: rank_group_avx512<1>(keys, n, i0, keep, out); break;
    default: break;
  }
}
#endif

// The selection functions of the widest instruction set allowed.
std::pair<SelectWithin, RankSelect> selection_functions() {
#if defined(POINTCMT_KNN_X86)
  switch (cpu_isa()) {
    case CpuIsa::kAvx512:
      return {&select_within_avx512, &rank_select_avx512};
    case CpuIsa::kAvx2:
      return {&select_within_avx2, &rank_select_avx2};
    default:
      break;
  }
#endif
  return {&select_within_scalar, &rank_select_scalar};
}

// Squared distance from q to the slab of cell `cell` on axis a, less the
// assignment slack (0 when q is inside the slab or the axis is unused).
template <int DIM, typename scalar_t>
inline double axis_gap2(const CloudGrid& c, int a, int64_t cell, const scalar_t* q) {
  return a < DIM ? c.gap2(a, cell, static_cast<double>(q[a])) : 0.0;
}

// Lower bound on the squared distance from q to the points of every cell
// farther than Chebyshev distance r from q's cell cq (+inf when there is none).
template <typename scalar_t>
double beyond2(const CloudGrid& c, const scalar_t* q, const int64_t* cq, int64_t r) {
  double gap = std::numeric_limits<double>::infinity();
  for (int a = 0; a < 3; ++a) {
    if (c.g[a] == 1) continue;
    if (cq[a] - r > 0) gap = std::min(gap, static_cast<double>(q[a]) - c.face(a, cq[a] - r));
    if (cq[a] + r + 1 < c.g[a]) gap = std::min(gap, c.face(a, cq[a] + r + 1) - static_cast<double>(q[a]));
  }
  gap -= c.slack;
  return gap > 0 ? gap * gap : 0.0;
}

// Continues the search of one query from shell r0 on (every cell at
// Chebyshev distance < r0 from the query's cell cq was offered already): visits
// the shells r0, r0 + 1, ... skipping cells farther than the current k-th
// distance, until the k-th distance is provably below the distance to every
// cell not visited yet (or every cell was visited).
template <int DIM, typename Top, typename scalar_t>
void knn_shells(const PointGrid<scalar_t>& grid, const CloudGrid& c, const scalar_t* q, const int64_t* cq,
                int64_t r0, Top& top) {
  const scalar_t* coords = grid.coords.data();
  const int64_t* rows = grid.row.data();
  const double keep = kRoundKeep<scalar_t>();
  scalar_t worst = top.worst();
  for (int64_t r = r0;; ++r) {
    int64_t lo[3], hi[3];
    bool everything = true;
    for (int a = 0; a < 3; ++a) {
      lo[a] = std::max<int64_t>(0, cq[a] - r);
      hi[a] = std::min<int64_t>(c.g[a] - 1, cq[a] + r);
      everything = everything && cq[a] - r <= 0 && cq[a] + r >= c.g[a] - 1;
    }
    // Cells (and whole rows of cells) whose distance to q already exceeds the
    // k-th distance are skipped.
    for (int64_t z = lo[2]; z <= hi[2]; ++z) {
      const double gz = axis_gap2<DIM>(c, 2, z, q);
      if (gz * keep > static_cast<double>(worst)) continue;
      for (int64_t yy = lo[1]; yy <= hi[1]; ++yy) {
        const double gyz = gz + axis_gap2<DIM>(c, 1, yy, q);
        if (gyz * keep > static_cast<double>(worst)) continue;
        if (std::abs(z - cq[2]) == r || std::abs(yy - cq[1]) == r) {
          int64_t x0 = lo[0], x1 = hi[0];
          while (x0 <= x1 && (gyz + axis_gap2<DIM>(c, 0, x0, q)) * keep > static_cast<double>(worst)) ++x0;
          while (x1 >= x0 && (gyz + axis_gap2<DIM>(c, 0, x1, q)) * keep > static_cast<double>(worst)) --x1;
          if (x0 > x1) continue;
          const auto run = grid.run(c, x0, x1, yy, z);
          offer_run<DIM>(coords, rows, run.first, run.second, q, top, worst);
        } else {
          for (const int64_t xc : {cq[0] - r, cq[0] + r}) {
            if (xc < 0 || xc >= c.g[0]) continue;
            if ((gyz + axis_gap2<DIM>(c, 0, xc, q)) * keep > static_cast<double>(worst)) continue;
            const auto run = grid.run(c, xc, xc, yy, z);
            offer_run<DIM>(coords, rows, run.first, run.second, q, top, worst);
          }
        }
      }
    }
    if (everything) return;
    if (!top.full()) continue;
    if (top.worst() < beyond2(c, q, cq, r) * keep) return;
  }
}

// All queries: those falling in the same cell are taken together (`order`
// sorts them by cell), the points of the 3^D cells around it are copied once
// into a struct-of-arrays buffer and every query of the cell computes its
// distances to all of them in one vectorised pass. A query whose k-th
// distance is not provably below the distance to the cells outside that block
// continues with the shell search.
template <int DIM, typename Top, typename scalar_t>
void knn_grid_queries(Team& team, const PointGrid<scalar_t>& grid, const scalar_t* y, int64_t num_queries,
                      const std::vector<int64_t>& ptr_y, int64_t k, scalar_t* out_dist, int64_t* out_idx) {
  constexpr int64_t dim = DIM;
  const scalar_t* coords = grid.coords.data();
  const int64_t* rows = grid.row.data();
  const double keep = kRoundKeep<scalar_t>();
  constexpr bool kPacked = std::is_same_v<Top, PackedTopK>;
  const std::vector<int64_t> order = grid.query_order(team, y, ptr_y);
  const std::pair<SelectWithin, RankSelect> selection = selection_functions();
  const SelectWithin select_within = selection.first;
  const RankSelect rank_select = selection.second;
  team.run(num_queries, kGrain, [&](int64_t begin, int64_t end) {
    Top top;
    top.k = k;
    std::vector<scalar_t> cand, tmp;
    std::vector<int64_t> cand_row, sel;
    // kPacked: rows within the cloud of the block's points; positions picked
    // by the threshold; their keys (room for whole vectors even when empty).
    std::vector<uint32_t> cand_local, picked(kVectorSlack);
    std::vector<int64_t> keys(kVectorSlack);

    const scalar_t inf = std::numeric_limits<scalar_t>::infinity();
    scalar_t prev_kth = inf;
    int64_t count = 0, cap = 0, group_cloud = -1, group_cell = -1;
    int64_t b = cloud_of(ptr_y, begin);
    for (int64_t slot = begin; slot < end; ++slot) {
      while (slot >= ptr_y[b + 1]) ++b;  // `order` keeps the queries of a cloud together
      const int64_t i = order[slot];
      if (slot + kAhead < end) {
        // Queries run in cell order, so their coordinates and output rows are
        // scattered in memory: fetch those of a later query now.
        const int64_t later = order[slot + kAhead];
        __builtin_prefetch(y + later * dim);
        __builtin_prefetch(out_dist + later * k, 1);
        __builtin_prefetch(out_idx + later * k, 1);
      }
      const CloudGrid& c = grid.clouds[b];
      if (c.n == 0) {  // a row of (+inf, -1)
        top.reset(out_dist + i * k, out_idx + i * k, c.first);
        top.finish();
        continue;
      }
      const scalar_t* q = y + i * dim;
      int64_t cq[3] = {0, 0, 0};
      for (int a = 0; a < dim; ++a) cq[a] = c.coord(a, static_cast<double>(q[a]));
      int64_t lo[3], hi[3];
      for (int a = 0; a < 3; ++a) {
        lo[a] = std::max<int64_t>(0, cq[a] - 1);
        hi[a] = std::min<int64_t>(c.g[a] - 1, cq[a] + 1);
      }
      const int64_t cell = (cq[2] * c.g[1] + cq[1]) * c.g[0] + cq[0];
      if (b != group_cloud || cell != group_cell) {
        // Gather the block of 3^D cells around `cell` (rows along x are runs).
        group_cloud = b;
        group_cell = cell;
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
          if constexpr (kPacked) {
            cand_local.resize(cap);
            picked.resize(cap + kVectorSlack);
            keys.resize(cap + kVectorSlack);
          } else {
            sel.resize(cap);
          }
        }
        int64_t j = 0;
        for (int64_t z = lo[2]; z <= hi[2]; ++z)
          for (int64_t yy = lo[1]; yy <= hi[1]; ++yy) {
            const auto run = grid.run(c, lo[0], hi[0], yy, z);
            for (int64_t s = run.first; s < run.second; ++s, ++j) {
              for (int a = 0; a < dim; ++a) cand[a * cap + j] = coords[s * dim + a];
              if constexpr (kPacked) {
                cand_local[j] = static_cast<uint32_t>(rows[s] - c.first);
              } else {
                cand_row[j] = rows[s];
              }
            }
          }
      }
      top.reset(out_dist + i * k, out_idx + i * k, c.first);
      sqdist_block(cand.data(), cap, dim, q, count, tmp.data());
      // Selection: the candidates at or below a threshold, sorted by
      // (distance, row). The threshold starts from the previous query's k-th
      // distance (a neighbour of this one) and grows until at least k
      // candidates pass (then the k smallest all passed) or it is +inf.
      scalar_t threshold = prev_kth;
      int64_t m = 0;
      while (true) {
        if constexpr (kPacked) {
          m = select_within(tmp.data(), count, threshold, picked.data());
        } else {
          m = 0;
          for (int64_t j = 0; j < count; ++j) {
            sel[m] = j;
            m += tmp[j] <= threshold ? 1 : 0;
          }
        }
        if (m >= k || threshold == inf) break;
        threshold = threshold > 0 ? threshold * scalar_t(1.2) : std::numeric_limits<scalar_t>::min();
        if (!(threshold < std::numeric_limits<scalar_t>::max())) threshold = inf;
      }
      if constexpr (kPacked) {
        for (int64_t j = 0; j < m; ++j) keys[j] = PackedTopK::key_of(tmp[picked[j]], cand_local[picked[j]]);
        if (m <= kRankMax) {
          std::fill(keys.begin() + m, keys.begin() + m + 8, std::numeric_limits<int64_t>::max());
          top.assign_ranked(keys.data(), m, rank_select);
        } else {
          for (int64_t j = 0; j < m; ++j) top.offer_key(keys[j]);
        }
      } else {
        for (int64_t j = 0; j < m; ++j) top.offer(tmp[sel[j]], cand_row[sel[j]]);
      }
      prev_kth = top.full() ? top.worst() : inf;
      bool everything = true;
      for (int a = 0; a < 3; ++a) everything = everything && lo[a] == 0 && hi[a] == c.g[a] - 1;
      if (!everything && !(top.full() && static_cast<double>(top.worst()) < beyond2(c, q, cq, 1) * keep))
        knn_shells<DIM>(grid, c, q, cq, 2, top);
      top.finish();
    }
  });
}

// Lanes of a point group: two 256-bit vectors.
template <typename scalar_t>
constexpr int64_t kLanes = 64 / sizeof(scalar_t);

// Packs the points of every cloud in groups of kLanes consecutive points, all
// coordinates of a group together: coordinate d of local point j of cloud b
// at pk[((gbase[b] + j / L) * dim + d) * L + j % L] (L = kLanes, padding lanes
// 0). The distance loops then read memory in order; a plain (D, N)
// struct-of-arrays copy puts every coordinate row a power-of-two stride apart
// for the usual batch sizes, and those rows evict each other from the cache.
template <typename scalar_t>
std::vector<int64_t> pack_groups(const scalar_t* x, int64_t dim, const std::vector<int64_t>& ptr,
                                 std::vector<scalar_t>& pk) {
  constexpr int64_t L = kLanes<scalar_t>;
  const int64_t num_clouds = static_cast<int64_t>(ptr.size()) - 1;
  std::vector<int64_t> gbase(num_clouds + 1, 0);
  for (int64_t b = 0; b < num_clouds; ++b) gbase[b + 1] = gbase[b] + (ptr[b + 1] - ptr[b] + L - 1) / L;
  pk.assign(gbase[num_clouds] * dim * L, scalar_t(0));
  parallel_chunks(num_clouds, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      for (int64_t j = 0; j < ptr[b + 1] - ptr[b]; ++j) {
        const scalar_t* src = x + (ptr[b] + j) * dim;
        scalar_t* dst = pk.data() + (gbase[b] + j / L) * dim * L + j % L;
        for (int64_t d = 0; d < dim; ++d) dst[d * L] = src[d];
      }
    }
  });
  return gbase;
}

// Distances (squared Euclidean, or dot products when DOT) of kQueryTile
// queries to the `count` points of consecutive packed groups, into
// out[t * kBlock + j]. A group's kQueryTile x kLanes sums stay in registers
// over the whole loop on d, so each coordinate is loaded once for all the
// queries; the sums run in ascending d exactly as sqdist_block / dot_block
// (and the references), so the values are identical.
constexpr int kQueryTile = 4;

template <typename scalar_t, bool DOT>
POINTCMT_MULTIVERSION void tile_block(const scalar_t* __restrict groups, int64_t dim, const scalar_t* const* qs,
                                      int64_t count, scalar_t* __restrict out) {
  constexpr int64_t L = kLanes<scalar_t>;
  constexpr int QT = kQueryTile;
  for (int64_t j0 = 0; j0 < count; j0 += L) {
    scalar_t acc[QT][L];
    const scalar_t* g = groups + (j0 / L) * dim * L;
#pragma GCC unroll 4
    for (int t = 0; t < QT; ++t) {
      const scalar_t qv = qs[t][0];
#pragma omp simd
      for (int64_t l = 0; l < L; ++l) {
        if constexpr (DOT) {
          acc[t][l] = g[l] * qv;
        } else {
          const scalar_t diff = g[l] - qv;
          acc[t][l] = diff * diff;
        }
      }
    }
    for (int64_t d = 1; d < dim; ++d) {
      const scalar_t* gd = g + d * L;
#pragma GCC unroll 4
      for (int t = 0; t < QT; ++t) {
        const scalar_t qv = qs[t][d];
#pragma omp simd
        for (int64_t l = 0; l < L; ++l) {
          if constexpr (DOT) {
            acc[t][l] = acc[t][l] + gd[l] * qv;
          } else {
            const scalar_t diff = gd[l] - qv;
            acc[t][l] = acc[t][l] + diff * diff;
          }
        }
      }
    }
#pragma GCC unroll 4
    for (int t = 0; t < QT; ++t)
      for (int64_t l = 0; l < L; ++l) out[t * kBlock + j0 + l] = acc[t][l];
  }
}

template <typename scalar_t>
void knn_queries(const scalar_t* pk, const std::vector<int64_t>& gbase, const scalar_t* y, int64_t num_queries,
                 int64_t dim, const std::vector<int64_t>& ptr_x, const std::vector<int64_t>& ptr_y,
                 int64_t k, const scalar_t* norm_x, const scalar_t* norm_y, scalar_t* out_dist,
                 int64_t* out_idx) {
  constexpr int QT = kQueryTile;
  constexpr int64_t L = kLanes<scalar_t>;
  static_assert(kBlock % (64 / sizeof(double)) == 0 && kBlock % (64 / sizeof(float)) == 0);
  parallel_chunks(num_queries, kGrain, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> tmp(QT * kBlock), top_dist(QT * k);
    std::vector<int64_t> top_idx(QT * k);
    int64_t b = cloud_of(ptr_y, begin);
    for (int64_t i0 = begin; i0 < end;) {
      while (i0 >= ptr_y[b + 1]) ++b;
      // A tile: up to QT consecutive queries of cloud b (missing ones repeat
      // the last query and are not written).
      const int64_t tile = std::min<int64_t>({QT, end - i0, ptr_y[b + 1] - i0});
      const int64_t first = ptr_x[b], n = ptr_x[b + 1] - ptr_x[b];
      if (n == 0) {  // rows of (+inf, -1)
        std::fill(out_dist + i0 * k, out_dist + (i0 + tile) * k, std::numeric_limits<scalar_t>::infinity());
        std::fill(out_idx + i0 * k, out_idx + (i0 + tile) * k, int64_t(-1));
        i0 += tile;
        continue;
      }
      const scalar_t* qs[QT];
      for (int t = 0; t < QT; ++t) qs[t] = y + (i0 + std::min<int64_t>(t, tile - 1)) * dim;
      int64_t filled[QT] = {0};
      for (int64_t j0 = 0; j0 < n; j0 += kBlock) {
        const int64_t count = std::min(kBlock, n - j0);
        const scalar_t* block = pk + (gbase[b] + j0 / L) * dim * L;
        if (norm_x != nullptr) {
          tile_block<scalar_t, true>(block, dim, qs, count, tmp.data());
          for (int64_t t = 0; t < tile; ++t)
            cosine_from_dot(tmp.data() + t * kBlock, norm_x + first + j0, norm_y[i0 + t], count);
        } else {
          tile_block<scalar_t, false>(block, dim, qs, count, tmp.data());
        }
        for (int64_t t = 0; t < tile; ++t) {
          const scalar_t* dist = tmp.data() + t * kBlock;
          scalar_t* td = top_dist.data() + t * k;
          int64_t* ti = top_idx.data() + t * k;
          int64_t& f = filled[t];
          // Points of the block in chunks of kChunk: a chunk whose minimum cannot
          // displace the current k-th neighbour is skipped after one vectorised pass.
          for (int64_t c0 = 0; c0 < count; c0 += kChunk) {
            const int64_t chunk = std::min(kChunk, count - c0);
            if (f == k && !(block_min(dist + c0, chunk) < td[k - 1])) continue;
            for (int64_t j = c0; j < c0 + chunk; ++j) {
              const scalar_t d = dist[j];
              int64_t pos;
              if (f < k) {
                pos = f++;
              } else if (d < td[k - 1]) {
                pos = k - 1;
              } else {
                continue;
              }
              while (pos > 0 && td[pos - 1] > d) {
                td[pos] = td[pos - 1];
                ti[pos] = ti[pos - 1];
                --pos;
              }
              td[pos] = d;
              ti[pos] = first + j0 + j;
            }
          }
        }
      }
      for (int64_t t = 0; t < tile; ++t) {
        scalar_t* row_dist = out_dist + (i0 + t) * k;
        int64_t* row_idx = out_idx + (i0 + t) * k;
        std::copy(top_dist.begin() + t * k, top_dist.begin() + t * k + filled[t], row_dist);
        std::copy(top_idx.begin() + t * k, top_idx.begin() + t * k + filled[t], row_idx);
        std::fill(row_dist + filled[t], row_dist + k, std::numeric_limits<scalar_t>::infinity());
        std::fill(row_idx + filled[t], row_idx + k, int64_t(-1));
      }
      i0 += tile;
    }
  });
}

// The grid search for D <= 3; false (nothing written) when the points are not
// all finite.
template <typename scalar_t>
bool knn_grid(const at::Tensor& x, const at::Tensor& y, const std::vector<int64_t>& px,
              const std::vector<int64_t>& py, int64_t k, at::Tensor& dist, at::Tensor& idx) {
  const int64_t num_points = x.size(0), num_queries = y.size(0), dim = x.size(1);
  // Cells of about 0.8 k points (at least 4): the 3^D block of cells around a
  // query then almost always holds its k nearest and proves it, and the
  // vectorised selection makes the larger block cheaper than the shell
  // searches it saves (timed on uniform clouds of 1024 points, k = 10, 20,
  // 40: 0.8 k against 0.4 k, 0.5 k, 0.6 k and 1.0 k).
  const double per_cell = std::min(64.0, std::max(4.0, 0.8 * static_cast<double>(k)));
  Team team;
  PointGrid<scalar_t> grid;
  const bool ok = grid.build(team, x.data_ptr<scalar_t>(), num_points, dim, px, [&](int64_t n, double volume, int active) {
    return std::pow(volume * per_cell / static_cast<double>(n), 1.0 / active);
  });
  if (!ok) return false;
  int64_t largest = 0;
  for (size_t b = 0; b + 1 < px.size(); ++b) largest = std::max(largest, px[b + 1] - px[b]);
  scalar_t* out_d = dist.data_ptr<scalar_t>();
  int64_t* out_i = idx.data_ptr<int64_t>();
  const scalar_t* yq = y.data_ptr<scalar_t>();
  auto run = [&](auto top_tag) {
    using Top = typename decltype(top_tag)::type;
    if (dim == 1) knn_grid_queries<1, Top>(team, grid, yq, num_queries, py, k, out_d, out_i);
    else if (dim == 2) knn_grid_queries<2, Top>(team, grid, yq, num_queries, py, k, out_d, out_i);
    else knn_grid_queries<3, Top>(team, grid, yq, num_queries, py, k, out_d, out_i);
  };
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (largest < (int64_t(1) << 32)) {
      run(std::type_identity<PackedTopK>());
      return true;
    }
  }
  run(std::type_identity<TopK<scalar_t>>());
  return true;
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

  if (num_queries == 0 || num_points == 0)
    return {at::full({num_queries, k}, std::numeric_limits<double>::infinity(), y.options()),
            at::full({num_queries, k}, -1, y.options().dtype(at::kLong))};
  // Every row is written whole by the searches (neighbours, then +inf / -1).
  auto dist = at::empty({num_queries, k}, y.options());
  auto idx = at::empty({num_queries, k}, y.options().dtype(at::kLong));
  auto xc = x.contiguous(), yc = y.contiguous();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "pointcmt_knn_cpu", [&] {
    if (!cosine && dim <= 3 && num_points >= kGridMinPoints && knn_grid<scalar_t>(xc, yc, px, py, k, dist, idx))
      return;
    std::vector<scalar_t> pk;
    const std::vector<int64_t> gbase = pack_groups(xc.data_ptr<scalar_t>(), dim, px, pk);
    at::Tensor norm_x, norm_y;
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
    knn_queries(pk.data(), gbase, yc.data_ptr<scalar_t>(), num_queries, dim, px, py, k,
                nx, ny, dist.data_ptr<scalar_t>(), idx.data_ptr<int64_t>());
  });
  return {dist, idx};
}

}  // namespace
}  // namespace cpu
}  // namespace pointcmt

TORCH_LIBRARY_IMPL(pointcmt, CPU, m) { m.impl("knn", &pointcmt::cpu::knn_cpu); }
