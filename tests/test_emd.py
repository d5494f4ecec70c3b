"""Earth Mover's Distance: against the exact assignment (scipy's
linear_sum_assignment), the certified gap, bijections for any size and
dimension, hand-made cases, gradients (gradcheck and the closed form),
emd_loss, opcheck, torch.compile, the pure-torch reference, bad inputs, CUDA."""
import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

import pointcmt_pyg.ops as ops
from pointcmt_pyg.ops._reference_emd import emd_reference

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DTYPES = [torch.float32, torch.float64]


def reference_emd(x, y, eps=1e-3, max_iters=100_000):
    """The pure-torch implementation, called directly (whatever the backend)."""
    return emd_reference(x, y, eps, max_iters)


IMPLEMENTATIONS = {"op": ops.emd, "reference": reference_emd}


def exact_cost(x: torch.Tensor, y: torch.Tensor) -> float:
    """Optimal assignment cost of one pair, in float64 (Hungarian method)."""
    cost = ((x.double()[:, None, :] - y.double()[None, :, :]) ** 2).sum(-1).numpy()
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].sum())


def assigned_cost(x: torch.Tensor, y: torch.Tensor, assignment: torch.Tensor) -> float:
    return float(((x.double() - y.double()[assignment]) ** 2).sum())


def random_pair(batch, n, dim, dtype, near=False, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, n, dim, generator=gen, dtype=torch.float64)
    if near:  # y = a small perturbation of x, shuffled
        y = x + 0.01 * torch.randn(batch, n, dim, generator=gen, dtype=torch.float64)
        y = y[:, torch.randperm(n, generator=gen)]
    else:
        y = torch.rand(batch, n, dim, generator=gen, dtype=torch.float64)
    return x.to(dtype), y.to(dtype)


def check_certified(x, y, dist, assignment, gap, eps):
    """Bijection, dist consistent with it, cost - OPT <= gap <= eps * cost."""
    n = x.shape[1]
    for b in range(x.shape[0]):
        assert sorted(assignment[b].tolist()) == list(range(n))
        cost = assigned_cost(x[b], y[b], assignment[b])
        torch.testing.assert_close(dist[b].double().sum().item(), cost, rtol=1e-5, atol=1e-6)
        opt = exact_cost(x[b], y[b])
        g = float(gap[b])
        assert g >= 0
        assert cost - opt <= g * (1 + 1e-9) + 1e-9 * max(opt, 1.0), (cost, opt, g)
        assert g <= eps * cost * (1 + 1e-6) + 1e-9, (g, cost)


# ----------------------------------------------------------------- hand-made


def test_recovers_a_permutation_exactly():
    x = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0, 2, 0], [0, 0, 3]]])
    y = x[:, [2, 0, 3, 1]]
    dist, assignment, gap = ops.emd(x, y, eps=1e-4)
    assert assignment.tolist() == [[1, 3, 0, 2]]  # x_i == y_j where perm[j] == i
    assert dist.abs().max() == 0
    assert float(gap[0]) < 1e-6


