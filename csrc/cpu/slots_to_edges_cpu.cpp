// Padded neighbour slots to PyG's [2, E] edge index, CPU: the last step of
// knn / radius / knn_graph / radius_graph (pointcmt_pyg/ops/_edges.py).
//
// idx (M, W) int64 holds each query's neighbours, -1 where unused. Kept, row
// by row in slot order: entries >= 0, not equal to the row index when
// skip_self (a graph's self-loop), at most max_kept per row (the first ones).
// Row 0 of the result holds the query i, row 1 the neighbour idx[i, j], or the
// reverse when neighbour_first (PyG's source_to_target graphs), which saves
// the copy of a flip.
// Two passes over the rows in parallel (count, then write after a prefix sum
// of the counts): the torch version (a mask, nonzero, a gather, a stack, and a
// cumsum for max_kept) reads and writes the (M, W) slots five to eight times
// and took about as long as the radius search itself (issue 10).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "cpu/common.h"
#include "cpu/parallel.h"

namespace pointcmt {
namespace cpu {
namespace {

// Entries of a row of `width` slots that are >= 0 and not `self` (-1: none).
POINTCMT_MULTIVERSION int64_t count_kept(const int64_t* __restrict row, int64_t width, int64_t self) {
  int64_t kept = 0;
#pragma omp simd reduction(+ : kept)
  for (int64_t j = 0; j < width; ++j) kept += (row[j] >= 0) & (row[j] != self) ? 1 : 0;
  return kept;
}

// Rows per parallel chunk: about 16k slots.
int64_t rows_per_chunk(int64_t width) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(width, 1)); }

at::Tensor slots_to_edges_cpu(const at::Tensor& idx, bool skip_self, int64_t max_kept, bool neighbour_first) {
  TORCH_CHECK(idx.device().is_cpu(), "pointcmt::slots_to_edges: 'idx' must be a CPU tensor");
  TORCH_CHECK(idx.dim() == 2, "pointcmt::slots_to_edges: 'idx' must have shape (M, W), got ", idx.sizes());
  TORCH_CHECK(idx.scalar_type() == at::kLong, "pointcmt::slots_to_edges: 'idx' must be int64, got ",
              idx.scalar_type());
  TORCH_CHECK(max_kept >= 0, "pointcmt::slots_to_edges: 'max_kept' must be >= 0, got ", max_kept);
  const auto slots = idx.contiguous();
  const int64_t rows = slots.size(0), width = slots.size(1);
  const int64_t* in = slots.data_ptr<int64_t>();
  const int64_t grain = rows_per_chunk(width);

  // start[i + 1]: edges kept in row i (a branch-free count, capped); then
  // the prefix sum.
  std::vector<int64_t> start(rows + 1, 0);
  parallel_chunks(rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      start[i + 1] = std::min(count_kept(in + i * width, width, skip_self ? i : -1), max_kept);
  });
  for (int64_t i = 0; i < rows; ++i) start[i + 1] += start[i];
  const int64_t num_edges = start[rows];

  auto out = at::empty({2, num_edges}, slots.options());
  int64_t* query = out.data_ptr<int64_t>() + (neighbour_first ? num_edges : 0);
  int64_t* neighbour = out.data_ptr<int64_t>() + (neighbour_first ? 0 : num_edges);
  parallel_chunks(rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t* row = in + i * width;
      int64_t e = start[i];
      const int64_t stop = start[i + 1];
      if (stop - e == width) {  // every slot kept (a full kNN row): two plain copies
        std::fill(query + e, query + stop, i);
        std::copy(row, row + width, neighbour + e);
        continue;
      }
      for (int64_t j = 0; j < width && e < stop; ++j) {
        const int64_t v = row[j];
        if (v >= 0 && v != (skip_self ? i : -1)) {
          query[e] = i;
          neighbour[e] = v;
          ++e;
        }
      }
    }
  });
  return out;
}

}  // namespace
}  // namespace cpu
}  // namespace pointcmt

TORCH_LIBRARY_IMPL(pointcmt, CPU, m) { m.impl("slots_to_edges", &pointcmt::cpu::slots_to_edges_cpu); }
