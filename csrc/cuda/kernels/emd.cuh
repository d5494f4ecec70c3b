// Earth Mover's Distance, CUDA device code (torch-free; see device.cuh): the auction of csrc/cpu/emd_cpu.cpp with
// Jacobi bidding, one thread block per cloud pair (the whole run, every epsilon
// phase, stays inside one kernel launch; control flow is block-uniform).
//
// Each bidding round every unassigned person bids at once: a warp per person
// scans all objects for the best and second-best value c(i, j) + p_j (float64),
// and offers p_j1 + (second - best) + eps for the best object j1 through an
// atomicMax on a packed 64-bit key per object: the order-preserving bits of the
// bid (as float32) above, the complemented person index below, so the highest
// bid wins and equal keys go to the lowest person. The exact float64 bid of the
// winner becomes the price. A phase ends when everyone is assigned; then the
// per-person slacks c(i, sigma(i)) + p_sigma(i) - min_j (c(i, j) + p_j) give the
// certified gap (their sum = cost - L(p), L(p) a dual lower bound on the
// optimum), the prices are tightened (each object's price lowered by the most
// that changes no person's minimum), and the run stops when gap <= eps_rel *
// cost, else the persons with slack above the next (10x smaller) eps bid again.
// After max_iters bidding rounds the leftovers take the cheapest free objects in
// person order (a bijection; the gap stays the true bound).
//
// Costs are computed in float64 from centred float64 copies of the points, so
// the reported gap is certified up to float64 rounding for both dtypes.
#pragma once

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>

#include "cuda/kernels/device.cuh"

namespace pointcmt {
namespace cuda {
namespace emd_kernels {

constexpr int kEmdThreads = 512;
constexpr int kEmdWarps = kEmdThreads / 32;
constexpr double kEps0Fraction = 4e-3;
constexpr double kTheta = 10.0;

struct PairScratch {
  double* xt;      // (D, N) centred persons, struct of arrays
  double* yt;      // (D, N) centred objects
  double* price;   // (N)
  double* bid;     // (N) the bid of each person this round
  double* rowmin;  // (N)
  double* slack;   // (N)
  int* match;      // (N) person -> object, -1 free
  int* owner;      // (N) object -> person, -1 free
  unsigned long long* key;  // (N) packed best bid per object, 0 = none
};

__device__ __forceinline__ unsigned long long pack_bid(double bid, int person) {
  const unsigned int bits = __float_as_uint(__double2float_rn(bid));
  const unsigned int ordered = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
  return (static_cast<unsigned long long>(ordered) << 32) |
         static_cast<unsigned long long>(0xFFFFFFFFu - static_cast<unsigned int>(person));
}

__device__ __forceinline__ int unpack_person(unsigned long long key) {
  return static_cast<int>(0xFFFFFFFFu - static_cast<unsigned int>(key & 0xFFFFFFFFull));
}

// c(i, j) from struct-of-arrays points, summed over coordinates in order.
__device__ __forceinline__ double cost_at(const double* __restrict__ xt, const double* __restrict__ yt, int n,
                                          int dim, int i, int j) {
  double a = xt[i] - yt[j];
  double acc = a * a;
  for (int d = 1; d < dim; ++d) {
    a = xt[static_cast<int64_t>(d) * n + i] - yt[static_cast<int64_t>(d) * n + j];
    acc = acc + a * a;
  }
  return acc;
}

// (best, index, second) merge with ties to the lower index.
__device__ __forceinline__ void merge_two(double& v1, int& j1, double& v2, double o1, int oj, double o2) {
  if (o1 < v1 || (o1 == v1 && oj < j1)) {
    v2 = fmin(v1, o2);
    v1 = o1;
    j1 = oj;
  } else {
    v2 = fmin(v2, o1);
  }
}

__device__ __forceinline__ void warp_best_two(double& v1, int& j1, double& v2) {
  for (int offset = 16; offset > 0; offset /= 2) {
    const double o1 = __shfl_down_sync(0xFFFFFFFFu, v1, offset);
    const int oj = __shfl_down_sync(0xFFFFFFFFu, j1, offset);
    const double o2 = __shfl_down_sync(0xFFFFFFFFu, v2, offset);
    merge_two(v1, j1, v2, o1, oj, o2);
  }
}

__device__ __forceinline__ double warp_min(double v) {
  for (int offset = 16; offset > 0; offset /= 2) v = fmin(v, __shfl_down_sync(0xFFFFFFFFu, v, offset));
  return v;
}

__device__ __forceinline__ double warp_sum(double v) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xFFFFFFFFu, v, offset);
  return v;
}

__device__ __forceinline__ double warp_max(double v) {
  for (int offset = 16; offset > 0; offset /= 2) v = fmax(v, __shfl_down_sync(0xFFFFFFFFu, v, offset));
  return v;
}

// Block-wide reductions; every thread gets the result. `buf` holds kEmdWarps doubles.
enum class Reduce { kSum, kMin, kMax };

template <Reduce op>
__device__ double block_reduce(double v, double* buf) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = op == Reduce::kSum ? warp_sum(v) : (op == Reduce::kMin ? warp_min(v) : warp_max(v));
  __syncthreads();  // buf may still be read by a previous reduction
  if (lane == 0) buf[warp] = v;
  __syncthreads();
  double r = buf[0];
  for (int w = 1; w < kEmdWarps; ++w)
    r = op == Reduce::kSum ? r + buf[w] : (op == Reduce::kMin ? fmin(r, buf[w]) : fmax(r, buf[w]));
  return r;
}

