// Farthest point sampling, CPU: clouds in parallel (parallel_chunks,
// cpu/grid.h), the points of a cloud in struct-of-arrays layout so the
// per-step update (squared distance to the newest sample, running minimum,
// maximum) is one vectorised pass; the argmax is then the first point holding
// the maximum, so ties go to the lowest index. Buffers are allocated once per
// chunk.
#include <torch/library.h>

#include <limits>

#include "cpu/common.h"
#include "cpu/grid.h"

namespace pointcmt {
namespace cpu {
namespace {

// dist[j] = min(dist[j], |x_j - c|^2) for the n points of a cloud (struct of
// arrays: coordinate d of point j at xt[d * stride + j]); returns max_j dist[j].
template <typename scalar_t>
POINTCMT_MULTIVERSION scalar_t fps_update(const scalar_t* __restrict xt, int64_t stride, int64_t dim,
                                          const scalar_t* __restrict c, int64_t n,
                                          scalar_t* __restrict dist, scalar_t* __restrict tmp) {
  scalar_t best = -std::numeric_limits<scalar_t>::infinity();
  if (dim == 3) {
    const scalar_t* x0 = xt;
    const scalar_t* x1 = xt + stride;
    const scalar_t* x2 = xt + 2 * stride;
    const scalar_t c0 = c[0], c1 = c[1], c2 = c[2];
#pragma omp simd reduction(max : best)
    for (int64_t j = 0; j < n; ++j) {
      scalar_t a = x0[j] - c0;
      scalar_t acc = a * a;
      scalar_t b = x1[j] - c1;
      acc = acc + b * b;
      scalar_t e = x2[j] - c2;
      acc = acc + e * e;
      scalar_t m = dist[j] < acc ? dist[j] : acc;
      dist[j] = m;
      best = best > m ? best : m;
    }
    return best;
  }
  sqdist_block(xt, stride, dim, c, n, tmp);
#pragma omp simd reduction(max : best)
  for (int64_t j = 0; j < n; ++j) {
    scalar_t m = dist[j] < tmp[j] ? dist[j] : tmp[j];
    dist[j] = m;
    best = best > m ? best : m;
  }
  return best;
}

template <typename scalar_t>
void fps_clouds(const scalar_t* xt, int64_t num_points, int64_t dim, const std::vector<int64_t>& ptr,
                const std::vector<int64_t>& out_ptr, const int64_t* start, int64_t* out) {
  const int64_t num_clouds = static_cast<int64_t>(ptr.size()) - 1;
  int64_t max_points = 0;
  for (int64_t b = 0; b < num_clouds; ++b) max_points = std::max(max_points, ptr[b + 1] - ptr[b]);

  parallel_chunks(num_clouds, 1, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> dist(max_points), tmp(dim == 3 ? 0 : max_points), centre(dim);
    for (int64_t b = begin; b < end; ++b) {
      const int64_t first = ptr[b], n = ptr[b + 1] - ptr[b];
      const int64_t num_samples = out_ptr[b + 1] - out_ptr[b];
      if (num_samples == 0) continue;
      const scalar_t* cloud = xt + first;
      int64_t* dst = out + out_ptr[b];
      std::fill(dist.begin(), dist.begin() + n, std::numeric_limits<scalar_t>::infinity());
      int64_t current = start[b];
      for (int64_t step = 0; step < num_samples; ++step) {
        dst[step] = first + current;
        if (step + 1 == num_samples) break;
        for (int64_t d = 0; d < dim; ++d) centre[d] = cloud[d * num_points + current];
        const scalar_t best = fps_update(cloud, num_points, dim, centre.data(), n, dist.data(), tmp.data());
        int64_t j = 0;
        while (dist[j] != best) ++j;  // first maximum: ties to the lowest index
        current = j;
      }
    }
  });
}

at::Tensor fps_cpu(const at::Tensor& x, const at::Tensor& ptr, const at::Tensor& out_ptr,
                   const at::Tensor& start, int64_t num_out) {
  check_points_tensor(x, "x");
  const int64_t num_points = x.size(0), dim = x.size(1);
  TORCH_CHECK(dim >= 1, "pointcmt::fps: 'x' needs at least one coordinate");
  const auto p = read_ptr(ptr, num_points, "ptr");
  const auto op = read_ptr(out_ptr, num_out, "out_ptr");
  const int64_t num_clouds = static_cast<int64_t>(p.size()) - 1;
  TORCH_CHECK(static_cast<int64_t>(op.size()) == num_clouds + 1,
              "pointcmt::fps: 'out_ptr' must have as many entries as 'ptr'");
  TORCH_CHECK(start.dim() == 1 && start.numel() == num_clouds && start.scalar_type() == at::kLong,
              "pointcmt::fps: 'start' must be an int64 vector with one entry per cloud");
  auto start_c = start.contiguous();
  const int64_t* s = start_c.data_ptr<int64_t>();
  for (int64_t b = 0; b < num_clouds; ++b) {
    const int64_t n = p[b + 1] - p[b];
    if (op[b + 1] > op[b])
      TORCH_CHECK(n > 0 && s[b] >= 0 && s[b] < n, "pointcmt::fps: cloud ", b, " has ", n,
                  " points, cannot start at ", s[b], " or sample ", op[b + 1] - op[b]);
  }

  auto out = at::empty({num_out}, x.options().dtype(at::kLong));
  if (num_out == 0) return out;
  auto xc = x.contiguous();
  auto xt = at::empty({dim, num_points}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "pointcmt_fps_cpu", [&] {
    transpose_points(xc.data_ptr<scalar_t>(), num_points, dim, xt.data_ptr<scalar_t>());
    fps_clouds(xt.data_ptr<scalar_t>(), num_points, dim, p, op, s, out.data_ptr<int64_t>());
  });
  return out;
}

}  // namespace
}  // namespace cpu
}  // namespace pointcmt

TORCH_LIBRARY_IMPL(pointcmt, CPU, m) { m.impl("fps", &pointcmt::cpu::fps_cpu); }
