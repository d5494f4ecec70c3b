// Max over the rows of each segment of a CSR layout, CPU (the dense students'
// grouping, pointcmt_pyg/models/_dense.py): src (E, C) and ptr (M + 1) ->
// values (M, C) and arg (M, C), the first row of segment m (rows ptr[m] ..
// ptr[m + 1] - 1) reaching each maximum. The neighbours of every centre are
// contiguous rows of the edge outputs, so this is slot_max without the padded
// (M, W, C) block: no -inf fill, no copy of the edges into it, and a backward
// that writes the (E, C) gradient of the edges directly instead of a block
// and a gather of its used rows. An empty segment gets value 0 and arg -1 (as
// PyG's max aggregation); a NaN wins (the first NaN), as in torch.max. Segments
// in parallel (parallel_chunks); the channel loop is the vectorised one.
#include <torch/library.h>

#include "cpu/common.h"
#include "cpu/parallel.h"

namespace pointcmt {
namespace cpu {
namespace {

void check_ptr(const at::Tensor& ptr, int64_t rows, const char* op) {
  TORCH_CHECK(ptr.device().is_cpu(), "pointcmt::", op, ": 'ptr' must be a CPU tensor");
  TORCH_CHECK(ptr.dim() == 1 && ptr.size(0) >= 1 && ptr.scalar_type() == at::kLong,
              "pointcmt::", op, ": 'ptr' must be a 1-d int64 tensor of M + 1 >= 1 offsets, got ",
              ptr.scalar_type(), " ", ptr.sizes());
  auto pc = ptr.contiguous();
  const int64_t* p = pc.data_ptr<int64_t>();
  const int64_t M = ptr.size(0) - 1;
  TORCH_CHECK(p[0] == 0 && p[M] == rows, "pointcmt::", op, ": 'ptr' must start at 0 and end at the ",
              rows, " rows of 'src', got ", p[0], " .. ", p[M]);
  for (int64_t m = 0; m < M; ++m)
    TORCH_CHECK(p[m] <= p[m + 1], "pointcmt::", op, ": 'ptr' must be non-decreasing (ptr[", m, "] = ", p[m],
                " > ptr[", m + 1, "] = ", p[m + 1], ")");
}

void check_float(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), "pointcmt::", op, ": '", name, "' must be a CPU tensor");
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble,
              "pointcmt::", op, ": '", name, "' must be float32 or float64, got ", t.scalar_type());
}

// values[c] / arg[c] over the `count` rows of one segment (row r at src + r * C,
// first row `first`). The row is tracked in an int32 buffer so that the
// compare-and-select loop vectorises with the values.
template <typename scalar_t>
POINTCMT_MULTIVERSION void max_segment(const scalar_t* __restrict src, int64_t count, int64_t channels,
                                       scalar_t* __restrict values, int32_t* __restrict row32) {
  for (int64_t c = 0; c < channels; ++c) {
    values[c] = src[c];
    row32[c] = 0;
  }
  for (int64_t r = 1; r < count; ++r) {
    const scalar_t* row = src + r * channels;
    const int32_t r32 = static_cast<int32_t>(r);
#pragma omp simd
    for (int64_t c = 0; c < channels; ++c) {
      const scalar_t v = row[c];
      const scalar_t b = values[c];
      // v > b, or v is the first NaN of the column (b != b once one is taken).
      const bool take = (v > b) | ((v != v) & (b == b));
      values[c] = take ? v : b;
      row32[c] = take ? r32 : row32[c];
    }
  }
}

// The (count, C) gradient rows of one segment: grad[c] at the row arg[c], else 0.
template <typename scalar_t>
POINTCMT_MULTIVERSION void grad_segment(const scalar_t* __restrict grad, const int64_t* __restrict arg,
                                        int64_t first, int64_t count, int64_t channels,
                                        scalar_t* __restrict out) {
  for (int64_t r = 0; r < count; ++r) {
    scalar_t* row = out + r * channels;
    const int64_t e = first + r;
#pragma omp simd
    for (int64_t c = 0; c < channels; ++c) row[c] = arg[c] == e ? grad[c] : scalar_t(0);
  }
}

