"""``pointcmt::segment_max`` (the max over the rows of every CSR segment and
the winning row, the dense students' aggregation) and its backward, against a
loop and the padded-block reference: ties to the first row, NaN, empty
segments (0 and -1), float32/float64, the gradient, fake kernels, and
arguments named in errors."""
import pytest
import torch

from pointcmt_pyg import ops
from pointcmt_pyg.ops.segment_max import segment_max_backward_reference, segment_max_reference


def _ptr(counts):
    return torch.cat([torch.zeros(1, dtype=torch.long), torch.tensor(counts, dtype=torch.long).cumsum(0)])


def _cases(dtype):
    g = torch.Generator().manual_seed(4)
    counts = torch.randint(0, 25, (60,), generator=g)
    counts[[3, 17, 59]] = 0                                  # empty segments, also the last one
    ragged = torch.randn(int(counts.sum()), 70, generator=g, dtype=torch.float64).to(dtype)
    ties = torch.randint(0, 2, (5 * 33, 9), generator=g).to(dtype)
    nans = torch.randn(12, 4, generator=g, dtype=torch.float64).to(dtype)
    nans[1, 0] = nans[3, 0] = nans[7, 3] = nans[11, 2] = float("nan")
    wide = torch.randn(3 * 1024, 17, generator=g, dtype=torch.float64).to(dtype)   # a global pool
    return {"ragged": (ragged, _ptr(counts.tolist())),
            "ties": (ties, _ptr([33] * 5)),
            "nans": (nans, _ptr([2, 5, 0, 5])),
            "wide": (wide, _ptr([1024] * 3)),
            "one row each": (ragged[:7], _ptr([1] * 7)),
            "all empty": (ragged[:0], _ptr([0, 0, 0])),
            "no segments": (ragged[:0], _ptr([])),
            "no channels": (ragged[:, :0], _ptr(counts.tolist()))}


def _loop_max(src, ptr):
    """First row reaching the max (NaN wins, the first NaN) by plain loops; 0 / -1 when empty."""
    m, c = ptr.numel() - 1, src.shape[1]
    values, arg = torch.zeros(m, c, dtype=src.dtype), torch.full((m, c), -1, dtype=torch.long)
    for i in range(m):
        lo, hi = int(ptr[i]), int(ptr[i + 1])
        for k in range(c):
            if hi == lo:
                continue
            best, at = src[lo, k].item(), lo
            for r in range(lo + 1, hi):
                v = src[r, k].item()
                if (v > best) or (v != v and best == best):
                    best, at = v, r
            values[i, k], arg[i, k] = best, at
    return values, arg


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_segment_max_equals_a_loop_and_the_reference(dtype):
    for name, (src, ptr) in _cases(dtype).items():
        values, arg = ops.segment_max(src, ptr)
        want_values, want_arg = _loop_max(src, ptr)
        assert torch.equal(arg, want_arg), name
        torch.testing.assert_close(values, want_values, rtol=0, atol=0, equal_nan=True, msg=name)
        ref_values, ref_arg = segment_max_reference(src, ptr)
        assert torch.equal(ref_arg, want_arg), name
        torch.testing.assert_close(ref_values, want_values, rtol=0, atol=0, equal_nan=True, msg=name)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_segment_max_gradient_goes_to_the_winning_row(dtype):
    for name, (src, ptr) in _cases(dtype).items():
        leaf = src.clone().requires_grad_()
        values, arg = ops.segment_max(leaf, ptr)
        grad = torch.randn(values.shape, dtype=dtype)
        values.backward(grad)
        want = torch.zeros_like(src)
        for i in range(arg.shape[0]):
            for k in range(arg.shape[1]):
                if arg[i, k] >= 0:
                    want[arg[i, k], k] = grad[i, k]
        assert torch.equal(leaf.grad, want), name
        assert torch.equal(torch.ops.pointcmt.segment_max_backward(grad, arg, ptr, src.shape[0]),
                           segment_max_backward_reference(grad, arg, ptr, src.shape[0])), name
    src = torch.randn(9, 3, dtype=torch.float64, requires_grad=True)       # no ties: a true gradient
    assert torch.autograd.gradcheck(lambda s: ops.segment_max(s, _ptr([4, 0, 5]))[0], (src,))


