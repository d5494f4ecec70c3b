// Max over gathered rows, CPU (the dense EdgeConv whose MLP is a single linear
// layer, pointcmt_pyg/models/_dense.py): out[m, c] = max over the valid slots
// k of values[slots[m, k], c], and arg[m, c] the row reaching it, from the
// first slot that does. The (M, K, C) block of gathered rows is never built:
// each centre reads its K rows of `values` in place (N x C, small enough to
// stay in cache for one cloud batch). Centres m in parallel (parallel_chunks);
// the channel loop is the vectorised compare-and-select of slot_max_cpu.cpp.
// A NaN wins (the first NaN), as in torch.max; a centre without a valid slot
// gets 0 and arg -1. The backward (a scatter-add of the gradient to the arg
// rows) is torch's scatter_add in pointcmt_pyg/ops/gather_max.py.
#include <torch/library.h>

#include <atomic>
#include <vector>

#include "cpu/common.h"
#include "cpu/parallel.h"

namespace pointcmt {
namespace cpu {
namespace {

// One centre: its K slot indices in `slots_row` (-1 = empty). Returns false
// when a slot indexes past the N rows of `values` (nothing written then).
template <typename scalar_t>
POINTCMT_MULTIVERSION bool max_gathered(const scalar_t* __restrict values, int64_t num_rows,
                                        const int64_t* __restrict slots_row, int64_t num_slots, int64_t channels,
                                        scalar_t* __restrict out, int64_t* __restrict arg,
                                        int32_t* __restrict slot32) {
  int64_t first = 0;
  while (first < num_slots && slots_row[first] < 0) ++first;
  for (int64_t k = first; k < num_slots; ++k) {
    if (slots_row[k] >= num_rows) return false;
  }
  if (first == num_slots) {
    for (int64_t c = 0; c < channels; ++c) {
      out[c] = scalar_t(0);
      arg[c] = -1;
    }
    return true;
  }
  const scalar_t* row0 = values + slots_row[first] * channels;
  const int32_t first32 = static_cast<int32_t>(first);
  for (int64_t c = 0; c < channels; ++c) {
    out[c] = row0[c];
    slot32[c] = first32;
  }
  for (int64_t k = first + 1; k < num_slots; ++k) {
    const int64_t j = slots_row[k];
    if (j < 0) continue;
    const scalar_t* row = values + j * channels;
    const int32_t k32 = static_cast<int32_t>(k);
#pragma omp simd
    for (int64_t c = 0; c < channels; ++c) {
      const scalar_t v = row[c];
      const scalar_t b = out[c];
      // v > b, or v is the first NaN of the column (b != b once one is taken).
      const bool take = (v > b) | ((v != v) & (b == b));
      out[c] = take ? v : b;
      slot32[c] = take ? k32 : slot32[c];
    }
  }
  for (int64_t c = 0; c < channels; ++c) arg[c] = slots_row[slot32[c]];
  return true;
}

std::tuple<at::Tensor, at::Tensor> gather_max_cpu(const at::Tensor& values, const at::Tensor& slots) {
  TORCH_CHECK(values.device().is_cpu() && slots.device().is_cpu(),
              "pointcmt::gather_max: 'values' and 'slots' must be CPU tensors");
  TORCH_CHECK(values.dim() == 2, "pointcmt::gather_max: 'values' must have shape (N, C), got ", values.sizes());
  TORCH_CHECK(values.scalar_type() == at::kFloat || values.scalar_type() == at::kDouble,
              "pointcmt::gather_max: 'values' must be float32 or float64, got ", values.scalar_type());
  TORCH_CHECK(slots.dim() == 2 && slots.scalar_type() == at::kLong,
              "pointcmt::gather_max: 'slots' must be int64 of shape (M, K), got ", slots.scalar_type(), " ",
              slots.sizes());
  const int64_t N = values.size(0), C = values.size(1), M = slots.size(0), K = slots.size(1);
  TORCH_CHECK(K < (int64_t(1) << 31), "pointcmt::gather_max: at most 2^31 - 1 slots");
  auto out = at::empty({M, C}, values.options());
  auto arg = at::empty({M, C}, values.options().dtype(at::kLong));
  if (M == 0 || C == 0) return {out, arg};
  auto vc = values.contiguous();
  auto sc = slots.contiguous();
  std::atomic<bool> out_of_range{false};
  AT_DISPATCH_FLOATING_TYPES(vc.scalar_type(), "pointcmt_gather_max_cpu", [&] {
    const scalar_t* src = vc.data_ptr<scalar_t>();
    const int64_t* idx = sc.data_ptr<int64_t>();
    scalar_t* dst = out.data_ptr<scalar_t>();
    int64_t* arg_ptr = arg.data_ptr<int64_t>();
    parallel_chunks(M, std::max<int64_t>(1, 65536 / std::max<int64_t>(1, K * C)), [&](int64_t begin, int64_t end) {
      std::vector<int32_t> slot32(static_cast<size_t>(C));
      for (int64_t m = begin; m < end; ++m) {
        if (!max_gathered<scalar_t>(src, N, idx + m * K, K, C, dst + m * C, arg_ptr + m * C, slot32.data())) {
          out_of_range.store(true, std::memory_order_relaxed);
        }
      }
    }, K * C, 1 << 16);
  });
  TORCH_CHECK(!out_of_range.load(), "pointcmt::gather_max: 'slots' must index rows of 'values' (-1 = empty, at most ",
              N - 1, ")");
  return {out, arg};
}

}  // namespace
}  // namespace cpu
}  // namespace pointcmt

TORCH_LIBRARY_IMPL(pointcmt, CPU, m) {
  m.impl("gather_max", &pointcmt::cpu::gather_max_cpu);
}
