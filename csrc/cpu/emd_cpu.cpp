// Earth Mover's Distance, CPU: an exact-assignment auction (Bertsekas) with
// epsilon scaling, one cloud pair per task (pairs spread over torch's threads).
//
// Problem: min over bijections sigma of sum_i c(i, sigma(i)), c(i, j) = |x_i - y_j|^2.
// Persons are the points of x, objects the points of y, p_j the object prices.
// Every state certifies a lower bound on the optimum from the prices alone
// (LP duality, the duals being u_i = m_i and -p_j):
//   m_i = min_j (c(i, j) + p_j),   L(p) = sum_i m_i - sum_j p_j <= OPT,
// and for a bijection cost - L(p) = sum_i (c(i, sigma(i)) + p_sigma(i) - m_i),
// a sum of non-negative per-person slacks. That sum is the reported `gap`
// (computed in float64 from the float64 coordinates), an upper bound on
// cost - OPT.
//
// Phases (epsilon scaling, eps from a fraction of the squared bounding-box
// diagonal down by ~10x per phase, sooner when a phase was cheap):
//   * Gauss-Seidel bidding: one unassigned person at a time finds its best and
//     second-best object values (one vectorised pass over the objects), raises
//     the best object's price by (second - best) + eps and takes it, evicting
//     the previous owner. From the second phase on, once few persons are left,
//     forward rounds alternate with reverse rounds (unassigned objects bid for
//     persons, lowering their price), which ends the price wars of the last few
//     persons (Bertsekas & Castanon's forward/reverse auction).
//   * End of phase: per-person slacks; "tightening" then lowers each object's
//     price by the largest amount that changes no person's minimum (a reverse
//     coordinate step on the dual), which removes much of the slack for free.
//     Stop when gap <= eps_rel * cost; else the persons whose slack exceeds
//     the next eps are released and bid again.
//   * Float32 inputs bid with float32 values (prices kept in float64, a float32
//     mirror scanned), which makes the scans twice as fast; the stopping
//     decision and the reported gap are always recomputed in float64.
//   * When the bid budget (max_iters * N bids) runs out, every unassigned
//     person takes the cheapest object still free (in person order): still a
//     bijection, and the gap is still the true certified bound.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>
#include <tuple>
#include <type_traits>
#include <vector>

#include "cpu/common.h"
#include "cpu/parallel.h"

// The scans below are compiled once per instruction set, each with vectors of
// its own register width (64 bytes with AVX-512, 32 with AVX2, 16 otherwise),
// and picked at run time by cpu_isa() (common.h; POINTCMT_CPU_ISA caps it, so
// the tests run every path). One width for all targets is a trap: GCC splits
// 64-byte vectors on an AVX2-only CPU into code ~11x slower than 32-byte ones
// (measured on a 2-core EPYC without AVX-512: 32x1024 random pairs 2.16 s vs
// 0.19 s on one thread). Every path returns bitwise the same minima and index
// (exact min and compare, no FMA contraction: common.h turns it off).
#if !defined(POINTCMT_NO_MV) && defined(__GNUC__) && defined(__x86_64__)
#define EMD_X86_PATHS 1
#endif

#if defined(__GNUC__) || defined(__clang__)
#define EMD_VECTOR_EXTENSIONS 1
#ifndef EMD_UNROLL
#define EMD_UNROLL 1
#endif
#endif

