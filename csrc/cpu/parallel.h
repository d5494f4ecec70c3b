// The one parallel loop of the CPU point kernels (fps, knn, radius, emd):
// robust when the cores are shared with other processes.
//
// Why not at::parallel_for / an OpenMP region: a region ends at a barrier
// that waits for every thread of the team, including one the OS has not
// scheduled yet, and the threads that arrive first spin in libgomp while they
// wait. Beside another multi-threaded process (a second training run), that
// spinning takes the very core the late thread needs; `perf record` on kNN
// (32 x 1,024 points, k = 20, 2 threads, beside a 2-thread matmul loop) put
// 32 % of the samples in libgomp's wait loops against 18 % in the search,
// and the call took 2x its one-thread time (issue 10).
//
// parallel_chunks instead lets the calling thread and up to
// at::get_num_threads() - 1 helpers from torch's inter-op pool (at::launch)
// claim chunks from a shared counter. The caller waits only for chunks that
// are being worked on, and blocks (a condition variable) rather than spins. A
// helper that starts late finds nothing left and returns without touching
// the loop body, so a descheduled thread costs at most one chunk, and a busy
// or empty pool just leaves the work to the caller (no deadlock, also when
// called from a pool thread). See serial_torch_ops for the torch ops around
// the kernels.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>

namespace pointcmt {
namespace cpu {

// The torch threads of this thread's ops, as at::get_num_threads() reads them
// outside serial_torch_ops (which sets the OpenMP team of torch's own ops on
// this thread to one).
int64_t op_threads();

// The Python wrappers of the ops (pointcmt_pyg/ops/_threads.py) run their own
// torch ops (argument checks, batch -> ptr, edge construction: some 25 small
// ops per call, each an OpenMP region under torch's default settings) inside
// serial_torch_ops(true) ... serial_torch_ops(false). On the calling thread,
// it sets the size of the OpenMP teams torch forks to one (omp_set_num_threads
// is per thread), so these small ops never wait at a barrier for a thread
// the OS has not scheduled; other threads and torch's global setting are
// untouched, and our kernels still use op_threads(). Calls nest. A no-op
// when torch does not use OpenMP.
void serial_torch_ops(bool enter);

// Calls fn(begin, end) over [0, n) in chunks of at most `grain` items (see the
// file comment). Serial when one thread is allowed, when there is one chunk,
// when n * work_per_item < min_parallel_work (too little work to be worth a
// second thread), or inside another parallel region. Rethrows the first
// exception of any chunk after every started chunk has finished.
template <typename F>
void parallel_chunks(int64_t n, int64_t grain, const F& fn, int64_t work_per_item = 1,
                     int64_t min_parallel_work = 0) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  const int64_t chunks = (n + grain - 1) / grain;
  const int64_t threads = std::min<int64_t>(chunks, op_threads());
  if (threads <= 1 || at::in_parallel_region() || n * work_per_item < min_parallel_work) {
    fn(int64_t(0), n);
    return;
  }
  struct State {
    std::atomic<int64_t> next{0};
    int64_t done = 0;  // finished chunks, under mutex
    std::mutex mutex;
    std::condition_variable finished;
    std::exception_ptr error;
  };
  auto state = std::make_shared<State>();
  const F* fn_ptr = &fn;
  auto worker = [state, fn_ptr, n, grain, chunks]() {
    while (true) {
      const int64_t c = state->next.fetch_add(1);
      if (c >= chunks) return;  // nothing left: never touches fn again
      std::exception_ptr error;
      try {
        (*fn_ptr)(c * grain, std::min(n, (c + 1) * grain));
      } catch (...) {
        error = std::current_exception();
      }
      std::lock_guard<std::mutex> lock(state->mutex);
      if (error && !state->error) state->error = error;
      if (++state->done == chunks) state->finished.notify_all();
    }
  };
  for (int64_t t = 1; t < threads; ++t) at::launch(worker);
  worker();
  std::unique_lock<std::mutex> lock(state->mutex);
  state->finished.wait(lock, [&] { return state->done == chunks; });
  if (state->error) std::rethrow_exception(state->error);
}

// The threads of one op, passed to the stages of a search (grid build, query
// order, queries): run(n, grain, fn) is parallel_chunks.
class Team {
 public:
  template <typename F>
  void run(int64_t n, int64_t grain, const F& fn) {
    parallel_chunks(n, grain, fn);
  }
};

}  // namespace cpu
}  // namespace pointcmt
