// A CPU emulator for the device code of csrc/cuda/kernels: it runs a kernel
// unchanged, one ucontext fiber per CUDA thread, the blocks of a grid one
// after another.
//
// * __syncthreads() is a block barrier; warp intrinsics (__shfl_*_sync,
//   __syncwarp, __ballot_sync) are a barrier of the 32 lanes of a warp that
//   also exchanges the lanes' values. A thread that returns leaves both
//   barriers (it no longer counts), as on the hardware. A shuffle that reads
//   a lane which has returned, a warp whose lanes wait at different barriers,
//   and a barrier nobody can pass are reported (std::runtime_error).
// * Between barriers the runnable threads run in an order shuffled by a seed
//   (set_seed), so code that relies on an order CUDA does not promise (a
//   missing __syncthreads, say) gives different results for different seeds.
// * __shared__ is `static`: one instance per kernel (and template
//   instantiation), shared by the fibers of the running block; blocks run one
//   at a time, so every block sees its own (uninitialised, as in CUDA) copy.
// * Atomics are plain read-modify-writes (one OS thread, no preemption inside
//   a call). The *_rn intrinsics are plain arithmetic: compile with
//   -ffp-contract=off so that nothing is fused, and they round like CUDA's.
//
// Only what the kernels use is here: 1-d grids and blocks, no dynamic shared
// memory, no cooperative groups. Define POINTCMT_CUDA_EMU before including the
// kernels (the CMake/Makefile targets and tests/test_cuda_emu.py do).
#pragma once

#ifndef POINTCMT_CUDA_EMU
#define POINTCMT_CUDA_EMU 1
#endif

#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CUDA_EMU_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define CUDA_EMU_ASAN 1
#endif
#if defined(CUDA_EMU_ASAN)
#include <sanitizer/common_interface_defs.h>
#endif

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __shared__ static
#define __launch_bounds__(...)

using cudaStream_t = void*;

struct dim3 {
  unsigned int x, y, z;
  dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};

namespace cuda_emu {

constexpr int kWarpSize = 32;

enum class State { kRunnable, kBlockBarrier, kWarpBarrier, kDone };

struct Fiber {
  ucontext_t context{};
  std::unique_ptr<char[]> stack;
  unsigned int tid = 0;
  State state = State::kRunnable;
  int warp_op = 0;             // which warp barrier (an id per call kind) it waits at
  unsigned int warp_mask = 0;  // its mask argument
  void* fake_stack = nullptr;  // AddressSanitizer's fake stack of this fiber
};

struct Machine {
  // launch configuration of the running kernel
  dim3 grid, block, block_idx;
  // the running block
  std::vector<Fiber> fibers;
  int current = -1;
  ucontext_t scheduler{};
  std::function<void()> body;
  // warp exchange: a lane deposits into `deposit`; a released warp's values are
  // copied to `visible`, which lanes read after the barrier.
  std::vector<uint64_t> deposit, visible;
  std::vector<unsigned char> arrived_mask_bits;
  std::mt19937_64 rng{0};
  size_t stack_size = 256 * 1024;
  std::string error;
#if defined(CUDA_EMU_ASAN)
  void* fake_stack = nullptr;
  const void* main_stack_bottom = nullptr;
  size_t main_stack_size = 0;
#endif
};

inline Machine& machine() {
  static Machine m;
  return m;
}

// Seeds the order in which the runnable threads of a block run between barriers.
inline void set_seed(uint64_t seed) { machine().rng.seed(seed); }

inline Fiber& self() { return machine().fibers[static_cast<size_t>(machine().current)]; }

inline void switch_to_scheduler() {
  Machine& m = machine();
  Fiber& f = self();
#if defined(CUDA_EMU_ASAN)
  __sanitizer_start_switch_fiber(&f.fake_stack, m.main_stack_bottom, m.main_stack_size);
#endif
  swapcontext(&f.context, &m.scheduler);
#if defined(CUDA_EMU_ASAN)
  __sanitizer_finish_switch_fiber(f.fake_stack, nullptr, nullptr);
#endif
}

inline void fiber_entry() {
  Machine& m = machine();
#if defined(CUDA_EMU_ASAN)
  __sanitizer_finish_switch_fiber(nullptr, &m.main_stack_bottom, &m.main_stack_size);
#endif
  try {
    m.body();
  } catch (const std::exception& e) {
    if (m.error.empty()) m.error = e.what();
  }
  self().state = State::kDone;
#if defined(CUDA_EMU_ASAN)
  __sanitizer_start_switch_fiber(nullptr, m.main_stack_bottom, m.main_stack_size);
#endif
  setcontext(&m.scheduler);
}

// --------------------------------------------------------------- built-ins
inline dim3 thread_idx() { return dim3(self().tid, 0, 0); }
inline dim3 block_idx() { return machine().block_idx; }
inline dim3 block_dim() { return machine().block; }
inline dim3 grid_dim() { return machine().grid; }

// --------------------------------------------------------------- barriers
inline void block_barrier() {
  self().state = State::kBlockBarrier;
  switch_to_scheduler();
}

// Deposits `value` (up to 8 bytes) for this lane and waits for the whole warp
// (the lanes that have not returned); returns after every lane deposited.
inline void warp_barrier(int op, unsigned int mask, uint64_t value) {
  Machine& m = machine();
  Fiber& f = self();
  m.deposit[f.tid] = value;
  f.state = State::kWarpBarrier;
  f.warp_op = op;
  f.warp_mask = mask;
  switch_to_scheduler();
}

template <typename T>
inline uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8, "warp exchange of at most 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  return bits;
}

