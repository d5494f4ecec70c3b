// The real launch functions of csrc/cuda/kernels, run on the CPU emulator and
// exposed with a C ABI for tests/test_cuda_emu.py (ctypes). Buffers are the
// caller's; outputs come pre-filled exactly as the .cu wrappers fill them.
#include "cuda_emu.h"

#include "cuda/kernels/emd.cuh"
#include "cuda/kernels/fps.cuh"
#include "cuda/kernels/gather_max.cuh"
#include "cuda/kernels/knn.cuh"
#include "cuda/kernels/radius.cuh"
#include "cuda/kernels/slot_max.cuh"
#include "cuda/kernels/segment_max.cuh"

#include <string>
#include <vector>

namespace {

std::string last_error;

template <typename F>
int guarded(F&& f) {
  try {
    f();
    return 0;
  } catch (const std::exception& e) {
    last_error = e.what();
    return 1;
  }
}

template <typename scalar_t>
int fps(const scalar_t* x, const int64_t* ptr, const int64_t* out_ptr, const int64_t* start, int64_t num_clouds,
        int64_t num_points, int64_t dim, int64_t num_out, int64_t* out) {
  return guarded([&] {
    std::vector<scalar_t> dist(static_cast<size_t>(num_points));
    pointcmt::cuda::fps_kernels::launch<scalar_t>(x, ptr, out_ptr, start, num_clouds, num_points, dim, num_out,
                                                  dist.data(), out, nullptr);
  });
}

template <typename scalar_t>
int knn(const scalar_t* x, const scalar_t* y, const int64_t* ptr_x, const int64_t* ptr_y, int64_t num_clouds,
        int64_t num_points, int64_t num_queries, int64_t dim, int64_t k, int cosine, scalar_t* out_dist,
        int64_t* out_idx) {
  return guarded([&] {
    std::vector<scalar_t> norm_x(static_cast<size_t>(num_points)), norm_y(static_cast<size_t>(num_queries));
    pointcmt::cuda::knn_kernels::launch<scalar_t>(x, y, ptr_x, ptr_y, num_clouds, num_points, num_queries, dim, k,
                                                  cosine != 0, norm_x.data(), norm_y.data(), out_dist, out_idx,
                                                  nullptr);
  });
}

template <typename scalar_t>
int radius(const scalar_t* x, const scalar_t* y, const int64_t* ptr_x, const int64_t* ptr_y, int64_t num_clouds,
           int64_t num_points, int64_t num_queries, int64_t dim, double r, int64_t max_num, int64_t* out) {
  return guarded([&] {
    const scalar_t r2 = static_cast<scalar_t>(r * r);   // as radius_cuda.cu
    pointcmt::cuda::radius_kernels::launch<scalar_t>(x, y, ptr_x, ptr_y, num_clouds, num_points, num_queries, dim,
                                                     r2, max_num, out, nullptr);
  });
}

template <typename scalar_t>
int emd(const scalar_t* x, const scalar_t* y, int64_t B, int64_t n, int64_t dim, double eps, int64_t max_iters,
        scalar_t* dist, int64_t* assign, scalar_t* gap) {
  namespace ek = pointcmt::cuda::emd_kernels;
  return guarded([&] {
    std::vector<double> doubles(static_cast<size_t>(ek::scratch_doubles(B, n, dim)));
    std::vector<int> ints(static_cast<size_t>(ek::scratch_ints(B, n)));
    std::vector<unsigned long long> keys(static_cast<size_t>(ek::scratch_keys(B, n)));
    for (int64_t b = 0; b < B; ++b) gap[b] = 0;   // as the .cu (at::zeros)
    ek::launch<scalar_t>(x, y, B, static_cast<int>(n), static_cast<int>(dim), eps, max_iters,
                         ek::make_scratch(doubles.data(), ints.data(), keys.data(), B, n, dim), dist, assign, gap,
                         nullptr);
  });
}

template <typename scalar_t>
int slot_max(const scalar_t* block, int64_t m, int64_t w, int64_t c, scalar_t* values, int64_t* slot) {
  return guarded([&] {
    pointcmt::cuda::slot_max_kernels::launch_forward<scalar_t>(block, m, w, c, values, slot, nullptr);
  });
}

template <typename scalar_t>
int slot_max_backward(const scalar_t* grad, const int64_t* slot, int64_t m, int64_t w, int64_t c, scalar_t* out) {
  return guarded([&] {
    pointcmt::cuda::slot_max_kernels::launch_backward<scalar_t>(grad, slot, m, w, c, out, nullptr);
  });
}

template <typename scalar_t>
int segment_max(const scalar_t* src, const int64_t* ptr, int64_t m, int64_t c, scalar_t* values, int64_t* arg) {
  return guarded([&] {
    pointcmt::cuda::segment_max_kernels::launch_forward<scalar_t>(src, ptr, m, c, values, arg, nullptr);
  });
}

template <typename scalar_t>
int segment_max_backward(const scalar_t* grad, const int64_t* arg, const int64_t* ptr, int64_t m, int64_t c,
                         scalar_t* out) {
  return guarded([&] {
    pointcmt::cuda::segment_max_kernels::launch_backward<scalar_t>(grad, arg, ptr, m, c, out, nullptr);
  });
}

template <typename scalar_t>
int gather_max(const scalar_t* values, const int64_t* slots, int64_t m, int64_t k, int64_t c, scalar_t* out,
               int64_t* arg) {
  return guarded([&] {
    pointcmt::cuda::gather_max_kernels::launch_forward<scalar_t>(values, slots, m, k, c, out, arg, nullptr);
  });
}

}  // namespace

