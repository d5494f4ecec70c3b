// serial_torch_ops and op_threads (declared, and explained, in cpu/parallel.h).
#include "cpu/parallel.h"

#include <ATen/Parallel.h>
#include <dlfcn.h>

#include <vector>

namespace pointcmt {
namespace cpu {
namespace {

// libgomp's per-thread team size, looked up at run time: this library is not
// built with -fopenmp, and torch may use another threading backend (then
// both are null and serial_torch_ops does nothing).
using SetThreads = void (*)(int);
using GetThreads = int (*)();
SetThreads omp_set() {
  static const auto fn = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "omp_set_num_threads"));
  return fn;
}
GetThreads omp_get() {
  static const auto fn = reinterpret_cast<GetThreads>(dlsym(RTLD_DEFAULT, "omp_get_max_threads"));
  return fn;
}

// Team sizes saved by serial_torch_ops(true) on this thread, innermost last.
thread_local std::vector<int> saved_threads;

}  // namespace

int64_t op_threads() {
  return saved_threads.empty() ? at::get_num_threads() : saved_threads.front();
}

void serial_torch_ops(bool enter) {
  const SetThreads set = omp_set();
  const GetThreads get = omp_get();
  if (set == nullptr || get == nullptr) return;
  if (enter) {
    saved_threads.push_back(get());
    set(1);
  } else if (!saved_threads.empty()) {
    set(saved_threads.back());
    saved_threads.pop_back();
  }
}

}  // namespace cpu
}  // namespace pointcmt