namespace pointcmt {
namespace cpu {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
// First phase epsilon, as a fraction of the squared bounding-box diagonal.
constexpr double kEps0Fraction = 4e-3;
// Epsilon reduction per phase (and after a phase that needed few bids).
constexpr double kTheta = 10.0;
constexpr double kThetaCheap = 100.0;
// Reverse rounds start when at most N / kEndgame persons are unassigned.
constexpr int64_t kEndgame = 20;

#ifdef EMD_VECTOR_EXTENSIONS
// Vectors of VB bytes (GCC/Clang vector extensions).
template <typename T, int VB> struct Simd;
template <int VB> struct Simd<float, VB> {
  typedef float vec __attribute__((vector_size(VB)));
  typedef int32_t mask __attribute__((vector_size(VB)));
  static constexpr int kWidth = VB / 4;
};
template <int VB> struct Simd<double, VB> {
  typedef double vec __attribute__((vector_size(VB)));
  typedef int64_t mask __attribute__((vector_size(VB)));
  static constexpr int kWidth = VB / 8;
};
#endif

// value(j) = sum_d (pts[d * n + j] - q[d])^2 + off[j], summed in ascending d.
template <typename T>
inline T value_at(const T* __restrict pts, int64_t n, int64_t dim, const T* __restrict q,
                  const T* __restrict off, int64_t j) {
  T a = pts[j] - q[0];
  T acc = a * a;
  for (int64_t d = 1; d < dim; ++d) {
    a = pts[d * n + j] - q[d];
    acc = acc + a * a;
  }
  return acc + off[j];
}

// Smallest and second smallest value(j) over j in [0, n) and the first index of
// the smallest. DIM > 0 fixes the dimension at compile time (0: runtime `dim`).
template <typename T, int DIM, int VB>
__attribute__((always_inline)) inline void best_two_body(const T* __restrict pts, int64_t n, int64_t dim,
                                                         const T* __restrict q, const T* __restrict off,
                                                         T* __restrict w1_out, T* __restrict w2_out,
                                                         int64_t* __restrict j1_out) {
  const int64_t D = DIM > 0 ? DIM : dim;
  const T inf = std::numeric_limits<T>::infinity();
  T w1 = inf, w2 = inf;
  int64_t j1 = 0;
  int64_t j = 0;
#ifdef EMD_VECTOR_EXTENSIONS
  using V = typename Simd<T, VB>::vec;
  using M = typename Simd<T, VB>::mask;
  constexpr int W = Simd<T, VB>::kWidth;
  constexpr int U = EMD_UNROLL;  // independent accumulators hide the compare/blend latency
  V m1[U], m2[U];
  M id[U];
  M lane;
  for (int l = 0; l < W; ++l) lane[l] = l;
  for (int u = 0; u < U; ++u) {
    m1[u] = V{} + inf;
    m2[u] = m1[u];
    id[u] = M{};
  }
  for (; j + U * W <= n; j += U * W) {
    for (int u = 0; u < U; ++u) {
      const int64_t o = j + u * W;
      V c, acc;
      std::memcpy(&c, pts + o, sizeof(V));
      V a = c - q[0];
      acc = a * a;
      for (int64_t d = 1; d < D; ++d) {
        std::memcpy(&c, pts + d * n + o, sizeof(V));
        a = c - q[d];
        acc = acc + a * a;
      }
      std::memcpy(&c, off + o, sizeof(V));
      const V v = acc + c;
      const V hi = v > m1[u] ? v : m1[u];
      m2[u] = hi < m2[u] ? hi : m2[u];
      const M lt = v < m1[u];
      id[u] = lt ? (lane + static_cast<typename std::remove_reference<decltype(lane[0])>::type>(o)) : id[u];
      m1[u] = lt ? v : m1[u];
    }
  }
  for (int u = 0; u < U; ++u) {
    for (int l = 0; l < W; ++l) {
      const T a = m1[u][l];
      const int64_t ia = static_cast<int64_t>(id[u][l]);
      if (a < w1 || (a == w1 && ia < j1)) {
        w2 = w1;
        w1 = a;
        j1 = ia;
      } else if (a < w2) {
        w2 = a;
      }
      if (m2[u][l] < w2) w2 = m2[u][l];
    }
  }
#endif
  for (; j < n; ++j) {
    T a = pts[j] - q[0];
    T acc = a * a;
    for (int64_t d = 1; d < D; ++d) {
      a = pts[d * n + j] - q[d];
      acc = acc + a * a;
    }
    const T v = acc + off[j];
    if (v < w1) {
      w2 = w1;
      w1 = v;
      j1 = j;
    } else if (v < w2) {
      w2 = v;
    }
  }
  *w1_out = w1;
  *w2_out = w2;
  *j1_out = j1;
}

// min_j value(j).
template <typename T, int DIM, int VB>
__attribute__((always_inline)) inline T min_value_body(const T* __restrict pts, int64_t n, int64_t dim,
                                                       const T* __restrict q, const T* __restrict off) {
  const int64_t D = DIM > 0 ? DIM : dim;
  T best = std::numeric_limits<T>::infinity();
  int64_t j = 0;
#ifdef EMD_VECTOR_EXTENSIONS
  using V = typename Simd<T, VB>::vec;
  constexpr int W = Simd<T, VB>::kWidth;
  constexpr int U = EMD_UNROLL;
  V m[U];
  for (int u = 0; u < U; ++u) m[u] = V{} + best;
  for (; j + U * W <= n; j += U * W) {
    for (int u = 0; u < U; ++u) {
      const int64_t o = j + u * W;
      V c, acc;
      std::memcpy(&c, pts + o, sizeof(V));
      V a = c - q[0];
      acc = a * a;
      for (int64_t d = 1; d < D; ++d) {
        std::memcpy(&c, pts + d * n + o, sizeof(V));
        a = c - q[d];
        acc = acc + a * a;
      }
      std::memcpy(&c, off + o, sizeof(V));
      const V v = acc + c;
      m[u] = v < m[u] ? v : m[u];
    }
  }
  for (int u = 0; u < U; ++u)
    for (int l = 0; l < W; ++l) best = m[u][l] < best ? m[u][l] : best;
#endif
  for (; j < n; ++j) {
    T a = pts[j] - q[0];
    T acc = a * a;
    for (int64_t d = 1; d < D; ++d) {
      a = pts[d * n + j] - q[d];
      acc = acc + a * a;
    }
    const T v = acc + off[j];
    best = v < best ? v : best;
  }
  return best;
}

#define EMD_SCAN_ARGS const T *__restrict pts, int64_t n, int64_t dim, const T *__restrict q, const T *__restrict off
#ifdef EMD_X86_PATHS
template <typename T, int DIM>
__attribute__((target("avx512f"))) void best_two_avx512(EMD_SCAN_ARGS, T* w1, T* w2, int64_t* j1) {
  best_two_body<T, DIM, 64>(pts, n, dim, q, off, w1, w2, j1);
}
template <typename T, int DIM>
__attribute__((target("avx2"))) void best_two_avx2(EMD_SCAN_ARGS, T* w1, T* w2, int64_t* j1) {
  best_two_body<T, DIM, 32>(pts, n, dim, q, off, w1, w2, j1);
}
template <typename T, int DIM>
__attribute__((target("avx512f"))) T min_value_avx512(EMD_SCAN_ARGS) {
  return min_value_body<T, DIM, 64>(pts, n, dim, q, off);
}
template <typename T, int DIM>
__attribute__((target("avx2"))) T min_value_avx2(EMD_SCAN_ARGS) {
  return min_value_body<T, DIM, 32>(pts, n, dim, q, off);
}
#endif
template <typename T, int DIM>
void best_two_base(EMD_SCAN_ARGS, T* w1, T* w2, int64_t* j1) {
  best_two_body<T, DIM, 16>(pts, n, dim, q, off, w1, w2, j1);
}
template <typename T, int DIM>
T min_value_base(EMD_SCAN_ARGS) {
  return min_value_body<T, DIM, 16>(pts, n, dim, q, off);
}

// The scans at the widest vectors this CPU runs (cpu_isa(), read once).
template <typename T, int DIM>
inline void best_two(EMD_SCAN_ARGS, T* w1, T* w2, int64_t* j1) {
#ifdef EMD_X86_PATHS
  switch (cpu_isa()) {
    case CpuIsa::kAvx512:
      return best_two_avx512<T, DIM>(pts, n, dim, q, off, w1, w2, j1);
    case CpuIsa::kAvx2:
      return best_two_avx2<T, DIM>(pts, n, dim, q, off, w1, w2, j1);
    default:
      break;
  }
#endif
  best_two_base<T, DIM>(pts, n, dim, q, off, w1, w2, j1);
}

template <typename T, int DIM>
inline T min_value(EMD_SCAN_ARGS) {
#ifdef EMD_X86_PATHS
  switch (cpu_isa()) {
    case CpuIsa::kAvx512:
      return min_value_avx512<T, DIM>(pts, n, dim, q, off);
    case CpuIsa::kAvx2:
      return min_value_avx2<T, DIM>(pts, n, dim, q, off);
    default:
      break;
  }
#endif
  return min_value_base<T, DIM>(pts, n, dim, q, off);
}
#undef EMD_SCAN_ARGS

// Point sets of one pair in struct-of-arrays layout (coordinate d of point i at
// [d * n + i]), centred on the middle of their common bounding box.
template <typename T>
struct Points {
  std::vector<T> xt, yt;
};

// The auction for one pair. S is the type the bids are computed in (float for
// float32 inputs, double otherwise); certification always uses double.
template <typename S, int DIM>
class Auction {
 public:
  Auction(const Points<S>& ps, const Points<double>& pd, int64_t n, int64_t dim, double eps_rel,
          int64_t max_bids)
      : ps_(ps), pd_(pd), n_(n), dim_(dim), eps_rel_(eps_rel), max_bids_(max_bids),
        price_(n, 0.0), negu_(n, 0.0), price_s_(n, S(0)), negu_s_(n, S(0)), rowmin_(n, 0.0),
        slack_(n, 0.0), off_s_(n), off_d_(n), match_(n, -1), owner_(n, -1), q_s_(dim), q_d_(dim) {}