extern "C" {

void emu_set_seed(uint64_t seed) { cuda_emu::set_seed(seed); }
const char* emu_last_error() { return last_error.c_str(); }

int emu_fps_f32(const float* x, const int64_t* ptr, const int64_t* out_ptr, const int64_t* start, int64_t b,
                int64_t n, int64_t d, int64_t m, int64_t* out) {
  return fps<float>(x, ptr, out_ptr, start, b, n, d, m, out);
}
int emu_fps_f64(const double* x, const int64_t* ptr, const int64_t* out_ptr, const int64_t* start, int64_t b,
                int64_t n, int64_t d, int64_t m, int64_t* out) {
  return fps<double>(x, ptr, out_ptr, start, b, n, d, m, out);
}
int emu_knn_f32(const float* x, const float* y, const int64_t* px, const int64_t* py, int64_t b, int64_t n,
                int64_t q, int64_t d, int64_t k, int cosine, float* dist, int64_t* idx) {
  return knn<float>(x, y, px, py, b, n, q, d, k, cosine, dist, idx);
}
int emu_knn_f64(const double* x, const double* y, const int64_t* px, const int64_t* py, int64_t b, int64_t n,
                int64_t q, int64_t d, int64_t k, int cosine, double* dist, int64_t* idx) {
  return knn<double>(x, y, px, py, b, n, q, d, k, cosine, dist, idx);
}
int emu_radius_f32(const float* x, const float* y, const int64_t* px, const int64_t* py, int64_t b, int64_t n,
                   int64_t q, int64_t d, double r, int64_t max_num, int64_t* out) {
  return radius<float>(x, y, px, py, b, n, q, d, r, max_num, out);
}
int emu_radius_f64(const double* x, const double* y, const int64_t* px, const int64_t* py, int64_t b, int64_t n,
                   int64_t q, int64_t d, double r, int64_t max_num, int64_t* out) {
  return radius<double>(x, y, px, py, b, n, q, d, r, max_num, out);
}

int emu_emd_f32(const float* x, const float* y, int64_t b, int64_t n, int64_t d, double eps, int64_t max_iters,
                float* dist, int64_t* assign, float* gap) {
  return emd<float>(x, y, b, n, d, eps, max_iters, dist, assign, gap);
}
int emu_emd_f64(const double* x, const double* y, int64_t b, int64_t n, int64_t d, double eps, int64_t max_iters,
                double* dist, int64_t* assign, double* gap) {
  return emd<double>(x, y, b, n, d, eps, max_iters, dist, assign, gap);
}

int emu_slot_max_f32(const float* block, int64_t m, int64_t w, int64_t c, float* values, int64_t* slot) {
  return slot_max<float>(block, m, w, c, values, slot);
}
int emu_slot_max_f64(const double* block, int64_t m, int64_t w, int64_t c, double* values, int64_t* slot) {
  return slot_max<double>(block, m, w, c, values, slot);
}
int emu_slot_max_backward_f32(const float* grad, const int64_t* slot, int64_t m, int64_t w, int64_t c, float* out) {
  return slot_max_backward<float>(grad, slot, m, w, c, out);
}
int emu_slot_max_backward_f64(const double* grad, const int64_t* slot, int64_t m, int64_t w, int64_t c,
                              double* out) {
  return slot_max_backward<double>(grad, slot, m, w, c, out);
}

int emu_segment_max_f32(const float* src, const int64_t* ptr, int64_t m, int64_t c, float* values, int64_t* arg) {
  return segment_max<float>(src, ptr, m, c, values, arg);
}
int emu_segment_max_f64(const double* src, const int64_t* ptr, int64_t m, int64_t c, double* values, int64_t* arg) {
  return segment_max<double>(src, ptr, m, c, values, arg);
}
int emu_segment_max_backward_f32(const float* grad, const int64_t* arg, const int64_t* ptr, int64_t m, int64_t c,
                                 float* out) {
  return segment_max_backward<float>(grad, arg, ptr, m, c, out);
}
int emu_segment_max_backward_f64(const double* grad, const int64_t* arg, const int64_t* ptr, int64_t m, int64_t c,
                                 double* out) {
  return segment_max_backward<double>(grad, arg, ptr, m, c, out);
}

int emu_gather_max_f32(const float* values, const int64_t* slots, int64_t m, int64_t k, int64_t c, float* out,
                       int64_t* arg) {
  return gather_max<float>(values, slots, m, k, c, out, arg);
}
int emu_gather_max_f64(const double* values, const int64_t* slots, int64_t m, int64_t k, int64_t c, double* out,
                       int64_t* arg) {
  return gather_max<double>(values, slots, m, k, c, out, arg);
}

}  // extern "C"