template <typename T>
inline T from_bits(uint64_t bits) {
  T v;
  std::memcpy(&v, &bits, sizeof(T));
  return v;
}

// The value lane `src` of the caller's warp deposited at the barrier just passed.
template <typename T>
inline T read_lane(int src_lane, T own) {
  Machine& m = machine();
  const unsigned int warp_first = self().tid / kWarpSize * kWarpSize;
  const unsigned int src = warp_first + static_cast<unsigned int>(src_lane);
  if (src >= m.fibers.size()) return own;  // beyond the block: CUDA returns the caller's own value
  if (m.fibers[src].state == State::kDone && src != self().tid)
    throw std::runtime_error("cuda_emu: a shuffle read lane " + std::to_string(src_lane) +
                             ", which has returned");
  return from_bits<T>(m.visible[src]);
}

enum WarpOp { kShfl = 1, kSync = 2, kBallot = 3 };

// ------------------------------------------------------------------ launch
template <typename... Params, typename... Args>
void run_kernel(dim3 grid, dim3 block, void (*kernel)(Params...), Args&&... args) {
  Machine& m = machine();
  if (grid.y != 1 || grid.z != 1 || block.y != 1 || block.z != 1)
    throw std::runtime_error("cuda_emu: only 1-d grids and blocks");
  if (block.x == 0 || block.x > 1024) throw std::runtime_error("cuda_emu: block size must be in 1..1024");
  std::tuple<Params...> params(std::forward<Args>(args)...);
  m.grid = grid;
  m.block = block;
  m.error.clear();
  m.body = [&]() { std::apply(kernel, params); };
  const unsigned int n = block.x;
  m.deposit.assign(n, 0);
  m.visible.assign(n, 0);
  if (m.fibers.size() != n) {
    m.fibers = std::vector<Fiber>(n);
    for (auto& f : m.fibers) f.stack.reset(new char[m.stack_size]);
  }
  for (unsigned int bx = 0; bx < grid.x; ++bx) {
    m.block_idx = dim3(bx, 0, 0);
    for (unsigned int t = 0; t < n; ++t) {
      Fiber& f = m.fibers[t];
      f.tid = t;
      f.state = State::kRunnable;
      getcontext(&f.context);
      f.context.uc_stack.ss_sp = f.stack.get();
      f.context.uc_stack.ss_size = m.stack_size;
      f.context.uc_link = nullptr;
      makecontext(&f.context, fiber_entry, 0);
    }
    std::vector<unsigned int> order(n);
    while (true) {
      // 1. run every runnable thread, in a shuffled order, to its next barrier or its end
      order.clear();
      for (unsigned int t = 0; t < n; ++t)
        if (m.fibers[t].state == State::kRunnable) order.push_back(t);
      std::shuffle(order.begin(), order.end(), m.rng);
      for (unsigned int t : order) {
        m.current = static_cast<int>(t);
#if defined(CUDA_EMU_ASAN)
        __sanitizer_start_switch_fiber(&m.fake_stack, m.fibers[t].stack.get(), m.stack_size);
#endif
        swapcontext(&m.scheduler, &m.fibers[t].context);
#if defined(CUDA_EMU_ASAN)
        __sanitizer_finish_switch_fiber(m.fake_stack, nullptr, nullptr);
#endif
        m.current = -1;
        if (!m.error.empty()) throw std::runtime_error(m.error);
      }
      // 2. release the barriers that everyone still running has reached
      bool all_done = true, released = false;
      for (unsigned int w = 0; w * kWarpSize < n; ++w) {
        const unsigned int lo = w * kWarpSize, hi = std::min(n, lo + kWarpSize);
        int waiting = 0, live = 0, op = 0;
        bool same_op = true;
        for (unsigned int t = lo; t < hi; ++t) {
          const Fiber& f = m.fibers[t];
          if (f.state == State::kDone) continue;
          ++live;
          if (f.state == State::kWarpBarrier) {
            if (waiting > 0 && f.warp_op != op) same_op = false;
            op = f.warp_op;
            ++waiting;
          }
        }
        if (live > 0) all_done = false;
        if (waiting > 0 && waiting == live) {
          if (!same_op) throw std::runtime_error("cuda_emu: lanes of warp " + std::to_string(w) +
                                                 " wait at different warp intrinsics");
          for (unsigned int t = lo; t < hi; ++t) {
            m.visible[t] = m.deposit[t];
            if (m.fibers[t].state == State::kWarpBarrier) m.fibers[t].state = State::kRunnable;
          }
          released = true;
        }
      }
      if (all_done) break;
      if (released) continue;
      int live = 0, at_block = 0;
      for (const Fiber& f : m.fibers) {
        if (f.state == State::kDone) continue;
        ++live;
        if (f.state == State::kBlockBarrier) ++at_block;
      }
      if (at_block == live) {
        for (Fiber& f : m.fibers)
          if (f.state == State::kBlockBarrier) f.state = State::kRunnable;
        continue;
      }
      throw std::runtime_error("cuda_emu: deadlock in block " + std::to_string(bx) +
                               ": some threads wait at __syncthreads, others at a warp intrinsic");
    }
  }
  m.body = nullptr;
}