  // Runs the auction; fills `match` (person -> object) and returns the gap.
  double run(double ext2, int64_t* match) {
    const int64_t n = n_;
    double eps = ext2 * kEps0Fraction;
    for (int64_t i = 0; i < n; ++i) queue_.push_back(i);
    nfree_ = n;
    double gap = 0.0;
    for (int64_t phase = 1;; ++phase) {
      const int64_t bids_before = bids_;
      const bool finished = bid_phase(eps, phase > 1);
      if (!finished) {
        complete_greedily();
        primal_cost();
        gap = slacks<double>(pd_);
        if (gap > eps_rel_ * cost_) gap = tighten<double>(pd_);
        break;
      }
      const double cost = primal_cost();
      const double target = eps_rel_ * cost;
      // Below this epsilon the bids cannot resolve values any more (float32
      // scans: ~1e-7 of the typical value; float64: ~1e-13).
      const double floor = std::is_same<S, float>::value
                               ? 1e-7 * std::max(cost / static_cast<double>(n), 1e-3 * ext2)
                               : 1e-13 * std::max(cost / static_cast<double>(n), 1e-6 * ext2) + 1e-300;
      const bool at_floor = eps <= floor;
      gap = slacks<S>(ps_);
      if (gap > target) gap = tighten<S>(ps_);
      if (gap <= target || at_floor) {
        if (!std::is_same<S, double>::value) {  // certify in double
          gap = slacks<double>(pd_);
          if (gap > target) gap = tighten<double>(pd_);
        }
        if (gap <= target || at_floor) break;
      }
      // Next epsilon: ~10x smaller (100x after a cheap phase), but not much
      // below what the slack suggests is needed (the gap shrinks ~ with eps).
      const bool cheap = static_cast<double>(bids_ - bids_before) < 0.3 * static_cast<double>(n);
      double next = eps / (cheap ? kThetaCheap : kTheta);
      next = std::max(next, std::min(0.5 * eps, 0.5 * eps * target / gap));
      eps = std::max(next, floor);
      release(eps);
    }
    for (int64_t i = 0; i < n; ++i) match[i] = match_[i];
    return std::max(gap, 0.0);
  }