template <typename scalar_t>
__global__ void __launch_bounds__(kEmdThreads)
emd_kernel(const scalar_t* __restrict__ x_all, const scalar_t* __restrict__ y_all, int n, int dim, double eps_rel,
           int64_t max_iters, PairScratch scratch, scalar_t* __restrict__ dist_all, int64_t* __restrict__ assign_all,
           scalar_t* __restrict__ gap_all) {
  __shared__ double red[kEmdWarps];
  __shared__ int s_count;
  const int b = blockIdx.x;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t base = static_cast<int64_t>(b) * n;
  const scalar_t* x = x_all + base * dim;
  const scalar_t* y = y_all + base * dim;
  const int64_t soa = static_cast<int64_t>(b) * n * dim;
  double* xt = scratch.xt + soa;
  double* yt = scratch.yt + soa;
  double* price = scratch.price + base;
  double* bid = scratch.bid + base;
  double* rowmin = scratch.rowmin + base;
  double* slack = scratch.slack + base;
  int* match = scratch.match + base;
  int* owner = scratch.owner + base;
  unsigned long long* key = scratch.key + base;

  // Bounding box: centre the points, squared diagonal for the first epsilon.
  double ext2 = 0.0;
  for (int d = 0; d < dim; ++d) {
    double lo = DBL_MAX, hi = -DBL_MAX;
    for (int i = tid; i < n; i += blockDim.x) {
      const double a = static_cast<double>(x[static_cast<int64_t>(i) * dim + d]);
      const double c = static_cast<double>(y[static_cast<int64_t>(i) * dim + d]);
      lo = fmin(lo, fmin(a, c));
      hi = fmax(hi, fmax(a, c));
    }
    lo = block_reduce<Reduce::kMin>(lo, red);
    hi = block_reduce<Reduce::kMax>(hi, red);
    const double centre = 0.5 * (lo + hi);
    ext2 += (hi - lo) * (hi - lo);
    for (int i = tid; i < n; i += blockDim.x) {
      xt[static_cast<int64_t>(d) * n + i] = static_cast<double>(x[static_cast<int64_t>(i) * dim + d]) - centre;
      yt[static_cast<int64_t>(d) * n + i] = static_cast<double>(y[static_cast<int64_t>(i) * dim + d]) - centre;
    }
  }
  for (int i = tid; i < n; i += blockDim.x) {
    price[i] = 0.0;
    match[i] = -1;
    owner[i] = -1;
    key[i] = 0ull;
    slack[i] = 0.0;
  }
  __syncthreads();

  double gap = 0.0;
  if (n == 1 || ext2 == 0.0) {  // any bijection is optimal
    for (int i = tid; i < n; i += blockDim.x) match[i] = i;
    __syncthreads();
  } else {
    double eps = ext2 * kEps0Fraction;
    int64_t rounds = 0;
    while (true) {
      // ---------------------------------------------------------- bidding
      bool exhausted = false;
      while (true) {
        if (tid == 0) s_count = 0;
        __syncthreads();
        if (rounds >= max_iters) {
          // count the free persons to know whether the budget cut the phase short
          for (int i = tid; i < n; i += blockDim.x)
            if (match[i] < 0) atomicAdd(&s_count, 1);
          __syncthreads();
          exhausted = s_count > 0;
          __syncthreads();
          break;
        }
        for (int i = warp; i < n; i += kEmdWarps) {
          if (match[i] >= 0) continue;  // warp-uniform
          double v1 = DBL_MAX, v2 = DBL_MAX;
          int j1 = n;
          for (int j = lane; j < n; j += 32) {
            const double v = cost_at(xt, yt, n, dim, i, j) + price[j];
            if (v < v1) {
              v2 = v1;
              v1 = v;
              j1 = j;
            } else if (v < v2) {
              v2 = v;
            }
          }
          warp_best_two(v1, j1, v2);
          if (lane == 0) {
            const double offer = price[j1] + (v2 - v1) + eps;
            bid[i] = offer;
            atomicMax(&key[j1], pack_bid(offer, i));
            atomicAdd(&s_count, 1);
          }
        }
        __syncthreads();
        const int bidders = s_count;
        __syncthreads();
        if (bidders == 0) break;
        ++rounds;
        for (int j = tid; j < n; j += blockDim.x) {
          const unsigned long long k = key[j];
          if (k == 0ull) continue;
          const int winner = unpack_person(k);
          const int old = owner[j];
          if (old >= 0) match[old] = -1;
          owner[j] = winner;
          match[winner] = j;
          price[j] = bid[winner];
          key[j] = 0ull;
        }
        __syncthreads();
      }
      if (exhausted) {  // cheapest free object for each leftover person, in order
        if (warp == 0) {
          for (int i = 0; i < n; ++i) {
            if (match[i] >= 0) continue;
            double best = DBL_MAX;
            int best_j = n;
            for (int j = lane; j < n; j += 32) {
              if (owner[j] >= 0) continue;
              const double c = cost_at(xt, yt, n, dim, i, j);
              if (c < best) {
                best = c;
                best_j = j;
              }
            }
            for (int offset = 16; offset > 0; offset /= 2) {
              const double oc = __shfl_down_sync(0xFFFFFFFFu, best, offset);
              const int oj = __shfl_down_sync(0xFFFFFFFFu, best_j, offset);
              if (oc < best || (oc == best && oj < best_j)) {
                best = oc;
                best_j = oj;
              }
            }
            if (lane == 0) {
              owner[best_j] = i;
              match[i] = best_j;
            }
            __syncwarp();
          }
        }
        __syncthreads();
      }
      // --------------------------------------------------- certification
      double part_cost = 0.0;
      for (int i = tid; i < n; i += blockDim.x) part_cost += cost_at(xt, yt, n, dim, i, match[i]);
      const double cost = block_reduce<Reduce::kSum>(part_cost, red);
      for (int i = warp; i < n; i += kEmdWarps) {
        double m = DBL_MAX;
        for (int j = lane; j < n; j += 32) m = fmin(m, cost_at(xt, yt, n, dim, i, j) + price[j]);
        m = warp_min(m);
        if (lane == 0) {
          const int j = match[i];
          rowmin[i] = m;
          slack[i] = fmax(cost_at(xt, yt, n, dim, i, j) + price[j] - m, 0.0);
        }
      }
      __syncthreads();
      double part = 0.0;
      for (int i = tid; i < n; i += blockDim.x) part += slack[i];
      gap = block_reduce<Reduce::kSum>(part, red);
      const double target = eps_rel * cost;
      const double floor = 1e-13 * fmax(cost / n, 1e-6 * ext2) + 1e-300;
      if (gap > target) {  // tighten: lower each price as far as no person's minimum moves
        for (int j = warp; j < n; j += kEmdWarps) {
          const int i = owner[j];
          if (slack[i] <= 0.0) continue;  // warp-uniform
          double reach = DBL_MAX;
          for (int k = lane; k < n; k += 32) reach = fmin(reach, cost_at(xt, yt, n, dim, k, j) - rowmin[k]);
          reach = warp_min(reach);
          if (lane == 0) {
            const double delta = fmin(reach + price[j], slack[i]);
            if (delta > 0.0) {
              price[j] -= delta;
              slack[i] -= delta;
            }
          }
        }
        __syncthreads();
        part = 0.0;
        for (int i = tid; i < n; i += blockDim.x) part += slack[i];
        gap = block_reduce<Reduce::kSum>(part, red);
      }
      if (exhausted || gap <= target || eps <= floor) break;
      // ------------------------------------------------------ next phase
      eps = fmax(eps / kTheta, floor);
      double low = DBL_MAX;
      for (int j = tid; j < n; j += blockDim.x) low = fmin(low, price[j]);
      const double shift = block_reduce<Reduce::kMin>(low, red);
      for (int j = tid; j < n; j += blockDim.x) price[j] -= shift;
      for (int i = tid; i < n; i += blockDim.x) {
        if (slack[i] > eps) {
          owner[match[i]] = -1;
          match[i] = -1;
        }
      }
      __syncthreads();
    }
  }

  // Outputs: squared distance in the points' dtype, assignment, gap rounded up.
  for (int i = tid; i < n; i += blockDim.x) {
    const int j = match[i];
    dist_all[base + i] = sqdist(x + static_cast<int64_t>(i) * dim, y + static_cast<int64_t>(j) * dim, dim);
    assign_all[base + i] = j;
  }
  if (tid == 0) {
    scalar_t g = static_cast<scalar_t>(fmax(gap, 0.0));
    if (static_cast<double>(g) < gap) g = nextafter(g, static_cast<scalar_t>(HUGE_VAL));
    gap_all[b] = g;
  }
}

