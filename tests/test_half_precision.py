"""float16 / bfloat16 points (mixed precision, torch.autocast): every op accepts them and
computes in float32, so the results are exactly the op's results on the float32 values of
the half-precision points; models train a step under CPU bf16 autocast."""
import pytest
import torch
import torch.nn.functional as F
from torch_geometric.data import Batch, Data

import pointcmt_pyg.ops as ops
from pointcmt_pyg.models import get_model

HALVES = [torch.float16, torch.bfloat16]


def _clouds(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(60, 3, generator=g).to(dtype)
    batch = torch.tensor([0] * 25 + [1] * 35)
    return x, batch


@pytest.mark.parametrize("dtype", HALVES, ids=["f16", "bf16"])
def test_point_ops_on_half_points_equal_the_ops_on_their_float32_values(dtype):
    x, batch = _clouds(dtype)
    ref = x.float()                         # exactly representable: the same points
    assert torch.equal(ops.fps(x, batch, 0.5, random_start=False), ops.fps(ref, batch, 0.5, random_start=False))
    assert torch.equal(ops.knn(x, x, 6, batch, batch), ops.knn(ref, ref, 6, batch, batch))
    assert torch.equal(ops.knn_graph(x, 5, batch, cosine=True), ops.knn_graph(ref, 5, batch, cosine=True))
    assert torch.equal(ops.radius(x, x, 0.3, batch, batch, 16), ops.radius(ref, ref, 0.3, batch, batch, 16))
    assert torch.equal(ops.radius_graph(x, 0.3, batch), ops.radius_graph(ref, 0.3, batch))
    dense = x[:50].view(2, 25, 3)
    assert torch.equal(ops.fps_dense(dense, 7, random_start=False), ops.fps_dense(dense.float(), 7, random_start=False))
    dist, idx = ops.knn_dense(dense, dense, 4)
    ref_dist, ref_idx = ops.knn_dense(dense.float(), dense.float(), 4)
    assert torch.equal(idx, ref_idx) and torch.equal(dist, ref_dist) and dist.dtype == torch.float32


@pytest.mark.parametrize("dtype", HALVES, ids=["f16", "bf16"])
def test_emd_on_half_points_is_solved_in_float32_with_gradients_in_half(dtype):
    g = torch.Generator().manual_seed(1)
    a = torch.rand(2, 32, 3, generator=g).to(dtype).requires_grad_(True)
    b = torch.rand(2, 32, 3, generator=g).to(dtype)
    dist, assignment, gap = ops.emd(a, b)
    ref = ops.emd(a.detach().float(), b.float())
    assert dist.dtype == torch.float32 and torch.equal(assignment, ref[1]) and torch.equal(dist, ref[0])
    ops.emd_loss(a, b, sqrt=True).backward()
    assert a.grad.dtype == dtype and torch.isfinite(a.grad.float()).all() and a.grad.float().abs().sum() > 0


def test_mixed_half_dtypes_are_still_an_error_naming_the_arguments():
    x = torch.rand(10, 3)
    with pytest.raises(TypeError, match="'x' and 'y' must have the same dtype"):
        ops.knn(x.half(), x.bfloat16(), 2)


@pytest.mark.parametrize("name", ["pointnet2", "dgcnn"])
def test_students_train_a_step_under_cpu_bf16_autocast(name):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(2)
    data = Batch.from_data_list([Data(pos=torch.rand(64, 3, generator=g), y=torch.tensor([i % 3]))
                                 for i in range(4)])
    model = get_model(name, 3, **({"k": 8} if name == "dgcnn" else {}))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    before = [p.detach().clone() for p in model.parameters()]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(data)
        loss = F.cross_entropy(logits.float(), data.y)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


# ------------------------------------------------------------------ Trainer(precision=...)
def _tiny_set(n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        y = i % 3
        pos = 0.5 * torch.randn(32, 3, generator=g)
        pos[:, y] += 1.0
        out.append(Data(pos=pos, y=torch.tensor([y])))
    return out


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.point = torch.nn.Sequential(torch.nn.Linear(3, 32), torch.nn.ReLU(), torch.nn.Linear(32, 32))
        self.head = torch.nn.Linear(32, 3)

    def forward(self, data):
        from torch_geometric.nn import global_max_pool
        return self.head(global_max_pool(self.point(data.pos), data.batch))


def test_trainer_bf16_autocasts_the_forward_and_learns():
    from torch_geometric.loader import DataLoader
    from pointcmt_pyg.train import Trainer, seed_everything
    seen = []

    class Spy(_Net):
        def forward(self, data):
            out = super().forward(data)
            seen.append(out.dtype)
            return out

    seed_everything(0)
    model = Spy()
    trainer = Trainer(model, torch.optim.Adam(model.parameters(), lr=1e-2), device="cpu", progress=False,
                      precision="bf16")
    loader = DataLoader(_tiny_set(), batch_size=8, shuffle=True)
    history = trainer.fit(loader, DataLoader(_tiny_set(12, 1), batch_size=6), epochs=4)
    assert set(seen) == {torch.bfloat16}                 # every forward ran under autocast
    assert history["train_loss"][-1] < history["train_loss"][0]
    assert all(p.dtype == torch.float32 for p in model.parameters())   # float32 master weights
    assert isinstance(history["val_oa"][-1], float)


@pytest.mark.parametrize("native", [False, True])
def test_trainer_warns_about_bf16_on_a_cpu_that_emulates_it(monkeypatch, native):
    # An AVX2-only CPU runs bf16 autocast through oneDNN's emulation, many times slower than float32:
    # the trainer says so (and names the way out) instead of silently crawling.
    import warnings
    from pointcmt_pyg.train import trainer as trainer_module
    assert isinstance(trainer_module.cpu_has_native_bf16(), bool)      # the real probe, on this CPU
    monkeypatch.setattr(trainer_module, "cpu_has_native_bf16", lambda: native)
    model = _Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer_module.Trainer(model, optimizer, device="cpu", progress=False, precision="bf16")
        trainer_module.Trainer(model, optimizer, device="cpu", progress=False, precision="32")
    slow = [w for w in caught if "without native bfloat16" in str(w.message)]
    assert len(slow) == (0 if native else 1)
    if not native:
        assert slow[0].category is RuntimeWarning and "precision='32'" in str(slow[0].message)


def test_trainer_rejects_an_unknown_precision():
    from pointcmt_pyg.train import Trainer
    model = _Net()
    with pytest.raises(ValueError, match="precision must be one of"):
        Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), device="cpu", precision="fp8")