 private:
  void set_price(int64_t j, double p) {
    price_[j] = p;
    price_s_[j] = static_cast<S>(p);
  }
  void set_negu(int64_t i, double v) {
    negu_[i] = v;
    negu_s_[i] = static_cast<S>(v);
  }
  void query_x(int64_t i) {
    for (int64_t d = 0; d < dim_; ++d) q_s_[d] = ps_.xt[d * n_ + i];
  }
  void query_y(int64_t j) {
    for (int64_t d = 0; d < dim_; ++d) q_s_[d] = ps_.yt[d * n_ + j];
  }

  // Person i bids for its best object; returns the evicted person or -1.
  int64_t forward_bid(int64_t i, double eps) {
    S w1, w2;
    int64_t j1;
    query_x(i);
    best_two<S, DIM>(ps_.yt.data(), n_, dim_, q_s_.data(), price_s_.data(), &w1, &w2, &j1);
    ++bids_;
    const double raise = static_cast<double>(w2) - static_cast<double>(w1) + eps;
    set_price(j1, price_[j1] + raise);
    set_negu(i, -(static_cast<double>(w2) + eps));  // person level u_i = c(i, j1) + p_j1
    const int64_t prev = owner_[j1];
    if (prev >= 0) match_[prev] = -1; else --nfree_;
    owner_[j1] = i;
    match_[i] = j1;
    return prev;
  }

