// Checks each CPU kernel of the pointcmt library on small hand-made inputs,
// calling the ops through the dispatcher exactly as Python does.
// Built by CMakeLists.txt and run by ctest.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <tuple>
#include <vector>

namespace {

int g_failures = 0;

#define CHECK_TRUE(cond, what)                                         \
  do {                                                                 \
    if (!(cond)) {                                                     \
      std::fprintf(stderr, "FAIL %s:%d %s\n", __FILE__, __LINE__, what); \
      ++g_failures;                                                    \
    }                                                                  \
  } while (0)

std::vector<int64_t> to_vec(const at::Tensor& t) {
  auto c = t.to(at::kLong).contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

at::Tensor longs(std::vector<int64_t> v) { return torch::tensor(v, torch::kLong); }

at::Tensor call_fps(const at::Tensor& x, const at::Tensor& ptr, const at::Tensor& out_ptr,
                    const at::Tensor& start, int64_t num_out) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("pointcmt::fps", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                         const at::Tensor&, int64_t)>();
  return op.call(x, ptr, out_ptr, start, num_out);
}

std::tuple<at::Tensor, at::Tensor> call_knn(const at::Tensor& x, const at::Tensor& y,
                                            const at::Tensor& px, const at::Tensor& py, int64_t k,
                                            bool cosine) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("pointcmt::knn", "")
                       .typed<std::tuple<at::Tensor, at::Tensor>(
                           const at::Tensor&, const at::Tensor&, const at::Tensor&,
                           const at::Tensor&, int64_t, bool)>();
  return op.call(x, y, px, py, k, cosine);
}

at::Tensor call_radius(const at::Tensor& x, const at::Tensor& y, const at::Tensor& px,
                       const at::Tensor& py, double r, int64_t max_num) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("pointcmt::radius", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                         const at::Tensor&, double, int64_t)>();
  return op.call(x, y, px, py, r, max_num);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> call_emd(const at::Tensor& x, const at::Tensor& y,
                                                        double eps, int64_t max_iters) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("pointcmt::emd", "")
                       .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
                           const at::Tensor&, const at::Tensor&, double, int64_t)>();
  return op.call(x, y, eps, max_iters);
}

void test_fps() {
  // Cloud 0: points on a line at 0, 1, 2, 10. From index 0 the farthest is 10
  // (index 3), then 2 is at distance 2 from {0, 10}... min-dists: 1 -> 1, 2 -> 2.
  // Cloud 1: a square; from index 0 the opposite corner (index 2) is farthest,
  // then indices 1 and 3 tie (distance 1): the lower index wins.
  auto x = torch::tensor({0.f, 0.f, 1.f, 0.f, 2.f, 0.f, 10.f, 0.f,  // cloud 0
                          0.f, 0.f, 1.f, 0.f, 1.f, 1.f, 0.f, 1.f}) // cloud 1
               .view({8, 2});
  auto idx = call_fps(x, longs({0, 4, 8}), longs({0, 3, 6}), longs({0, 0}), 6);
  CHECK_TRUE((to_vec(idx) == std::vector<int64_t>{0, 3, 2, 4, 6, 5}), "fps indices");
  // Start elsewhere: cloud 0 from index 3 (x=10) -> 0 -> 2.
  idx = call_fps(x.to(torch::kDouble), longs({0, 4, 8}), longs({0, 3, 4}), longs({3, 1}), 4);
  CHECK_TRUE((to_vec(idx) == std::vector<int64_t>{3, 0, 2, 5}), "fps with start, float64");
  // One-point cloud.
  idx = call_fps(torch::zeros({1, 3}), longs({0, 1}), longs({0, 1}), longs({0}), 1);
  CHECK_TRUE((to_vec(idx) == std::vector<int64_t>{0}), "fps one point");
}