std::tuple<at::Tensor, at::Tensor> segment_max_cpu(const at::Tensor& src, const at::Tensor& ptr) {
  check_float(src, "segment_max", "src");
  TORCH_CHECK(src.dim() == 2, "pointcmt::segment_max: 'src' must have shape (E, C), got ", src.sizes());
  check_ptr(ptr, src.size(0), "segment_max");
  const int64_t E = src.size(0), C = src.size(1), M = ptr.size(0) - 1;
  auto values = at::empty({M, C}, src.options());
  auto arg = at::empty({M, C}, src.options().dtype(at::kLong));
  if (M == 0 || C == 0) return {values, arg};
  auto sc = src.contiguous();
  auto pc = ptr.contiguous();
  const int64_t per_segment = std::max<int64_t>(1, E / M) * C;
  AT_DISPATCH_FLOATING_TYPES(sc.scalar_type(), "pointcmt_segment_max_cpu", [&] {
    const scalar_t* s = sc.data_ptr<scalar_t>();
    const int64_t* p = pc.data_ptr<int64_t>();
    scalar_t* val = values.data_ptr<scalar_t>();
    int64_t* idx = arg.data_ptr<int64_t>();
    parallel_chunks(M, std::max<int64_t>(1, 65536 / per_segment), [&](int64_t begin, int64_t end) {
      std::vector<int32_t> row32(static_cast<size_t>(C));
      for (int64_t m = begin; m < end; ++m) {
        const int64_t first = p[m], count = p[m + 1] - p[m];
        int64_t* out = idx + m * C;
        if (count == 0) {
          std::fill(val + m * C, val + (m + 1) * C, scalar_t(0));
          std::fill(out, out + C, int64_t(-1));
          continue;
        }
        TORCH_CHECK(count < (int64_t(1) << 31), "pointcmt::segment_max: at most 2^31 - 1 rows per segment");
        max_segment<scalar_t>(s + first * C, count, C, val + m * C, row32.data());
        for (int64_t c = 0; c < C; ++c) out[c] = first + row32[c];
      }
    }, per_segment, 1 << 16);
  });
  return {values, arg};
}

at::Tensor segment_max_backward_cpu(const at::Tensor& grad, const at::Tensor& arg, const at::Tensor& ptr,
                                    int64_t num_rows) {
  check_float(grad, "segment_max_backward", "grad");
  TORCH_CHECK(grad.dim() == 2, "pointcmt::segment_max_backward: 'grad' must have shape (M, C), got ", grad.sizes());
  TORCH_CHECK(arg.device().is_cpu() && arg.sizes() == grad.sizes() && arg.scalar_type() == at::kLong,
              "pointcmt::segment_max_backward: 'arg' must be a CPU int64 tensor of the shape of 'grad' ",
              grad.sizes());
  TORCH_CHECK(ptr.dim() == 1 && ptr.size(0) == grad.size(0) + 1,
              "pointcmt::segment_max_backward: 'ptr' must hold M + 1 = ", grad.size(0) + 1, " offsets, got ",
              ptr.sizes());
  check_ptr(ptr, num_rows, "segment_max_backward");
  const int64_t M = grad.size(0), C = grad.size(1), E = num_rows;
  auto pc = ptr.contiguous();
  auto out = at::empty({E, C}, grad.options());
  if (E == 0 || C == 0) return out;
  auto gc = grad.contiguous();
  auto ac = arg.contiguous();
  const int64_t per_segment = std::max<int64_t>(1, E / std::max<int64_t>(1, M)) * C;
  AT_DISPATCH_FLOATING_TYPES(gc.scalar_type(), "pointcmt_segment_max_backward_cpu", [&] {
    const scalar_t* g = gc.data_ptr<scalar_t>();
    const int64_t* a = ac.data_ptr<int64_t>();
    const int64_t* p = pc.data_ptr<int64_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    parallel_chunks(M, std::max<int64_t>(1, 65536 / per_segment), [&](int64_t begin, int64_t end) {
      for (int64_t m = begin; m < end; ++m)
        grad_segment<scalar_t>(g + m * C, a + m * C, p[m], p[m + 1] - p[m], C, o + p[m] * C);
    }, per_segment, 1 << 16);
  });
  return out;
}

}  // namespace
}  // namespace cpu
}  // namespace pointcmt

TORCH_LIBRARY_IMPL(pointcmt, CPU, m) {
  m.impl("segment_max", &pointcmt::cpu::segment_max_cpu);
  m.impl("segment_max_backward", &pointcmt::cpu::segment_max_backward_cpu);
}