def test_trainer_fp16_scales_the_loss_and_checkpoints_the_scaler(tmp_path):
    from torch_geometric.loader import DataLoader
    from pointcmt_pyg.train import Trainer, load_checkpoint, seed_everything
    seed_everything(0)
    model = _Net()
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.05), device="cpu", progress=False,
                      precision="16", out_dir=tmp_path)
    assert trainer.scaler is not None
    trainer.fit(DataLoader(_tiny_set(), batch_size=8), None, epochs=1)
    saved = load_checkpoint(tmp_path / "last.pt")
    assert saved["scaler"] is not None and saved["scaler"]["scale"] > 0


def test_pipeline_runs_every_stage_in_bf16_and_records_it(tmp_path):
    import json
    from pointcmt_pyg.cli import config_from_args, pipeline_parser
    from pointcmt_pyg.pipeline import PipelineConfig, run_pipeline
    from test_pipeline import TINY

    with pytest.raises(ValueError, match="precision must be one of"):
        PipelineConfig(precision="fp8").resolved()
    args = pipeline_parser().parse_args(["--precision", "bf16"])
    assert config_from_args(args).precision == "bf16"
    # `balanced`: every stage, the CMPG's included, under bf16
    results = run_pipeline(PipelineConfig(out=str(tmp_path), precision="bf16", recipe="balanced",
                                          **TINY))
    for stage in ("teacher", "cmpg", "baseline", "pointcmt"):
        assert json.loads((tmp_path / stage / "settings.json").read_text())["precision"] == "bf16"
    assert results["stages"]["pointcmt"]["test"]["num_samples"] == 9
    # float32 runs keep settings without the key (their earlier runs stay resumable)
    assert "precision" not in PipelineConfig(**TINY).settings("pointcmt")
