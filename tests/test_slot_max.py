"""``pointcmt::slot_max`` (the max over a padded block's slots and its slot,
the dense students' aggregation) and its backward, against ``torch.max`` and
a loop: ties to the first slot, NaN, ``-inf`` padding, float32/float64, the
gradient, fake kernels, and arguments named in errors."""
import pytest
import torch

from pointcmt_pyg import ops
from pointcmt_pyg.ops.slot_max import (slot_max_backward, slot_max_backward_reference,
                                       slot_max_reference)


def _blocks(dtype):
    g = torch.Generator().manual_seed(3)
    random = torch.randn(40, 20, 70, generator=g, dtype=torch.float64).to(dtype)
    padded = random.clone()
    padded[5:, 9:] = float("-inf")
    ties = torch.randint(0, 2, (64, 5, 33), generator=g).to(dtype)
    nans = torch.randn(9, 7, 4, generator=g, dtype=torch.float64).to(dtype)
    nans[1, 2, 0] = nans[1, 5, 0] = nans[4, 0, 3] = nans[8, 6, 2] = float("nan")
    wide = torch.randn(3, 1024, 17, generator=g, dtype=torch.float64).to(dtype)   # a global pool
    return {"random": random, "padded": padded, "ties": ties, "nans": nans, "wide": wide,
            "one slot": random[:, :1], "no centres": random[:0], "no channels": random[:, :, :0]}


def _loop_max(block):
    """First slot reaching the max (NaN wins, the first NaN), by plain loops."""
    m, w, c = block.shape
    values, slot = torch.empty(m, c, dtype=block.dtype), torch.empty(m, c, dtype=torch.long)
    for i in range(m):
        for k in range(c):
            best, at = block[i, 0, k].item(), 0
            for j in range(1, w):
                v = block[i, j, k].item()
                if (v > best) or (v != v and best == best):
                    best, at = v, j
            values[i, k], slot[i, k] = best, at
    return values, slot


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_slot_max_equals_torch_max_and_a_loop(dtype):
    for name, block in _blocks(dtype).items():
        values, slot = ops.slot_max(block)
        want_values, want_slot = torch.max(block, dim=1) if block.numel() else slot_max_reference(block)
        assert torch.equal(slot, want_slot), name
        torch.testing.assert_close(values, want_values, rtol=0, atol=0, equal_nan=True, msg=name)
        if name in ("ties", "nans", "padded"):
            loop_values, loop_slot = _loop_max(block)
            assert torch.equal(slot, loop_slot), name
            torch.testing.assert_close(values, loop_values, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_slot_max_gradient_goes_to_the_winning_slot(dtype):
    for name, block in _blocks(dtype).items():
        leaf = block.clone().requires_grad_()
        values, slot = ops.slot_max(leaf)
        grad = torch.randn(values.shape, dtype=dtype)
        values.backward(grad)
        want = torch.zeros_like(block).scatter_(1, slot.unsqueeze(1), grad.unsqueeze(1))
        assert torch.equal(leaf.grad, want), name
        assert torch.equal(slot_max_backward(grad, slot, block.shape[1]),
                           slot_max_backward_reference(grad, slot, block.shape[1])), name
    block = torch.randn(6, 4, 3, dtype=torch.float64, requires_grad=True)   # no ties: a true gradient
    assert torch.autograd.gradcheck(lambda b: ops.slot_max(b)[0], (block,))


def test_half_precision_blocks_take_torch_max():
    block = torch.randn(10, 6, 8).to(torch.bfloat16)
    values, slot = ops.slot_max(block)
    want_values, want_slot = block.max(dim=1)
    assert values.dtype == torch.bfloat16 and torch.equal(values, want_values) and torch.equal(slot, want_slot)


def test_slot_max_fake_kernels_and_compile():
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        block = torch.empty(5, 7, 3)
        values, slot = torch.ops.pointcmt.slot_max(block)
        grad = torch.ops.pointcmt.slot_max_backward(values, slot, 7)
    assert values.shape == (5, 3) and slot.dtype == torch.long and grad.shape == (5, 7, 3)
    block = torch.randn(4, 6, 5)
    compiled = torch.compile(lambda b: ops.slot_max(b)[0] * 2, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(block), block.amax(1) * 2)


def test_bad_blocks_are_errors_naming_the_argument():
    with pytest.raises(ValueError, match="'block' must have shape"):
        ops.slot_max(torch.randn(4, 5))
    with pytest.raises(ValueError, match="'block' needs at least one slot"):
        ops.slot_max(torch.randn(4, 0, 5))
    with pytest.raises(TypeError, match="'block' must be a floating-point"):
        ops.slot_max(torch.ones(4, 3, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="'block' must be a tensor"):
        ops.slot_max([[1.0]])
    if ops.backend() == "extension":
        with pytest.raises(RuntimeError, match="'block' must be float32 or float64"):
            torch.ops.pointcmt.slot_max(torch.ones(4, 3, 2, dtype=torch.long))