void test_knn() {
  // x: 0, 1, 3, 6 on a line (one cloud); queries at 2.1 and 0.
  auto x = torch::tensor({0.f, 1.f, 3.f, 6.f}).view({4, 1});
  auto y = torch::tensor({2.1f, 0.f}).view({2, 1});
  auto [dist, idx] = call_knn(x, y, longs({0, 4}), longs({0, 2}), 2, false);
  CHECK_TRUE((to_vec(idx) == std::vector<int64_t>{2, 1, 0, 1}), "knn indices sorted by distance");
  CHECK_TRUE(std::abs(dist[0][0].item<float>() - 0.81f) < 1e-5f, "knn squared distance");
  CHECK_TRUE(std::abs(dist[1][1].item<float>() - 1.0f) < 1e-6f, "knn squared distance 2");
  // Ties go to the lower index: query 0.5 is at distance 0.5 from both 0 and 1.
  std::tie(dist, idx) = call_knn(x, torch::tensor({0.5f}).view({1, 1}), longs({0, 4}),
                                 longs({0, 1}), 1, false);
  CHECK_TRUE((to_vec(idx) == std::vector<int64_t>{0}), "knn tie to the lower index");
  // Two clouds, k larger than the second cloud: missing neighbours are -1.
  auto x2 = torch::tensor({0.f, 1.f, 5.f}).view({3, 1});
  std::tie(dist, idx) = call_knn(x2, torch::tensor({0.f, 5.f}).view({2, 1}), longs({0, 2, 3}),
                                 longs({0, 1, 2}), 2, false);
  CHECK_TRUE((to_vec(idx) == std::vector<int64_t>{0, 1, 2, -1}), "knn per cloud, -1 padding");
  CHECK_TRUE(std::isinf(dist[1][1].item<float>()), "knn missing distance is inf");
}

void test_radius() {
  auto x = torch::tensor({0.f, 0.5f, 1.0f, 3.f}).view({4, 1});
  auto y = torch::tensor({0.4f, 3.f}).view({2, 1});
  // r = 0.7: around 0.4 -> 0 (0.4), 0.5 (0.1), 1.0 (0.6); around 3 -> 3.
  auto idx = call_radius(x, y, longs({0, 4}), longs({0, 2}), 0.7, 4);
  CHECK_TRUE((to_vec(idx) == std::vector<int64_t>{0, 1, 2, -1, 3, -1, -1, -1}), "radius neighbours");
  // max_num_neighbors = 2 keeps the first two in index order.
  idx = call_radius(x, y, longs({0, 4}), longs({0, 2}), 0.7, 2);
  CHECK_TRUE((to_vec(idx) == std::vector<int64_t>{0, 1, 3, -1}), "radius truncation in index order");
}

void test_emd() {
  // y is a permutation of x: the optimal cost is 0 and the matching recovers it.
  auto x = torch::tensor({0.f, 0.f, 0.f, 1.f, 0.f, 0.f, 0.f, 2.f, 0.f, 0.f, 0.f, 3.f}).view({1, 4, 3});
  auto perm = longs({2, 0, 3, 1});
  auto y = x.index_select(1, perm);
  auto [dist, assign, gap] = call_emd(x, y, 1e-4, 100000);
  auto a = to_vec(assign);
  // x_i = y_j when perm[j] == i.
  std::vector<int64_t> expected = {1, 3, 0, 2};
  CHECK_TRUE(a == expected, "emd recovers the permutation");
  CHECK_TRUE(dist.abs().max().item<float>() < 1e-6f, "emd zero distances");
  CHECK_TRUE(gap.item<float>() >= 0.f && gap.item<float>() < 1e-4f, "emd gap");
  // Two points each: crossing is worse than parallel matching.
  auto x2 = torch::tensor({0.0, 0.0, 0.0, 1.0, 0.0, 0.0}, torch::kDouble).view({1, 2, 3});
  auto y2 = torch::tensor({1.0, 0.1, 0.0, 0.0, 0.1, 0.0}, torch::kDouble).view({1, 2, 3});
  std::tie(dist, assign, gap) = call_emd(x2, y2, 1e-6, 100000);
  CHECK_TRUE((to_vec(assign) == std::vector<int64_t>{1, 0}), "emd two points");
  CHECK_TRUE(std::abs(dist.sum().item<double>() - 0.02) < 1e-9, "emd two-point cost");
}

}  // namespace

int main() {
  test_fps();
  test_knn();
  test_radius();
  test_emd();
  if (g_failures == 0) std::printf("all CPU kernel checks passed\n");
  return g_failures == 0 ? 0 : 1;
}