// POINTCMT_LAUNCH(grid, block, stream, kernel)(args...) expands to
// launcher(grid, block, &kernel)(args...).
template <typename... Params>
struct Launcher {
  dim3 grid, block;
  void (*kernel)(Params...);
  template <typename... Args>
  void operator()(Args&&... args) const {
    run_kernel(grid, block, kernel, std::forward<Args>(args)...);
  }
};

template <typename... Params>
Launcher<Params...> launcher(dim3 grid, dim3 block, void (*kernel)(Params...)) {
  return {grid, block, kernel};
}

}  // namespace cuda_emu

// ------------------------------------------------------------ CUDA names
#define threadIdx (::cuda_emu::thread_idx())
#define blockIdx (::cuda_emu::block_idx())
#define blockDim (::cuda_emu::block_dim())
#define gridDim (::cuda_emu::grid_dim())
#define warpSize 32

inline void __syncthreads() { ::cuda_emu::block_barrier(); }

inline void __syncwarp(unsigned int mask = 0xFFFFFFFFu) {
  ::cuda_emu::warp_barrier(::cuda_emu::kSync, mask, 0);
}

inline unsigned int __ballot_sync(unsigned int mask, int predicate) {
  ::cuda_emu::warp_barrier(::cuda_emu::kBallot, mask, predicate ? 1u : 0u);
  unsigned int bits = 0;
  for (int lane = 0; lane < ::cuda_emu::kWarpSize; ++lane) {
    const unsigned int t = ::cuda_emu::self().tid / 32 * 32 + static_cast<unsigned int>(lane);
    if (t < ::cuda_emu::machine().fibers.size() &&
        ::cuda_emu::machine().fibers[t].state != ::cuda_emu::State::kDone &&
        ::cuda_emu::machine().visible[t])
      bits |= 1u << lane;
  }
  return bits & mask;
}

template <typename T>
inline T __shfl_sync(unsigned int mask, T value, int src_lane, int width = 32) {
  ::cuda_emu::warp_barrier(::cuda_emu::kShfl, mask, ::cuda_emu::to_bits(value));
  const int lane = static_cast<int>(::cuda_emu::self().tid % 32);
  const int base = lane / width * width;
  return ::cuda_emu::read_lane(base + (src_lane % width), value);
}

template <typename T>
inline T __shfl_down_sync(unsigned int mask, T value, unsigned int delta, int width = 32) {
  ::cuda_emu::warp_barrier(::cuda_emu::kShfl, mask, ::cuda_emu::to_bits(value));
  const int lane = static_cast<int>(::cuda_emu::self().tid % 32);
  const int src = lane + static_cast<int>(delta);
  if (src >= (lane / width + 1) * width) return value;   // outside the segment: own value
  return ::cuda_emu::read_lane(src, value);
}