  // Free object j bids for its best person (values c(i, j) - u_i); returns the
  // object that person leaves or -1.
  int64_t reverse_bid(int64_t j, double eps) {
    S b1, b2;
    int64_t i1;
    query_y(j);
    best_two<S, DIM>(ps_.xt.data(), n_, dim_, q_s_.data(), negu_s_.data(), &b1, &b2, &i1);
    ++bids_;
    set_negu(i1, negu_[i1] + (static_cast<double>(b2) - static_cast<double>(b1)) + eps);
    set_price(j, -(static_cast<double>(b2) + eps));
    const int64_t old = match_[i1];
    if (old >= 0) owner_[old] = -1; else --nfree_;
    owner_[j] = i1;
    match_[i1] = j;
    return old;
  }

  // Bids until every person is assigned (true) or the budget is spent (false).
  bool bid_phase(double eps, bool allow_reverse) {
    const int64_t n = n_;
    size_t qh = 0, oh = 0;
    objects_.clear();
    while (nfree_ > 0) {
      // Forward: all the way in the first phase; later until few are left,
      // then one new assignment at a time, alternating with reverse rounds.
      const bool endgame = allow_reverse && nfree_ * kEndgame <= n;
      int64_t goal = allow_reverse ? (endgame ? nfree_ - 1 : n / kEndgame) : 0;
      while (nfree_ > goal) {
        if (bids_ >= max_bids_) return false;
        if (qh >= queue_.size()) {  // refill from scratch (lazy deletion)
          queue_.clear();
          qh = 0;
          for (int64_t i = 0; i < n; ++i)
            if (match_[i] < 0) queue_.push_back(i);
        }
        const int64_t i = queue_[qh++];
        if (match_[i] >= 0) continue;
        const int64_t prev = forward_bid(i, eps);
        if (prev >= 0) queue_.push_back(prev);
      }
      if (nfree_ == 0 || !endgame) continue;
      goal = nfree_ - 1;
      while (nfree_ > goal) {
        if (bids_ >= max_bids_) return false;
        if (oh >= objects_.size()) {
          objects_.clear();
          oh = 0;
          for (int64_t j = 0; j < n; ++j)
            if (owner_[j] < 0) objects_.push_back(j);
        }
        const int64_t j = objects_[oh++];
        if (owner_[j] >= 0) continue;
        const int64_t old = reverse_bid(j, eps);
        if (old >= 0) objects_.push_back(old);
      }
    }
    queue_.clear();
    return true;
  }

