// k nearest neighbours, CUDA: one thread per query, exact brute force over
// the points of its cloud in ascending index order, keeping a sorted top-k
// list (in registers/local memory for k <= 32, in the output row otherwise).
// Only a strictly smaller distance displaces an entry, so the list is sorted
// by (distance, index), ties to the lower index, exactly as on CPU.
#include <torch/library.h>

#include <limits>
#include <tuple>

#include "cuda/common.cuh"

namespace pointcmt {
namespace cuda {
namespace {

constexpr int kThreads = 128;

// `top_dist` / `top_idx`: the list (stride 1), either local arrays or the
// query's output row.
template <typename scalar_t, int KMAX>
__global__ void knn_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ y,
                           const int64_t* __restrict__ ptr_x, const int64_t* __restrict__ ptr_y,
                           int64_t num_clouds, int64_t num_points, int64_t num_queries, int64_t dim, int64_t k,
                           const scalar_t* __restrict__ norm_x, const scalar_t* __restrict__ norm_y,
                           scalar_t* __restrict__ out_dist, int64_t* __restrict__ out_idx) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= num_queries) return;
  const int64_t b = cloud_of(ptr_y, num_clouds, i);
  const int64_t first = ptr_x[b], last = ptr_x[b + 1];
  if (first < 0 || last > num_points || first >= last) return;

  scalar_t local_dist[KMAX > 0 ? KMAX : 1];
  int64_t local_idx[KMAX > 0 ? KMAX : 1];
  scalar_t* top_dist = KMAX > 0 ? local_dist : out_dist + i * k;
  int64_t* top_idx = KMAX > 0 ? local_idx : out_idx + i * k;

  const scalar_t* q = y + i * dim;
  const bool cosine = norm_x != nullptr;
  const scalar_t norm_q = cosine ? norm_y[i] : scalar_t(0);
  int64_t filled = 0;
  for (int64_t j = first; j < last; ++j) {
    scalar_t d;
    if (cosine) {
      const scalar_t denom = mul_rn(norm_q, norm_x[j]);
      d = denom > scalar_t(0) ? sub_rn(scalar_t(1), div_rn(dot(x + j * dim, q, dim), denom)) : scalar_t(1);
    } else {
      d = sqdist(x + j * dim, q, dim);
    }
    int64_t pos;
    if (filled < k) {
      pos = filled++;
    } else if (d < top_dist[k - 1]) {
      pos = k - 1;
    } else {
      continue;
    }
    while (pos > 0 && top_dist[pos - 1] > d) {
      top_dist[pos] = top_dist[pos - 1];
      top_idx[pos] = top_idx[pos - 1];
      --pos;
    }
    top_dist[pos] = d;
    top_idx[pos] = j;
  }
  if (KMAX > 0) {
    for (int64_t s = 0; s < filled; ++s) {
      out_dist[i * k + s] = top_dist[s];
      out_idx[i * k + s] = top_idx[s];
    }
  }
}

template <typename scalar_t, int KMAX>
void launch(const at::Tensor& x, const at::Tensor& y, const at::Tensor& ptr_x, const at::Tensor& ptr_y,
            int64_t k, const scalar_t* norm_x, const scalar_t* norm_y, at::Tensor& dist, at::Tensor& idx) {
  const int64_t num_queries = y.size(0);
  knn_kernel<scalar_t, KMAX><<<blocks_for(num_queries, kThreads), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
      x.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), ptr_x.data_ptr<int64_t>(), ptr_y.data_ptr<int64_t>(),
      ptr_x.numel() - 1, x.size(0), num_queries, x.size(1), k, norm_x, norm_y, dist.data_ptr<scalar_t>(),
      idx.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

std::tuple<at::Tensor, at::Tensor> knn_cuda(const at::Tensor& x, const at::Tensor& y, const at::Tensor& ptr_x,
                                            const at::Tensor& ptr_y, int64_t k, bool cosine) {
  check_cuda_points(x, "x");
  check_cuda_points(y, "y");
  check_cuda_index(ptr_x, x, "ptr_x");
  check_cuda_index(ptr_y, x, "ptr_y");
  TORCH_CHECK(x.device() == y.device(), "pointcmt::knn: 'x' and 'y' must be on the same device");
  TORCH_CHECK(x.scalar_type() == y.scalar_type(), "pointcmt::knn: 'x' and 'y' must have the same dtype");
  TORCH_CHECK(x.size(1) == y.size(1) && x.size(1) >= 1,
              "pointcmt::knn: 'x' and 'y' must have the same number of coordinates D >= 1");
  TORCH_CHECK(k >= 1, "pointcmt::knn: 'k' must be >= 1, got ", k);
  TORCH_CHECK(ptr_x.numel() >= 2 && ptr_x.numel() == ptr_y.numel(),
              "pointcmt::knn: 'ptr_x' and 'ptr_y' must describe the same clouds");
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t num_queries = y.size(0);
  auto dist = at::full({num_queries, k}, std::numeric_limits<double>::infinity(), y.options());
  auto idx = at::full({num_queries, k}, -1, y.options().dtype(at::kLong));
  if (num_queries == 0 || x.size(0) == 0) return {dist, idx};
  auto xc = x.contiguous(), yc = y.contiguous(), px = ptr_x.contiguous(), py = ptr_y.contiguous();
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "pointcmt_knn_cuda", [&] {
    at::Tensor norm_x, norm_y;
    const scalar_t* nx = nullptr;
    const scalar_t* ny = nullptr;
    if (cosine) {
      norm_x = at::empty({xc.size(0)}, xc.options());
      norm_y = at::empty({num_queries}, yc.options());
      row_norms_kernel<scalar_t><<<blocks_for(xc.size(0), 256), 256, 0, stream>>>(
          xc.data_ptr<scalar_t>(), xc.size(0), xc.size(1), norm_x.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      row_norms_kernel<scalar_t><<<blocks_for(num_queries, 256), 256, 0, stream>>>(
          yc.data_ptr<scalar_t>(), num_queries, yc.size(1), norm_y.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      nx = norm_x.data_ptr<scalar_t>();
      ny = norm_y.data_ptr<scalar_t>();
    }
    if (k <= 8) {
      launch<scalar_t, 8>(xc, yc, px, py, k, nx, ny, dist, idx);
    } else if (k <= 32) {
      launch<scalar_t, 32>(xc, yc, px, py, k, nx, ny, dist, idx);
    } else {
      launch<scalar_t, 0>(xc, yc, px, py, k, nx, ny, dist, idx);
    }
  });
  return {dist, idx};
}

}  // namespace
}  // namespace cuda
}  // namespace pointcmt

TORCH_LIBRARY_IMPL(pointcmt, CUDA, m) { m.impl("knn", &pointcmt::cuda::knn_cuda); }
