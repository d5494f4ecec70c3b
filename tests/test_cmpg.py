"""Tests of pointcmt_pyg.nn.cmpg: the Cross-Modal Point Generator and its files."""
import pytest
import torch
from torch import nn

from pointcmt_pyg.nn.cmpg import CMPG, load_cmpg, save_cmpg


def test_default_is_the_papers_dropout_plus_bias_free_linear():
    cmpg = CMPG()
    assert (cmpg.in_dim, cmpg.num_points) == (512, 1024)
    layers = list(cmpg.net)
    assert [type(m) for m in layers] == [nn.Dropout, nn.Linear]
    assert layers[0].p == 0.5
    assert (layers[1].in_features, layers[1].out_features) == (512, 3072)
    assert layers[1].bias is None
    assert sum(p.numel() for p in cmpg.parameters()) == 512 * 3072
    f = torch.randn(4, 512)
    out = cmpg.eval()(f)
    assert out.shape == (4, 1024, 3)
    # point i is (x, y, z) = outputs 3i, 3i+1, 3i+2 of the linear layer
    flat = f @ layers[1].weight.T
    torch.testing.assert_close(out, flat.view(4, 1024, 3))
    torch.testing.assert_close(out[2, 7], flat[2, 21:24])


def test_dropout_only_in_training_mode():
    torch.manual_seed(0)
    cmpg = CMPG(in_dim=16, num_points=8)
    f = torch.randn(3, 16)
    cmpg.eval()
    assert torch.equal(cmpg(f), cmpg(f))
    cmpg.train()
    a, b = cmpg(f), cmpg(f)
    assert not torch.equal(a, b)
    # inverted dropout keeps the expectation: mean over many draws -> eval output
    draws = torch.stack([cmpg(f) for _ in range(1000)])
    mean, standard_error = draws.mean(0), draws.std(0) / 1000 ** 0.5
    # within 5 standard errors of the mean, element by element (not a blanket 0.15)
    assert ((mean - cmpg.eval()(f)).abs() <= 5 * standard_error + 1e-6).all()
    assert standard_error.max() < 0.05


def test_hidden_layers_and_point_count():
    cmpg = CMPG(in_dim=32, num_points=100, hidden=(64, 48), dropout=0.1)
    types = [type(m) for m in cmpg.net]
    assert types == [nn.Dropout, nn.Linear, nn.ReLU, nn.Dropout, nn.Linear, nn.ReLU,
                     nn.Dropout, nn.Linear]
    linears = [m for m in cmpg.net if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(32, 64), (64, 48), (48, 300)]
    assert linears[0].bias is not None and linears[-1].bias is None
    assert all(m.p == 0.1 for m in cmpg.net if isinstance(m, nn.Dropout))
    assert cmpg(torch.randn(5, 32)).shape == (5, 100, 3)


def test_cmpg_fits_fixed_targets_in_a_few_steps():
    torch.manual_seed(0)
    cmpg = CMPG(in_dim=8, num_points=16, dropout=0.0)
    f, target = torch.randn(4, 8), torch.rand(4, 16, 3) - 0.5
    opt = torch.optim.Adam(cmpg.parameters(), lr=0.05)
    losses = []
    for _ in range(30):
        loss = (cmpg(f) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.05 * losses[0], losses


def test_save_load_roundtrip_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    cmpg = CMPG(in_dim=24, num_points=32, hidden=(40,), dropout=0.3)
    path = save_cmpg(cmpg, tmp_path / "cmpg.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cmpg.pt"]
    loaded = load_cmpg(path)
    assert isinstance(loaded, CMPG) and not loaded.training
    assert loaded.config() == {"in_dim": 24, "num_points": 32, "hidden": [40], "dropout": 0.3}
    f = torch.randn(3, 24)
    assert torch.equal(loaded(f), cmpg.eval()(f))
    default = load_cmpg(save_cmpg(CMPG(), tmp_path / "default.pt"))
    assert [type(m) for m in default.net] == [nn.Dropout, nn.Linear]


def test_cmpg_bad_inputs(tmp_path):
    cmpg = CMPG(in_dim=512)
    with pytest.raises(ValueError, match=r"f must have shape \[B, 512\] \(in_dim=512\), got \(2, 256\)"):
        cmpg(torch.randn(2, 256))
    with pytest.raises(ValueError, match=r"f must have shape \[B, 512\]"):
        cmpg(torch.randn(512))
    with pytest.raises(TypeError, match="floating point"):
        cmpg(torch.zeros(2, 512, dtype=torch.long))
    with pytest.raises(TypeError, match="f must be a tensor"):
        cmpg([0.0] * 512)
    with pytest.raises(ValueError, match="num_points must be a positive int"):
        CMPG(num_points=0)
    with pytest.raises(ValueError, match="hidden must be a sequence of positive ints"):
        CMPG(hidden=(64, -1))
    with pytest.raises(ValueError, match="dropout must be a probability"):
        CMPG(dropout=1.0)
    with pytest.raises(TypeError, match="must be a CMPG"):
        save_cmpg(nn.Linear(2, 2), tmp_path / "x.pt")
    from pointcmt_pyg.nn.teacher import MultiViewTeacher, save_teacher
    save_teacher(MultiViewTeacher(2), tmp_path / "teacher.pt")
    with pytest.raises(ValueError, match="is not a CMPG file"):
        load_cmpg(tmp_path / "teacher.pt")