  // Out of bids: each unassigned person (in order) takes the cheapest free object.
  void complete_greedily() {
    const int64_t n = n_;
    for (int64_t i = 0; i < n; ++i) {
      if (match_[i] >= 0) continue;
      for (int64_t d = 0; d < dim_; ++d) q_d_[d] = pd_.xt[d * n + i];
      double best = kInf;
      int64_t best_j = -1;
      for (int64_t j = 0; j < n; ++j) {
        if (owner_[j] >= 0) continue;
        double a = pd_.yt[j] - q_d_[0];
        double c = a * a;
        for (int64_t d = 1; d < dim_; ++d) {
          a = pd_.yt[d * n + j] - q_d_[d];
          c = c + a * a;
        }
        if (c < best) {
          best = c;
          best_j = j;
        }
      }
      owner_[best_j] = i;
      match_[i] = best_j;
    }
    nfree_ = 0;
  }

  double primal_cost() {
    const int64_t n = n_;
    double total = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t j = match_[i];
      double a = pd_.xt[i] - pd_.yt[j];
      double c = a * a;
      for (int64_t d = 1; d < dim_; ++d) {
        a = pd_.xt[d * n + i] - pd_.yt[d * n + j];
        c = c + a * a;
      }
      total += c;
    }
    cost_ = total;
    return total;
  }

  template <typename T>
  const T* prices_as() {
    if constexpr (std::is_same<T, double>::value) {
      return price_.data();
    } else {
      return price_s_.data();
    }
  }

  // rowmin_i = min_j c(i, j) + p_j and slack_i = c(i, sigma(i)) + p_sigma(i) -
  // rowmin_i in type T; returns sum_i slack_i (= cost - L(p) for a bijection).
  template <typename T>
  double slacks(const Points<T>& pts) {
    const int64_t n = n_;
    const T* p = prices_as<T>();
    std::vector<T>& q = query_buffer<T>();
    double gap = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t d = 0; d < dim_; ++d) q[d] = pts.xt[d * n + i];
      const T m = min_value<T, DIM>(pts.yt.data(), n, dim_, q.data(), p);
      const T own = value_at<T>(pts.yt.data(), n, dim_, q.data(), p, match_[i]);
      rowmin_[i] = static_cast<double>(m);
      slack_[i] = std::max(static_cast<double>(own) - static_cast<double>(m), 0.0);
      gap += slack_[i];
    }
    return gap;
  }

  // Lowers every object's price by the largest amount that leaves every
  // person's minimum unchanged: delta_j = min_k (c(k, j) + p_j - rowmin_k),
  // which for the owner k = sigma^-1(j) is its slack. L(p) rises by sum delta.
  template <typename T>
  double tighten(const Points<T>& pts) {
    const int64_t n = n_;
    std::vector<T>& neg = offset_buffer<T>();
    std::vector<T>& q = query_buffer<T>();
    for (int64_t k = 0; k < n; ++k) neg[k] = static_cast<T>(-rowmin_[k]);
    double gap = 0.0;
    for (int64_t j = 0; j < n; ++j) {
      const int64_t i = owner_[j];
      if (slack_[i] > 0.0) {
        for (int64_t d = 0; d < dim_; ++d) q[d] = pts.yt[d * n + j];
        // min_k c(k, j) - rowmin_k, in T like rowmin itself
        const double reach = static_cast<double>(min_value<T, DIM>(pts.xt.data(), n, dim_, q.data(), neg.data()));
        const double delta = std::min(reach + price_[j], slack_[i]);
        if (delta > 0.0) {
          set_price(j, price_[j] - delta);
          slack_[i] -= delta;
        }
      }
      gap += slack_[i];
    }
    // The new prices are exact in T = double; in float the next double
    // certification recomputes everything from the prices anyway.
    return gap;
  }

  template <typename T>
  std::vector<T>& query_buffer() {
    if constexpr (std::is_same<T, double>::value) return q_d_; else return q_s_;
  }
  template <typename T>
  std::vector<T>& offset_buffer() {
    if constexpr (std::is_same<T, double>::value) return off_d_; else return off_s_;
  }

  // Releases the persons whose slack exceeds eps; sets every person's level
  // (its current value, within eps of its minimum) and shifts all prices so
  // the smallest is 0 (duals are defined up to a constant; keeps floats small).
  void release(double eps) {
    const int64_t n = n_;
    double shift = kInf;
    for (int64_t j = 0; j < n; ++j) shift = std::min(shift, price_[j]);
    for (int64_t j = 0; j < n; ++j) set_price(j, price_[j] - shift);
    for (int64_t i = 0; i < n; ++i) {
      if (slack_[i] > eps) {
        owner_[match_[i]] = -1;
        match_[i] = -1;
        ++nfree_;
        queue_.push_back(i);
        set_negu(i, -(rowmin_[i] - shift));
      } else {
        set_negu(i, -(rowmin_[i] + slack_[i] - shift));
      }
    }
  }

  const Points<S>& ps_;
  const Points<double>& pd_;
  const int64_t n_, dim_;
  const double eps_rel_;
  const int64_t max_bids_;
  std::vector<double> price_, negu_;
  std::vector<S> price_s_, negu_s_;
  std::vector<double> rowmin_, slack_;
  std::vector<S> off_s_;
  std::vector<double> off_d_;
  std::vector<int64_t> match_, owner_, queue_, objects_;
  std::vector<S> q_s_;
  std::vector<double> q_d_;
  int64_t nfree_ = 0;
  int64_t bids_ = 0;
  double cost_ = 0.0;
};