def test_two_points_prefer_parallel_to_crossing():
    x = torch.tensor([[[0.0, 0, 0], [1, 0, 0]]], dtype=torch.float64)
    y = torch.tensor([[[1.0, 0.1, 0], [0, 0.1, 0]]], dtype=torch.float64)
    dist, assignment, _ = ops.emd(x, y, eps=1e-6)
    assert assignment.tolist() == [[1, 0]]
    torch.testing.assert_close(dist, torch.full((1, 2), 0.01, dtype=torch.float64))


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_one_dimension_matches_sorted_order(impl):
    """In 1-D with a convex cost the monotone (sorted) matching is optimal."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 300, 1, generator=gen, dtype=torch.float64)
    y = torch.randn(2, 300, 1, generator=gen, dtype=torch.float64) * 2 + 1
    dist, assignment, gap = IMPLEMENTATIONS[impl](x, y, eps=1e-6)
    for b in range(2):
        optimum = float(((x[b, :, 0].sort().values - y[b, :, 0].sort().values) ** 2).sum())
        cost = float(dist[b].sum())
        assert optimum <= cost + 1e-9
        assert cost - optimum <= float(gap[b]) + 1e-9 <= 1e-6 * cost + 2e-9


# ------------------------------------------------ against the exact optimum


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("near", [False, True], ids=["random", "near"])
def test_within_half_percent_of_exact_on_1024_points(impl, near):
    x, y = random_pair(2, 1024, 3, torch.float32, near=near, seed=1 + near)
    dist, assignment, gap = IMPLEMENTATIONS[impl](x, y)  # defaults
    check_certified(x, y, dist, assignment, gap, eps=1e-3)
    for b in range(2):
        opt = exact_cost(x[b], y[b])
        assert (assigned_cost(x[b], y[b], assignment[b]) - opt) / opt <= 5e-3


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, dim", [(1, 3), (2, 3), (7, 3), (31, 1), (64, 2), (50, 5), (1000, 3)])
def test_any_size_and_dimension(dtype, n, dim):
    x, y = random_pair(3, n, dim, dtype, seed=n + dim)
    dist, assignment, gap = ops.emd(x, y)
    assert dist.dtype == dtype and gap.dtype == dtype and assignment.dtype == torch.long
    assert dist.shape == (3, n) and assignment.shape == (3, n) and gap.shape == (3,)
    check_certified(x, y, dist, assignment, gap, eps=1e-3)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_small_cases_against_reference_quality(impl):
    x, y = random_pair(4, 23, 3, torch.float64, seed=5)
    dist, assignment, gap = IMPLEMENTATIONS[impl](x, y, eps=1e-5)
    check_certified(x, y, dist, assignment, gap, eps=1e-5)


def test_dist_is_squared_distance_to_the_match():
    x, y = random_pair(2, 100, 3, torch.float32, seed=9)
    dist, assignment, _ = ops.emd(x, y)
    matched = y.gather(1, assignment[..., None].expand(-1, -1, 3))
    torch.testing.assert_close(dist, ((x - matched) ** 2).sum(-1))


@pytest.mark.parametrize("eps", [3e-2, 1e-5])
def test_eps_is_the_relative_gap_target(eps):
    x, y = random_pair(2, 200, 3, torch.float64, seed=4)
    dist, assignment, gap = ops.emd(x, y, eps=eps)
    check_certified(x, y, dist, assignment, gap, eps=eps)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_gap_stays_honest_when_out_of_iterations(impl):
    """One bidding round cannot finish: the leftovers are completed into a
    bijection and the reported gap still bounds the distance to the optimum."""
    x, y = random_pair(2, 300, 3, torch.float32, seed=8)
    dist, assignment, gap = IMPLEMENTATIONS[impl](x, y, eps=1e-3, max_iters=1)
    for b in range(2):
        assert sorted(assignment[b].tolist()) == list(range(300))
        cost = assigned_cost(x[b], y[b], assignment[b])
        opt = exact_cost(x[b], y[b])
        assert cost > opt * 1.01  # genuinely unfinished, not secretly optimal
        assert cost - opt <= float(gap[b]) * (1 + 1e-6)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_identical_sets_and_duplicates(impl):
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(2, 64, 3, generator=gen)
    x[:, 32:] = x[:, :32]  # every point twice
    y = x[:, torch.randperm(64, generator=gen)]
    dist, assignment, gap = IMPLEMENTATIONS[impl](x, y)
    assert dist.abs().max() == 0
    assert float(gap.max()) <= 1e-6
    for b in range(2):
        assert sorted(assignment[b].tolist()) == list(range(64))
    same = torch.zeros(1, 5, 2)  # all points equal: any bijection, zero cost
    dist, assignment, gap = IMPLEMENTATIONS[impl](same, same)
    assert sorted(assignment[0].tolist()) == list(range(5)) and dist.abs().max() == 0 and gap[0] == 0


def test_symmetric_in_its_arguments():
    x, y = random_pair(2, 150, 3, torch.float64, seed=6)
    d_xy, a_xy, g_xy = ops.emd(x, y, eps=1e-6)
    d_yx, a_yx, g_yx = ops.emd(y, x, eps=1e-6)
    for b in range(2):
        assert abs(float(d_xy[b].sum() - d_yx[b].sum())) <= float(g_xy[b] + g_yx[b]) + 1e-12


# ---------------------------------------------------------------- gradients


def test_gradcheck_float64_unique_optimum():
    x, y = random_pair(2, 6, 3, torch.float64, seed=12)
    x.requires_grad_(True)
    y.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: ops.emd(a, b, eps=0.0)[0], (x, y))


def test_gradient_is_twice_the_displacement_through_the_assignment():
    x, y = random_pair(2, 40, 3, torch.float64, seed=13)
    x.requires_grad_(True)
    y.requires_grad_(True)
    dist, assignment, _ = ops.emd(x, y)
    weights = torch.rand_like(dist)
    (dist * weights).sum().backward()
    matched = y.detach().gather(1, assignment[..., None].expand(-1, -1, 3))
    want_x = 2 * (x.detach() - matched) * weights[..., None]
    want_y = torch.zeros_like(y).scatter_add(1, assignment[..., None].expand(-1, -1, 3), -want_x)
    torch.testing.assert_close(x.grad, want_x)
    torch.testing.assert_close(y.grad, want_y)


def test_emd_loss_values_and_reductions():
    x, y = random_pair(3, 50, 3, torch.float64, seed=14)
    dist, _, _ = ops.emd(x, y)
    torch.testing.assert_close(ops.emd_loss(x, y), dist.mean(1).mean())
    torch.testing.assert_close(ops.emd_loss(x, y, reduction="sum"), dist.mean(1).sum())
    torch.testing.assert_close(ops.emd_loss(x, y, reduction="none"), dist.mean(1))
    torch.testing.assert_close(ops.emd_loss(x, y, sqrt=True), dist.sqrt().mean(1).mean())


def test_emd_loss_sqrt_has_finite_gradients_at_zero_distance():
    x = torch.rand(2, 32, 3, requires_grad=True)
    y = x.detach()[:, torch.randperm(32)].clone().requires_grad_(True)
    loss = ops.emd_loss(x, y, sqrt=True)
    loss.backward()
    assert loss.item() == 0
    assert torch.isfinite(x.grad).all() and torch.isfinite(y.grad).all()
    assert x.grad.abs().max() == 0 and y.grad.abs().max() == 0
    # partly coincident: finite everywhere, non-zero where points differ
    x2 = x.detach().clone()
    x2[:, :4] += 0.1
    x2.requires_grad_(True)
    ops.emd_loss(x2, y.detach(), sqrt=True).backward()
    assert torch.isfinite(x2.grad).all() and x2.grad.abs().sum() > 0


# ------------------------------------------------------- registration, compile


def test_opcheck():
    x, y = random_pair(2, 17, 3, torch.float32, seed=15)
    torch.library.opcheck(torch.ops.pointcmt.emd.default, (x, y, 1e-3, 1000))
    xd, yd = random_pair(1, 9, 2, torch.float64, seed=16)
    torch.library.opcheck(torch.ops.pointcmt.emd.default, (xd.requires_grad_(True), yd, 1e-4, 1000))


def test_torch_compile_fullgraph():
    x, y = random_pair(2, 64, 3, torch.float32, seed=17)

    def loss_fn(a, b):
        return ops.emd_loss(a * 2.0, b, sqrt=True) + ops.emd(a, b)[0].sum()

    compiled = torch.compile(loss_fn, fullgraph=True, backend="aot_eager")
    xa = x.clone().requires_grad_(True)
    xb = x.clone().requires_grad_(True)
    got = compiled(xa, y)
    want = loss_fn(xb, y)
    torch.testing.assert_close(got, want)
    got.backward()
    want.backward()
    torch.testing.assert_close(xa.grad, xb.grad)


# ---------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("call, error, match", [
    (lambda: ops.emd([[[0.0, 1.0, 2.0]]], torch.rand(1, 1, 3)), TypeError, "'x'"),
    (lambda: ops.emd(torch.rand(1, 4, 3), "y"), TypeError, "'y'"),
    (lambda: ops.emd(torch.rand(4, 3), torch.rand(4, 3)), ValueError, "'x'"),
    (lambda: ops.emd(torch.rand(1, 4, 3), torch.rand(1, 5, 3)), ValueError, "same shape"),
    (lambda: ops.emd(torch.rand(2, 4, 3), torch.rand(1, 4, 3)), ValueError, "same shape"),
    (lambda: ops.emd(torch.rand(1, 4, 3), torch.rand(1, 4, 2)), ValueError, "coordinates"),
    (lambda: ops.emd(torch.rand(1, 4, 3).long(), torch.rand(1, 4, 3).long()), TypeError, "'x'"),
    (lambda: ops.emd(torch.rand(1, 4, 3).int(), torch.rand(1, 4, 3).int()), TypeError, "float32, float64"),
    (lambda: ops.emd(torch.rand(1, 4, 3), torch.rand(1, 4, 3).double()), TypeError, "same dtype"),
    (lambda: ops.emd(torch.rand(1, 4, 3), torch.rand(1, 4, 3, device="meta")), ValueError, "same device"),
    (lambda: ops.emd(torch.tensor([[[0.0, float("nan")]]]), torch.rand(1, 1, 2)), ValueError, "NaN"),
    (lambda: ops.emd(torch.rand(1, 2, 2), torch.tensor([[[0.0, 1], [float("inf"), 0]]])), ValueError, "'y'"),
    (lambda: ops.emd(torch.rand(1, 0, 3), torch.rand(1, 0, 3)), ValueError, "empty"),
    (lambda: ops.emd(torch.rand(0, 4, 3), torch.rand(0, 4, 3)), ValueError, "empty"),
    (lambda: ops.emd(torch.rand(1, 4, 0), torch.rand(1, 4, 0)), ValueError, "coordinate"),
    (lambda: ops.emd(torch.rand(1, 4, 3), torch.rand(1, 4, 3), eps=-1.0), ValueError, "'eps'"),
    (lambda: ops.emd(torch.rand(1, 4, 3), torch.rand(1, 4, 3), eps="small"), ValueError, "'eps'"),
    (lambda: ops.emd(torch.rand(1, 4, 3), torch.rand(1, 4, 3), max_iters=0), ValueError, "'max_iters'"),
    (lambda: ops.emd(torch.rand(1, 4, 3), torch.rand(1, 4, 3), max_iters=2.5), ValueError, "'max_iters'"),
    (lambda: ops.emd_loss(torch.rand(1, 4, 3), torch.rand(1, 4, 3), reduction="max"), ValueError, "'reduction'"),
])
def test_bad_inputs(call, error, match):
    with pytest.raises(error, match=match):
        call()


# --------------------------------------------------------------------- CUDA


@cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("near", [False, True], ids=["random", "near"])
def test_cuda_within_half_percent_and_certified(dtype, near):
    x, y = random_pair(3, 1024, 3, dtype, near=near, seed=21)
    dist, assignment, gap = ops.emd(x.cuda(), y.cuda())
    assert dist.is_cuda and assignment.is_cuda and gap.is_cuda
    check_certified(x, y, dist.cpu(), assignment.cpu(), gap.cpu(), eps=1e-3)


@cuda
@pytest.mark.parametrize("n, dim", [(1, 3), (2, 3), (7, 1), (1000, 3), (33, 6)])
def test_cuda_any_size_and_dimension(n, dim):
    x, y = random_pair(2, n, dim, torch.float32, seed=n)
    dist, assignment, gap = ops.emd(x.cuda(), y.cuda())
    check_certified(x, y, dist.cpu(), assignment.cpu(), gap.cpu(), eps=1e-3)
    dist, assignment, gap = ops.emd(x.cuda(), y.cuda(), max_iters=1)
    for b in range(2):
        assert sorted(assignment[b].tolist()) == list(range(n))
        assert assigned_cost(x[b], y[b], assignment[b].cpu()) - exact_cost(x[b], y[b]) <= float(gap[b]) * (1 + 1e-6) + 1e-9


@cuda
def test_cuda_gradients_and_loss():
    x, y = random_pair(2, 128, 3, torch.float32, seed=22)
    xc = x.cuda().requires_grad_(True)
    yc = y.cuda().requires_grad_(True)
    ops.emd_loss(xc, yc, sqrt=True).backward()
    assert torch.isfinite(xc.grad).all() and torch.isfinite(yc.grad).all()
    dist, assignment, _ = ops.emd(x.cuda(), y.cuda())
    matched = y.cuda().gather(1, assignment[..., None].expand(-1, -1, 3))
    torch.testing.assert_close(dist, ((x.cuda() - matched) ** 2).sum(-1))
    # The gradients against the CPU path's formula, on the CUDA kernel's own assignment:
    # d/dx_i mean_b mean_i |x_i - y_s(i)| = (x_i - y_s(i)) / |x_i - y_s(i)| / (B N), and the
    # negative of it scattered to y_s(i).
    a = assignment.cpu()
    diff = (x - y.gather(1, a[..., None].expand(-1, -1, 3))).double()
    expected_x = diff / diff.norm(dim=-1, keepdim=True) / (2 * 128)
    expected_y = torch.zeros_like(expected_x).scatter_add(1, a[..., None].expand(-1, -1, 3), -expected_x)
    torch.testing.assert_close(xc.grad.cpu().double(), expected_x, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(yc.grad.cpu().double(), expected_y, rtol=1e-4, atol=1e-7)
    # and the CPU op's gradients on the same assignment agree with the formula too
    xs, ys = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
    cpu_assignment = ops.emd(x, y)[1]
    if torch.equal(cpu_assignment, a):
        ops.emd_loss(xs, ys, sqrt=True).backward()
        torch.testing.assert_close(xs.grad.double(), expected_x, rtol=1e-4, atol=1e-7)


# ----------------------------------------------------------------- instruction sets
_ISA_CHILD = r"""
import hashlib, sys
import torch
sys.path.insert(0, sys.argv[1])
import pointcmt_pyg.ops as ops
from test_emd import check_certified, random_pair
digest = hashlib.sha256()
for dtype in (torch.float32, torch.float64):
    for n, dim, near in ((1024, 3, False), (1024, 3, True), (37, 3, False), (203, 5, False), (64, 2, True)):
        x, y = random_pair(2, n, dim, dtype, near=near, seed=n + dim)
        dist, assignment, gap = ops.emd(x, y)
        if n <= 203:
            check_certified(x, y, dist, assignment, gap, 1e-3)
        for t in (dist, assignment, gap):
            digest.update(t.contiguous().numpy().tobytes())
print("digest", digest.hexdigest())
"""


@pytest.mark.skipif(ops.backend() != "extension", reason="the variable is read by the compiled kernels")
def test_every_instruction_set_gives_the_same_assignment():
    # The auction's scans are compiled per instruction set with vectors of that set's width (16, 32, 64
    # bytes) and picked by the widest the CPU has, capped by POINTCMT_CPU_ISA (read once per process:
    # hence a child per cap). Exact minima and compares, no FMA contraction: every path must give bitwise
    # the same distances, assignment and gap, and each a certified one.
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    digests = {}
    for isa in ("scalar", "avx2", "avx512"):
        env = dict(os.environ, POINTCMT_CPU_ISA=isa, OMP_NUM_THREADS="1")
        out = subprocess.run([sys.executable, "-c", _ISA_CHILD, root], env=env, capture_output=True, text=True,
                             cwd=os.path.dirname(os.path.abspath(__file__)), timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
        digests[isa] = out.stdout.split("digest")[-1].strip()
    assert len(set(digests.values())) == 1, digests