// Scratch sizes of a launch for B pairs of n points in dim coordinates: doubles
// (centred coordinates, prices, bids, row minima, slacks), ints (match, owner)
// and 64-bit keys. The caller allocates them and fills a PairScratch.
inline int64_t scratch_doubles(int64_t B, int64_t n, int64_t dim) { return 2 * B * dim * n + 4 * B * n; }
inline int64_t scratch_ints(int64_t B, int64_t n) { return 2 * B * n; }
inline int64_t scratch_keys(int64_t B, int64_t n) { return B * n; }

// Carves the three scratch buffers into the per-field arrays of PairScratch.
inline PairScratch make_scratch(double* doubles, int* ints, unsigned long long* keys, int64_t B, int64_t n,
                                int64_t dim) {
  PairScratch s;
  s.xt = doubles;
  s.yt = s.xt + B * dim * n;
  s.price = s.yt + B * dim * n;
  s.bid = s.price + B * n;
  s.rowmin = s.bid + B * n;
  s.slack = s.rowmin + B * n;
  s.match = ints;
  s.owner = s.match + B * n;
  s.key = keys;
  return s;
}

// The launch: one block of kEmdThreads per pair. x, y: (B, n, dim); dist, assign:
// (B, n); gap: (B).
template <typename scalar_t>
void launch(const scalar_t* x, const scalar_t* y, int64_t B, int n, int dim, double eps_rel, int64_t max_iters,
            PairScratch scratch, scalar_t* dist, int64_t* assign, scalar_t* gap, cudaStream_t stream) {
  if (B <= 0 || n <= 0) return;
  POINTCMT_LAUNCH(static_cast<unsigned int>(B), kEmdThreads, stream, emd_kernel<scalar_t>)(
      x, y, n, dim, eps_rel, max_iters, scratch, dist, assign, gap);
}

}  // namespace emd_kernels
}  // namespace cuda
}  // namespace pointcmt
