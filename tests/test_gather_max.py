"""``pointcmt::gather_max`` (the max over gathered rows ``values[slots[m, k]]``
and the winning row, the dense EdgeConv of a one-layer MLP) against the
block path (``values[slots]`` then ``torch.max``) and a loop: ties to the first
slot, NaN, ``-inf``, empty slots anywhere in a row, centres without a slot,
float32/float64, the gradient, fake kernels, compile, and errors naming the
argument."""
import pytest
import torch

from pointcmt_pyg import ops
from pointcmt_pyg.ops.gather_max import gather_max_reference


def _cases(dtype):
    g = torch.Generator().manual_seed(4)
    values = torch.randn(300, 70, generator=g, dtype=torch.float64).to(dtype)
    slots = torch.randint(0, 300, (250, 20), generator=g)
    holes = slots.clone()
    holes[torch.rand(holes.shape, generator=g) < 0.3] = -1          # empty slots anywhere
    holes[7] = -1                                                   # a centre without a slot
    holes[9, :-1] = -1                                              # only its last slot
    ties_values = torch.randint(0, 2, (40, 33), generator=g).to(dtype)
    ties_slots = torch.randint(0, 40, (64, 5), generator=g)
    nan_values = torch.randn(12, 4, generator=g, dtype=torch.float64).to(dtype)
    nan_values[3, 0] = nan_values[5, 0] = nan_values[8, 2] = float("nan")
    nan_values[1, 1] = nan_values[2, 3] = float("-inf")
    nan_slots = torch.randint(-1, 12, (30, 6), generator=g)
    nan_slots[0] = torch.tensor([1, -1, 3, 5, -1, 8])
    return {"random": (values, slots), "holes": (values, holes), "ties": (ties_values, ties_slots),
            "nan and -inf": (nan_values, nan_slots), "one slot": (values, slots[:, :1]),
            "no centres": (values, slots[:0]), "no channels": (values[:, :0], slots),
            "no slots": (values, slots[:, :0])}


def _loop(values, slots):
    """First valid slot reaching the max (NaN wins, the first NaN); 0 and -1
    for a centre without a valid slot."""
    m, k = slots.shape
    c = values.shape[1]
    out, arg = torch.zeros(m, c, dtype=values.dtype), torch.full((m, c), -1, dtype=torch.long)
    for i in range(m):
        for ch in range(c):
            best, at = None, -1
            for j in slots[i].tolist():
                if j < 0:
                    continue
                v = values[j, ch].item()
                if at < 0 or v > best or (v != v and best == best):
                    best, at = v, j
            if at >= 0:
                out[i, ch], arg[i, ch] = best, at
    return out, arg


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_gather_max_equals_the_block_max_and_a_loop(dtype):
    for name, (values, slots) in _cases(dtype).items():
        out, arg = ops.gather_max(values, slots)
        ref_out, ref_arg = gather_max_reference(values, slots)
        assert torch.equal(arg, ref_arg), name
        torch.testing.assert_close(out, ref_out, rtol=0, atol=0, equal_nan=True, msg=name)
        if name in ("holes", "ties", "nan and -inf"):
            loop_out, loop_arg = _loop(values, slots)
            assert torch.equal(arg, loop_arg), name
            torch.testing.assert_close(out, loop_out, rtol=0, atol=0, equal_nan=True, msg=name)
    values, slots = _cases(dtype)["random"]
    block_values, block_slot = values[slots].max(dim=1)              # no empty slots: plain torch.max
    out, arg = ops.gather_max(values, slots)
    assert torch.equal(out, block_values) and torch.equal(arg, slots.gather(1, block_slot))


def test_a_centre_plus_the_max_is_the_max_of_the_sums_bit_for_bit():
    """The identity the dense EdgeConv relies on: max_j fl(a + b_j) = fl(a + max_j b_j)."""
    g = torch.Generator().manual_seed(8)
    a = torch.randn(500, 64, generator=g) * 10
    b = torch.randn(900, 64, generator=g) * 1e-3
    slots = torch.randint(0, 900, (500, 20), generator=g)
    sums = a.unsqueeze(1) + b[slots]
    assert torch.equal(sums.amax(dim=1), a + ops.gather_max(b, slots)[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_gather_max_gradient_goes_to_the_winning_row(dtype):
    for name, (values, slots) in _cases(dtype).items():
        leaf = values.clone().requires_grad_()
        out, arg = ops.gather_max(leaf, slots)
        grad = torch.randn(out.shape, dtype=dtype)
        out.backward(grad)
        want = torch.zeros_like(values)
        for i, ch in (arg >= 0).nonzero().tolist():
            want[arg[i, ch], ch] += grad[i, ch]
        torch.testing.assert_close(leaf.grad, want, msg=name)
        block_leaf = values.clone().requires_grad_()                    # the reference's own autograd
        gather_max_reference(block_leaf, slots)[0].backward(grad)
        torch.testing.assert_close(block_leaf.grad, want, msg=name)
    values = torch.randn(30, 5, dtype=torch.float64, requires_grad=True)  # no ties: a true gradient
    slots = torch.randint(-1, 30, (12, 6))
    assert torch.autograd.gradcheck(lambda v: ops.gather_max(v, slots)[0], (values,))


def test_half_precision_values_take_the_reference():
    values = torch.randn(50, 8).to(torch.bfloat16)
    slots = torch.randint(-1, 50, (20, 4))
    out, arg = ops.gather_max(values, slots)
    want_out, want_arg = gather_max_reference(values, slots)
    assert out.dtype == torch.bfloat16 and torch.equal(out, want_out) and torch.equal(arg, want_arg)


def test_gather_max_fake_kernel_and_compile():
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        out, arg = torch.ops.pointcmt.gather_max(torch.empty(9, 3), torch.empty(5, 4, dtype=torch.long))
    assert out.shape == (5, 3) and arg.shape == (5, 3) and arg.dtype == torch.long
    values, slots = torch.randn(40, 6), torch.randint(0, 40, (10, 7))
    compiled = torch.compile(lambda v, s: ops.gather_max(v, s)[0] * 2, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(values, slots), values[slots].amax(1) * 2)


def test_bad_arguments_are_errors_naming_them():
    values, slots = torch.randn(10, 3), torch.randint(0, 10, (4, 2))
    with pytest.raises(ValueError, match="'values' must have shape"):
        ops.gather_max(torch.randn(10), slots)
    with pytest.raises(TypeError, match="'values' must be a floating-point"):
        ops.gather_max(torch.ones(10, 3, dtype=torch.long), slots)
    with pytest.raises(ValueError, match="'slots' must be an int64"):
        ops.gather_max(values, slots.int())
    with pytest.raises(ValueError, match="'slots' must index rows of 'values'"):
        ops.gather_max(values, torch.tensor([[0, 10]]))
    with pytest.raises(TypeError, match="'slots' must be a tensor"):
        ops.gather_max(values, [[0]])
    if ops.backend() == "extension":
        with pytest.raises(RuntimeError, match="'slots' must index rows of 'values'"):
            torch.ops.pointcmt.gather_max(values, torch.tensor([[0, 10]]))
        with pytest.raises(RuntimeError, match="'values' must be float32 or float64"):
            torch.ops.pointcmt.gather_max(torch.ones(10, 3, dtype=torch.long), slots)