template <typename S, int DIM>
double solve_pair(const Points<S>& ps, const Points<double>& pd, int64_t n, int64_t dim, double ext2,
                  double eps_rel, int64_t max_bids, int64_t* match) {
  Auction<S, DIM> auction(ps, pd, n, dim, eps_rel, max_bids);
  return auction.run(ext2, match);
}

// Solves pair b: x, y (n, dim) row-major; writes dist (n), match (n), gap.
template <typename scalar_t>
void emd_pair(const scalar_t* x, const scalar_t* y, int64_t n, int64_t dim, double eps_rel, int64_t max_iters,
              scalar_t* dist, int64_t* match, scalar_t* gap_out) {
  double gap = 0.0;
  // Bounding box of both sets: centre and squared diagonal.
  std::vector<double> centre(dim);
  double ext2 = 0.0;
  for (int64_t d = 0; d < dim; ++d) {
    double lo = kInf, hi = -kInf;
    for (int64_t i = 0; i < n; ++i) {
      lo = std::min(lo, static_cast<double>(x[i * dim + d]));
      hi = std::max(hi, static_cast<double>(x[i * dim + d]));
      lo = std::min(lo, static_cast<double>(y[i * dim + d]));
      hi = std::max(hi, static_cast<double>(y[i * dim + d]));
    }
    centre[d] = 0.5 * (lo + hi);
    ext2 += (hi - lo) * (hi - lo);
  }
  if (n == 1 || ext2 == 0.0) {  // a single pair, or all points equal: any bijection is optimal
    for (int64_t i = 0; i < n; ++i) match[i] = i;
  } else {
    using S = scalar_t;
    Points<double> pd;
    Points<S> ps_own;
    pd.xt.resize(dim * n);
    pd.yt.resize(dim * n);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t d = 0; d < dim; ++d) {
        pd.xt[d * n + i] = static_cast<double>(x[i * dim + d]) - centre[d];
        pd.yt[d * n + i] = static_cast<double>(y[i * dim + d]) - centre[d];
      }
    const Points<S>* ps = nullptr;
    if constexpr (std::is_same<S, double>::value) {
      ps = &pd;
    } else {
      ps_own.xt.assign(pd.xt.begin(), pd.xt.end());
      ps_own.yt.assign(pd.yt.begin(), pd.yt.end());
      ps = &ps_own;
    }
    const int64_t max_bids =
        max_iters > std::numeric_limits<int64_t>::max() / n ? std::numeric_limits<int64_t>::max() : max_iters * n;
    switch (dim) {
      case 2: gap = solve_pair<S, 2>(*ps, pd, n, dim, ext2, eps_rel, max_bids, match); break;
      case 3: gap = solve_pair<S, 3>(*ps, pd, n, dim, ext2, eps_rel, max_bids, match); break;
      default: gap = solve_pair<S, 0>(*ps, pd, n, dim, ext2, eps_rel, max_bids, match); break;
    }
  }
  for (int64_t i = 0; i < n; ++i) {
    const scalar_t* xi = x + i * dim;
    const scalar_t* yj = y + match[i] * dim;
    scalar_t a = xi[0] - yj[0];
    scalar_t acc = a * a;
    for (int64_t d = 1; d < dim; ++d) {
      a = xi[d] - yj[d];
      acc = acc + a * a;
    }
    dist[i] = acc;
  }
  // Round the bound up, never down, when it is stored in float32.
  scalar_t g = static_cast<scalar_t>(gap);
  if (static_cast<double>(g) < gap) g = std::nextafter(g, std::numeric_limits<scalar_t>::infinity());
  *gap_out = g;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> emd_cpu(const at::Tensor& x, const at::Tensor& y, double eps,
                                                       int64_t max_iters) {
  TORCH_CHECK(x.device().is_cpu() && y.device().is_cpu(), "pointcmt::emd: 'x' and 'y' must be CPU tensors");
  TORCH_CHECK(x.dim() == 3, "pointcmt::emd: 'x' must have shape (B, N, D), got ", x.sizes());
  TORCH_CHECK(x.sizes() == y.sizes(), "pointcmt::emd: 'x' and 'y' must have the same shape, got ", x.sizes(),
              " and ", y.sizes());
  TORCH_CHECK(x.scalar_type() == y.scalar_type(), "pointcmt::emd: 'x' and 'y' must have the same dtype");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "pointcmt::emd: 'x' must be float32 or float64, got ", x.scalar_type());
  TORCH_CHECK(x.size(2) >= 1, "pointcmt::emd: points need at least one coordinate");
  TORCH_CHECK(eps >= 0.0, "pointcmt::emd: 'eps' must be >= 0, got ", eps);
  TORCH_CHECK(max_iters >= 1, "pointcmt::emd: 'max_iters' must be >= 1, got ", max_iters);
  const int64_t B = x.size(0), n = x.size(1), dim = x.size(2);
  auto dist = at::empty({B, n}, x.options());
  auto assignment = at::empty({B, n}, x.options().dtype(at::kLong));
  auto gap = at::zeros({B}, x.options());
  if (B == 0 || n == 0) return {dist, assignment, gap};
  auto xc = x.contiguous();
  auto yc = y.contiguous();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "pointcmt_emd_cpu", [&] {
    const scalar_t* xp = xc.data_ptr<scalar_t>();
    const scalar_t* yp = yc.data_ptr<scalar_t>();
    scalar_t* dp = dist.data_ptr<scalar_t>();
    int64_t* ap = assignment.data_ptr<int64_t>();
    scalar_t* gp = gap.data_ptr<scalar_t>();
    // One pair per chunk, claimed dynamically (cpu/parallel.h): pairs differ in cost.
    parallel_chunks(
        B, 1,
        [&](int64_t begin, int64_t end) {
          for (int64_t b = begin; b < end; ++b)
            emd_pair<scalar_t>(xp + b * n * dim, yp + b * n * dim, n, dim, eps, max_iters, dp + b * n,
                               ap + b * n, gp + b);
        },
        /*work_per_item=*/n * n * dim, /*min_parallel_work=*/1 << 18);
  });
  return {dist, assignment, gap};
}

}  // namespace
}  // namespace cpu
}  // namespace pointcmt

TORCH_LIBRARY_IMPL(pointcmt, CPU, m) { m.impl("emd", &pointcmt::cpu::emd_cpu); }
