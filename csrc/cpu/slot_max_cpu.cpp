// Max over the slots of a padded block, CPU (the dense students' grouping,
// pointcmt_pyg/models/_dense.py): block (M, W, C) -> values (M, C) and the
// first slot w reaching each maximum, in one pass over the block instead of
// torch.max(dim=1), whose index-returning reduction over a middle axis runs
// 5-10x slower than the max alone. Rows m in parallel (parallel_chunks); the
// channel loop is the vectorised one. A NaN wins (the first NaN), as in
// torch.max. The backward writes every element of the (M, W, C) gradient once
// (no zero fill, no scatter).
#include <torch/library.h>

#include "cpu/common.h"
#include "cpu/parallel.h"

namespace pointcmt {
namespace cpu {
namespace {

void check_block(const at::Tensor& block) {
  TORCH_CHECK(block.device().is_cpu(), "pointcmt::slot_max: 'block' must be a CPU tensor");
  TORCH_CHECK(block.dim() == 3, "pointcmt::slot_max: 'block' must have shape (M, W, C), got ", block.sizes());
  TORCH_CHECK(block.size(1) >= 1, "pointcmt::slot_max: 'block' needs at least one slot (W >= 1)");
  TORCH_CHECK(block.scalar_type() == at::kFloat || block.scalar_type() == at::kDouble,
              "pointcmt::slot_max: 'block' must be float32 or float64, got ", block.scalar_type());
}

// values[c] / slot[c] over the W rows of one centre (row w at block + w * C).
// The slot is tracked in an int32 buffer so that the compare-and-select loop
// vectorises with the values; W < 2^31 is checked by the caller.
template <typename scalar_t>
POINTCMT_MULTIVERSION void max_rows(const scalar_t* __restrict block, int64_t width, int64_t channels,
                                    scalar_t* __restrict values, int32_t* __restrict slot32) {
  for (int64_t c = 0; c < channels; ++c) {
    values[c] = block[c];
    slot32[c] = 0;
  }
  for (int64_t w = 1; w < width; ++w) {
    const scalar_t* row = block + w * channels;
    const int32_t w32 = static_cast<int32_t>(w);
#pragma omp simd
    for (int64_t c = 0; c < channels; ++c) {
      const scalar_t v = row[c];
      const scalar_t b = values[c];
      // v > b, or v is the first NaN of the column (b != b once one is taken).
      const bool take = (v > b) | ((v != v) & (b == b));
      values[c] = take ? v : b;
      slot32[c] = take ? w32 : slot32[c];
    }
  }
}

// The (W, C) gradient rows of one centre: grad[c] at w == slot[c], else 0.
template <typename scalar_t>
POINTCMT_MULTIVERSION void grad_rows(const scalar_t* __restrict grad, const int64_t* __restrict slot, int64_t width,
                                     int64_t channels, scalar_t* __restrict out) {
  for (int64_t w = 0; w < width; ++w) {
    scalar_t* row = out + w * channels;
#pragma omp simd
    for (int64_t c = 0; c < channels; ++c) row[c] = slot[c] == w ? grad[c] : scalar_t(0);
  }
}

std::tuple<at::Tensor, at::Tensor> slot_max_cpu(const at::Tensor& block) {
  check_block(block);
  const int64_t M = block.size(0), W = block.size(1), C = block.size(2);
  TORCH_CHECK(W < (int64_t(1) << 31), "pointcmt::slot_max: at most 2^31 - 1 slots");
  auto values = at::empty({M, C}, block.options());
  auto slot = at::empty({M, C}, block.options().dtype(at::kLong));
  if (M == 0 || C == 0) return {values, slot};
  auto bc = block.contiguous();
  AT_DISPATCH_FLOATING_TYPES(bc.scalar_type(), "pointcmt_slot_max_cpu", [&] {
    const scalar_t* src = bc.data_ptr<scalar_t>();
    scalar_t* val = values.data_ptr<scalar_t>();
    int64_t* idx = slot.data_ptr<int64_t>();
    parallel_chunks(M, std::max<int64_t>(1, 65536 / std::max<int64_t>(1, W * C)), [&](int64_t begin, int64_t end) {
      std::vector<int32_t> slot32(static_cast<size_t>(C));
      for (int64_t m = begin; m < end; ++m) {
        max_rows<scalar_t>(src + m * W * C, W, C, val + m * C, slot32.data());
        int64_t* out = idx + m * C;
        for (int64_t c = 0; c < C; ++c) out[c] = slot32[c];
      }
    }, W * C, 1 << 16);
  });
  return {values, slot};
}

at::Tensor slot_max_backward_cpu(const at::Tensor& grad, const at::Tensor& slot, int64_t width) {
  TORCH_CHECK(grad.device().is_cpu() && slot.device().is_cpu(),
              "pointcmt::slot_max_backward: 'grad' and 'slot' must be CPU tensors");
  TORCH_CHECK(grad.dim() == 2, "pointcmt::slot_max_backward: 'grad' must have shape (M, C), got ", grad.sizes());
  TORCH_CHECK(slot.sizes() == grad.sizes() && slot.scalar_type() == at::kLong,
              "pointcmt::slot_max_backward: 'slot' must be int64 of the shape of 'grad' ", grad.sizes());
  TORCH_CHECK(grad.scalar_type() == at::kFloat || grad.scalar_type() == at::kDouble,
              "pointcmt::slot_max_backward: 'grad' must be float32 or float64, got ", grad.scalar_type());
  TORCH_CHECK(width >= 1, "pointcmt::slot_max_backward: 'width' must be >= 1, got ", width);
  const int64_t M = grad.size(0), C = grad.size(1), W = width;
  auto out = at::empty({M, W, C}, grad.options());
  if (M == 0 || C == 0) return out;
  auto gc = grad.contiguous();
  auto sc = slot.contiguous();
  AT_DISPATCH_FLOATING_TYPES(gc.scalar_type(), "pointcmt_slot_max_backward_cpu", [&] {
    const scalar_t* g = gc.data_ptr<scalar_t>();
    const int64_t* s = sc.data_ptr<int64_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    parallel_chunks(M, std::max<int64_t>(1, 65536 / std::max<int64_t>(1, W * C)), [&](int64_t begin, int64_t end) {
      for (int64_t m = begin; m < end; ++m) grad_rows<scalar_t>(g + m * C, s + m * C, W, C, o + m * W * C);
    }, W * C, 1 << 16);
  });
  return out;
}

}  // namespace
}  // namespace cpu
}  // namespace pointcmt

TORCH_LIBRARY_IMPL(pointcmt, CPU, m) {
  m.impl("slot_max", &pointcmt::cpu::slot_max_cpu);
  m.impl("slot_max_backward", &pointcmt::cpu::slot_max_backward_cpu);
}
