// Every schema of the `pointcmt` operator library lives here, in one place.
//
// Kernels register per device in csrc/cpu/*.cpp (CPU) and csrc/cuda/*.cu (CUDA)
// with TORCH_LIBRARY_IMPL. Fake (meta) kernels and autograd are registered from
// Python (pointcmt_pyg/ops/*.py) with torch.library, so torch.compile works.
//
// Conventions shared by all point ops:
//   * clouds are packed: `x` is (N, D) contiguous float32/float64, cloud b owns
//     rows ptr[b] .. ptr[b+1]-1 (ptr: int64, size B+1, ptr[0] == 0).
//   * returned indices are int64 and global (index rows of `x`); -1 pads.
#include <torch/library.h>

#include "cpu/parallel.h"

#ifndef POINTCMT_NO_PYTHON
#include <Python.h>
// A tiny Python module so `import pointcmt_pyg._C` loads the library and runs
// the static registrations below (no pybind, no Python API in kernels). The
// CMake build (plain libtorch, no Python) defines POINTCMT_NO_PYTHON.
extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}
#endif

TORCH_LIBRARY(pointcmt, m) {
  // Farthest point sampling. out_ptr (B+1, int64) gives the number of samples
  // per cloud as a prefix sum; start (B, int64) the local index each cloud
  // starts from; num_out == out_ptr[B]. Returns (num_out,) global indices.
  // Ties go to the lowest index.
  m.def("fps(Tensor x, Tensor ptr, Tensor out_ptr, Tensor start, int num_out) -> Tensor");

  // k nearest neighbours of every row of y among the rows of x in the same
  // cloud. Returns (dist, idx), both (M, k): dist is the squared Euclidean
  // distance (or 1 - cosine similarity when cosine), idx global rows of x,
  // sorted by (dist, idx) ascending; missing neighbours are inf / -1.
  m.def("knn(Tensor x, Tensor y, Tensor ptr_x, Tensor ptr_y, int k, bool cosine) -> (Tensor, Tensor)");

  // Rows of x within squared distance < r*r of each row of y, same cloud.
  // Returns (M, max_num_neighbors) int64: the first max_num_neighbors such rows
  // in ascending index order, -1 padded.
  m.def("radius(Tensor x, Tensor y, Tensor ptr_x, Tensor ptr_y, float r, int max_num_neighbors) -> Tensor");

  // Earth Mover's Distance between equal-size sets x, y (B, N, D) by auction
  // with epsilon scaling. Stops when the certified gap <= eps * cost (or after
  // max_iters bidding rounds in total, then completes the bijection greedily).
  // Returns (dist (B, N): squared distance of x_i to its match,
  //          assignment (B, N) int64: y index matched to x_i (a permutation),
  //          gap (B,): certified upper bound on cost - optimal cost, from the
  //          prices as dual variables).
  m.def("emd(Tensor x, Tensor y, float eps, int max_iters) -> (Tensor, Tensor, Tensor)");

  // Max over the middle axis of a padded block (M, W, C), W >= 1 (the dense
  // students' max over neighbour slots). Returns (values (M, C), slot (M, C)
  // int64): the first w reaching the maximum; a NaN wins (the first NaN), as
  // in torch.max.
  m.def("slot_max(Tensor block) -> (Tensor, Tensor)");

  // The backward of slot_max: (M, width, C), grad[m, c] at w == slot[m, c]
  // and 0 elsewhere.
  m.def("slot_max_backward(Tensor grad, Tensor slot, int width) -> Tensor");

  // Max over the rows of every segment of a CSR layout: src (E, C), ptr
  // (M + 1) int64 offsets (ptr[0] = 0, ptr[M] = E, non-decreasing). Returns
  // (values (M, C), arg (M, C) int64): the first row of segment m (rows
  // ptr[m] .. ptr[m + 1] - 1) reaching the maximum (a NaN wins, the first NaN,
  // as in torch.max); an empty segment gets value 0 and arg -1. The dense
  // students' max over the contiguous edges of every centre.
  m.def("segment_max(Tensor src, Tensor ptr) -> (Tensor, Tensor)");

  // The backward of segment_max: (num_rows = E, C), grad[m, c] at row
  // arg[m, c] and 0 elsewhere.
  m.def("segment_max_backward(Tensor grad, Tensor arg, Tensor ptr, int num_rows) -> Tensor");

  // Max over the gathered rows values[slots[m, k]] (k with slots[m, k] >= 0)
  // of each centre m: the dense EdgeConv whose MLP is one linear layer,
  // max_j (a_i + b_j) = a_i + max_j b_j, without the (M, K, C) block.
  // values (N, C), slots (M, K) int64 in [-1, N). Returns (out (M, C), arg
  // (M, C) int64): the row of values reaching the maximum, from the first
  // slot that does (a NaN wins, the first NaN, as in torch.max); a centre
  // without any valid slot gets out 0 and arg -1.
  m.def("gather_max(Tensor values, Tensor slots) -> (Tensor, Tensor)");

  // Not a point op: padded neighbour slots idx (M, W) int64 (-1 unused) to
  // PyG's [2, E] edge index (row 0: the row i, row 1: idx[i, j]), row by row in
  // slot order, keeping entries >= 0, != i when skip_self, at most max_kept per
  // row; rows 0 and 1 swapped when neighbour_first. CPU only: other devices
  // use the torch version (ops/_edges.py).
  m.def("slots_to_edges(Tensor idx, bool skip_self, int max_kept, bool neighbour_first) -> Tensor");

  // Not a point op: the Python wrappers call it around their own torch ops
  // (argument checks, edge construction) so that those run on one thread,
  // as explained in cpu/parallel.h (serial_torch_ops). enter=False undoes
  // the innermost enter=True of the calling thread.
  m.def("_serial_torch_ops(bool enter) -> ()", &pointcmt::cpu::serial_torch_ops);
}