def test_segment_max_equals_slot_max_on_a_full_block():
    block = torch.randn(30, 16, 40)
    values, arg = ops.segment_max(block.reshape(-1, 40), _ptr([16] * 30))
    want_values, want_slot = ops.slot_max(block)
    assert torch.equal(values, want_values)
    assert torch.equal(arg, want_slot + 16 * torch.arange(30).unsqueeze(1))


def test_half_precision_takes_the_reference_with_the_same_gradient():
    src = torch.randn(20, 6).to(torch.bfloat16).requires_grad_()
    ptr = _ptr([5, 0, 15])
    values, arg = ops.segment_max(src, ptr)
    want_values, want_arg = _loop_max(src.detach().float(), ptr)
    assert values.dtype == torch.bfloat16 and torch.equal(arg, want_arg)
    assert torch.equal(values.float(), want_values)
    values.sum().backward()
    assert src.grad.sum().item() == 12.0 and set(src.grad.float().unique().tolist()) <= {0.0, 1.0}


def test_segment_max_fake_kernels_and_compile():
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        src, ptr = torch.empty(11, 3), torch.zeros(6, dtype=torch.long)
        values, arg = torch.ops.pointcmt.segment_max(src, ptr)
        grad = torch.ops.pointcmt.segment_max_backward(values, arg, ptr, 11)
    assert values.shape == (5, 3) and arg.dtype == torch.long and grad.shape == (11, 3)
    src, ptr = torch.randn(12, 5), _ptr([6, 6])
    compiled = torch.compile(lambda s: ops.segment_max(s, ptr)[0] * 2, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(src), src.view(2, 6, 5).amax(1) * 2)


@pytest.mark.parametrize("call, error, match", [
    (lambda: ops.segment_max(torch.randn(4), _ptr([4])), ValueError, "'src' must have shape"),
    (lambda: ops.segment_max(torch.ones(4, 2, dtype=torch.long), _ptr([4])), TypeError, "'src' must be a floating"),
    (lambda: ops.segment_max([[1.0]], _ptr([1])), TypeError, "'src' must be a tensor"),
    (lambda: ops.segment_max(torch.randn(4, 2), [0, 4]), TypeError, "'ptr' must be a tensor"),
    (lambda: ops.segment_max(torch.randn(4, 2), torch.tensor([0, 4])[:0]), ValueError, "'ptr' must be a 1-d"),
    (lambda: ops.segment_max(torch.randn(4, 2), torch.tensor([0.0, 4.0])), ValueError, "'ptr' must be a 1-d"),
    (lambda: ops.segment_max(torch.randn(4, 2), _ptr([3])), ValueError, "'ptr' must start at 0 and end at the 4"),
    (lambda: ops.segment_max(torch.randn(4, 2), torch.tensor([0, 3, 2, 4])), ValueError, "non-decreasing"),
])
def test_bad_arguments_are_errors_naming_them(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_the_kernels_check_their_arguments_too():
    if ops.backend() != "extension":
        pytest.skip("the compiled kernels are not loaded")
    with pytest.raises(RuntimeError, match="'ptr' must start at 0 and end at the 4 rows"):
        torch.ops.pointcmt.segment_max(torch.randn(4, 2), _ptr([3]))
    with pytest.raises(RuntimeError, match="'ptr' must be non-decreasing"):
        torch.ops.pointcmt.segment_max(torch.randn(4, 2), torch.tensor([0, 3, 2, 4]))
    with pytest.raises(RuntimeError, match="'src' must be float32 or float64"):
        torch.ops.pointcmt.segment_max(torch.ones(4, 2, dtype=torch.long), _ptr([4]))
    with pytest.raises(RuntimeError, match="'ptr' must start at 0 and end at the 5"):
        torch.ops.pointcmt.segment_max_backward(torch.randn(1, 2), torch.zeros(1, 2, dtype=torch.long), _ptr([4]), 5)
