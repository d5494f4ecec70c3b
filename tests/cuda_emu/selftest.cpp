// Self-test of the CUDA emulator (cuda_emu.h) and of the kernels of
// csrc/cuda/kernels against naive references, torch-free, so that it can be
// built with -fsanitize=address,undefined (tests/test_cuda_emu.py does).
// Prints "all passed" and returns 0, or names the first failure and returns 1.
#include "cuda_emu.h"

#include "cuda/kernels/fps.cuh"
#include "cuda/kernels/knn.cuh"
#include "cuda/kernels/radius.cuh"

#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <random>
#include <string>
#include <vector>

namespace {

int failures = 0;

void check(bool ok, const std::string& what) {
  if (!ok) {
    std::printf("FAILED: %s\n", what.c_str());
    ++failures;
  }
}

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

// ------------------------------------------------------------- emulator kernels
__global__ void rotate_through_shared(int* out) {
  __shared__ int buf[96];
  const int t = threadIdx.x;
  buf[t] = t * 10;
  __syncthreads();
  out[t] = buf[(t + 1) % blockDim.x];
}

__global__ void shuffles(long long* down, double* xor_out, unsigned int* ballot) {
  const int t = threadIdx.x, lane = t % 32;
  down[t] = __shfl_down_sync(0xFFFFFFFFu, static_cast<long long>(t) << 33, 3);
  xor_out[t] = __shfl_xor_sync(0xFFFFFFFFu, 0.5 + t, 1);
  ballot[t] = __ballot_sync(0xFFFFFFFFu, lane % 4 == 0);
  __syncwarp();
}

__global__ void early_return_then_barrier(int* out) {
  __shared__ int total;
  if (threadIdx.x == 0) total = 0;
  __syncthreads();
  if (threadIdx.x >= 40) return;       // these leave both barriers
  atomicAdd(&total, 1);
  __syncthreads();
  out[threadIdx.x] = total;
}

__global__ void atomic_max_key(unsigned long long* out) {
  __shared__ unsigned long long best;
  if (threadIdx.x == 0) best = 0;
  __syncthreads();
  atomicMax(&best, static_cast<unsigned long long>((threadIdx.x * 7919u) % 1000u));
  __syncthreads();
  if (threadIdx.x == 0) *out = best;
}

__global__ void mixed_barriers() {
  if (threadIdx.x % 32 == 0) __syncthreads(); else __syncwarp();
}

__global__ void different_warp_intrinsics() {
  if (threadIdx.x == 0) __syncwarp(); else (void)__ballot_sync(0xFFFFFFFFu, 1);
}

__global__ void shuffle_from_returned_lane(int* out) {
  if (threadIdx.x == 5) return;
  out[threadIdx.x] = __shfl_down_sync(0xFFFFFFFFu, static_cast<int>(threadIdx.x), 1);
}

__global__ void grid_indices(int* out) {
  out[blockIdx.x * blockDim.x + threadIdx.x] = static_cast<int>(blockIdx.x * 1000 + threadIdx.x + gridDim.x);
}

void emulator_checks(uint64_t seed) {
  const std::string s = " (seed " + std::to_string(seed) + ")";
  cuda_emu::set_seed(seed);
  std::vector<int> out(96, -1);
  cuda_emu::launcher(dim3(1), dim3(96), &rotate_through_shared)(out.data());
  for (int t = 0; t < 96; ++t) check(out[t] == ((t + 1) % 96) * 10, "__syncthreads orders shared memory" + s);

  std::vector<long long> down(64);
  std::vector<double> xr(64);
  std::vector<unsigned int> ballot(64);
  cuda_emu::launcher(dim3(1), dim3(64), &shuffles)(down.data(), xr.data(), ballot.data());
  for (int t = 0; t < 64; ++t) {
    const int lane = t % 32;
    const long long want = static_cast<long long>(lane + 3 < 32 ? t + 3 : t) << 33;
    check(down[t] == want, "__shfl_down_sync on 64-bit values within the warp" + s);
    check(xr[t] == 0.5 + (t ^ 1), "__shfl_xor_sync on doubles" + s);
    check(ballot[t] == 0x11111111u, "__ballot_sync" + s);
  }

  std::vector<int> counts(64, -1);
  cuda_emu::launcher(dim3(1), dim3(64), &early_return_then_barrier)(counts.data());
  for (int t = 0; t < 40; ++t) check(counts[t] == 40, "returned threads leave the barrier" + s);
  for (int t = 40; t < 64; ++t) check(counts[t] == -1, "returned threads write nothing" + s);

  unsigned long long best = 0;
  cuda_emu::launcher(dim3(1), dim3(256), &atomic_max_key)(&best);
  unsigned long long want_best = 0;
  for (unsigned int t = 0; t < 256; ++t) want_best = std::max<unsigned long long>(want_best, (t * 7919u) % 1000u);
  check(best == want_best, "atomicMax" + s);

  std::vector<int> ids(3 * 40, -1);
  cuda_emu::launcher(dim3(3), dim3(40), &grid_indices)(ids.data());
  for (int b = 0; b < 3; ++b)
    for (int t = 0; t < 40; ++t) check(ids[b * 40 + t] == b * 1000 + t + 3, "blockIdx / threadIdx / gridDim" + s);

  check(error_of([] { cuda_emu::launcher(dim3(1), dim3(64), &mixed_barriers)(); }).find("deadlock") !=
            std::string::npos, "a warp split between __syncthreads and a warp intrinsic is reported" + s);
  check(error_of([] { cuda_emu::launcher(dim3(1), dim3(32), &different_warp_intrinsics)(); })
                .find("different warp intrinsics") != std::string::npos,
        "lanes at different warp intrinsics are reported" + s);
  std::vector<int> junk(32);
  check(error_of([&] { cuda_emu::launcher(dim3(1), dim3(32), &shuffle_from_returned_lane)(junk.data()); })
                .find("has returned") != std::string::npos,
        "a shuffle that reads a returned lane is reported" + s);
}

// ------------------------------------------------------------- kernels vs naive
template <typename T>
T sq(const T* a, const T* b, int d) {
  T acc = (a[0] - b[0]) * (a[0] - b[0]);
  for (int i = 1; i < d; ++i) acc = acc + (a[i] - b[i]) * (a[i] - b[i]);
  return acc;
}

template <typename T>
void kernel_checks(uint64_t seed) {
  const std::string s = std::string(sizeof(T) == 4 ? " f32" : " f64") + " (seed " + std::to_string(seed) + ")";
  cuda_emu::set_seed(seed);
  std::mt19937 gen(static_cast<unsigned>(seed) + 11);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  const std::vector<int64_t> sizes = {37, 1, 70};
  const int dim = 3;
  std::vector<int64_t> ptr = {0};
  for (int64_t n : sizes) ptr.push_back(ptr.back() + n);
  const int64_t total = ptr.back(), clouds = static_cast<int64_t>(sizes.size());
  std::vector<T> x(static_cast<size_t>(total * dim));
  for (auto& v : x) v = static_cast<T>(std::floor(u(gen) * 8) / 8);   // a lattice: ties

  // FPS from point 0 of every cloud, half of each cloud (at least one)
  std::vector<int64_t> out_ptr = {0}, start(sizes.size(), 0);
  for (int64_t n : sizes) out_ptr.push_back(out_ptr.back() + std::max<int64_t>(1, n / 2));
  std::vector<int64_t> got(static_cast<size_t>(out_ptr.back()), -1), want;
  std::vector<T> scratch(static_cast<size_t>(total));
  pointcmt::cuda::fps_kernels::launch<T>(x.data(), ptr.data(), out_ptr.data(), start.data(), clouds, total, dim,
                                         out_ptr.back(), scratch.data(), got.data(), nullptr);
  for (size_t b = 0; b < sizes.size(); ++b) {
    const int64_t first = ptr[b], n = sizes[b];
    std::vector<T> dist(static_cast<size_t>(n), std::numeric_limits<T>::infinity());
    int64_t cur = 0;
    for (int64_t step = 0; step < out_ptr[b + 1] - out_ptr[b]; ++step) {
      want.push_back(first + cur);
      int64_t best = 0;
      for (int64_t j = 0; j < n; ++j) {
        dist[j] = std::min(dist[j], sq(&x[(first + j) * dim], &x[(first + cur) * dim], dim));
        if (dist[j] > dist[best]) best = j;             // ties to the lowest index
      }
      cur = best;
    }
  }
  check(got == want, "fps against the naive algorithm" + s);

  // kNN, k = 5 (some clouds smaller), and radius r = 0.3 with at most 6
  const int64_t k = 5, max_num = 6;
  std::vector<T> dist(static_cast<size_t>(total * k), std::numeric_limits<T>::infinity()), norms_x(total),
      norms_y(total);
  std::vector<int64_t> idx(static_cast<size_t>(total * k), -1), rad(static_cast<size_t>(total * max_num), -1);
  pointcmt::cuda::knn_kernels::launch<T>(x.data(), x.data(), ptr.data(), ptr.data(), clouds, total, total, dim, k,
                                         false, norms_x.data(), norms_y.data(), dist.data(), idx.data(), nullptr);
  const T r2 = static_cast<T>(0.3 * 0.3);
  pointcmt::cuda::radius_kernels::launch<T>(x.data(), x.data(), ptr.data(), ptr.data(), clouds, total, total, dim,
                                            r2, max_num, rad.data(), nullptr);
  for (size_t b = 0; b < sizes.size(); ++b) {
    for (int64_t i = ptr[b]; i < ptr[b + 1]; ++i) {
      std::vector<int64_t> order(static_cast<size_t>(sizes[b]));
      std::iota(order.begin(), order.end(), ptr[b]);
      std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t c) {
        return sq(&x[a * dim], &x[i * dim], dim) < sq(&x[c * dim], &x[i * dim], dim);
      });
      for (int64_t s2 = 0; s2 < k; ++s2) {
        const int64_t w = s2 < static_cast<int64_t>(order.size()) ? order[s2] : -1;
        check(idx[i * k + s2] == w, "knn against a stable sort" + s);
      }
      int64_t found = 0;
      for (int64_t j = ptr[b]; j < ptr[b + 1] && found < max_num; ++j)
        if (sq(&x[j * dim], &x[i * dim], dim) < r2) check(rad[i * max_num + found++] == j, "radius" + s);
      for (int64_t s2 = found; s2 < max_num; ++s2) check(rad[i * max_num + s2] == -1, "radius padding" + s);
    }
  }
}

}  // namespace

int main() {
  for (uint64_t seed : {0ull, 1ull, 5ull}) {
    emulator_checks(seed);
    kernel_checks<float>(seed);
    kernel_checks<double>(seed);
  }
  if (failures) {
    std::printf("%d checks failed\n", failures);
    return 1;
  }
  std::printf("all passed\n");
  return 0;
}