template <typename T>
inline T __shfl_up_sync(unsigned int mask, T value, unsigned int delta, int width = 32) {
  ::cuda_emu::warp_barrier(::cuda_emu::kShfl, mask, ::cuda_emu::to_bits(value));
  const int lane = static_cast<int>(::cuda_emu::self().tid % 32);
  const int src = lane - static_cast<int>(delta);
  if (src < lane / width * width) return value;
  return ::cuda_emu::read_lane(src, value);
}

template <typename T>
inline T __shfl_xor_sync(unsigned int mask, T value, int lane_mask, int width = 32) {
  ::cuda_emu::warp_barrier(::cuda_emu::kShfl, mask, ::cuda_emu::to_bits(value));
  const int lane = static_cast<int>(::cuda_emu::self().tid % 32);
  const int src = lane ^ lane_mask;
  if (src / width != lane / width) return value;
  return ::cuda_emu::read_lane(src, value);
}

// atomics: one OS thread runs every fiber, and a fiber never yields inside one
template <typename T>
inline T __emu_atomic(T* address, T value, T (*op)(T, T)) {
  const T old = *address;
  *address = op(old, value);
  return old;
}
inline unsigned long long atomicMax(unsigned long long* a, unsigned long long v) {
  return __emu_atomic<unsigned long long>(a, v, [](unsigned long long x, unsigned long long y) { return x > y ? x : y; });
}
inline long long atomicMax(long long* a, long long v) {
  return __emu_atomic<long long>(a, v, [](long long x, long long y) { return x > y ? x : y; });
}
inline int atomicMax(int* a, int v) {
  return __emu_atomic<int>(a, v, [](int x, int y) { return x > y ? x : y; });
}
inline int atomicMin(int* a, int v) {
  return __emu_atomic<int>(a, v, [](int x, int y) { return x < y ? x : y; });
}
inline int atomicAdd(int* a, int v) { return __emu_atomic<int>(a, v, [](int x, int y) { return x + y; }); }
inline unsigned int atomicAdd(unsigned int* a, unsigned int v) {
  return __emu_atomic<unsigned int>(a, v, [](unsigned int x, unsigned int y) { return x + y; });
}
inline unsigned long long atomicAdd(unsigned long long* a, unsigned long long v) {
  return __emu_atomic<unsigned long long>(a, v, [](unsigned long long x, unsigned long long y) { return x + y; });
}
inline float atomicAdd(float* a, float v) { return __emu_atomic<float>(a, v, [](float x, float y) { return x + y; }); }
inline double atomicAdd(double* a, double v) {
  return __emu_atomic<double>(a, v, [](double x, double y) { return x + y; });
}
inline int atomicExch(int* a, int v) { return __emu_atomic<int>(a, v, [](int, int y) { return y; }); }
inline int atomicCAS(int* a, int compare, int v) {
  const int old = *a;
  if (old == compare) *a = v;
  return old;
}
inline unsigned long long atomicCAS(unsigned long long* a, unsigned long long compare, unsigned long long v) {
  const unsigned long long old = *a;
  if (old == compare) *a = v;
  return old;
}

// rounded arithmetic (plain IEEE operations with -ffp-contract=off)
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
inline double __dsqrt_rn(double a) { return std::sqrt(a); }
inline float __double2float_rn(double a) { return static_cast<float>(a); }
inline unsigned int __float_as_uint(float a) { return ::cuda_emu::from_bits<unsigned int>(::cuda_emu::to_bits(a)); }
inline float __uint_as_float(unsigned int a) { return ::cuda_emu::from_bits<float>(a); }
inline int __float_as_int(float a) { return ::cuda_emu::from_bits<int>(::cuda_emu::to_bits(a)); }
inline float __int_as_float(int a) { return ::cuda_emu::from_bits<float>(static_cast<uint32_t>(a)); }
inline long long __double_as_longlong(double a) { return ::cuda_emu::from_bits<long long>(::cuda_emu::to_bits(a)); }
inline double __longlong_as_double(long long a) { return ::cuda_emu::from_bits<double>(static_cast<uint64_t>(a)); }
using std::fmax;
using std::fmin;
using std::nextafter;   // the float overload, as CUDA's device nextafter(float, float)
