"""Trainer, metrics and checkpoints of pointcmt_pyg.train (CPU, tiny synthetic data)."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader
from torch_geometric.nn import global_mean_pool

from pointcmt_pyg.train import (History, MetricAccumulator, Trainer, atomic_save,
                                class_accuracies, confusion_matrix, load_checkpoint,
                                mean_class_accuracy, overall_accuracy, seed_everything)

NUM_CLASSES = 3


# ------------------------------------------------------------------ helpers
class TinyPointNet(nn.Module):
    """Per-point MLP, mean pool, dropout, linear head (a PyG-style classifier)."""

    def __init__(self, num_classes: int = NUM_CLASSES, hidden: int = 16, dropout: float = 0.3):
        super().__init__()
        self.point = nn.Sequential(nn.Linear(3, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, data):
        h = global_mean_pool(self.point(data.pos).relu(), data.batch)
        return self.head(self.drop(h))


def make_set(num: int, seed: int, flip_labels: bool = False, points: int = 12):
    """Class c: a blob shifted along axis c (learnable in a few epochs)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(num):
        y = i % NUM_CLASSES
        pos = 0.6 * torch.randn(points, 3, generator=g)
        pos[:, y] += 1.0
        label = (y + 1) % NUM_CLASSES if flip_labels else y
        out.append(Data(pos=pos, y=torch.tensor([label])))
    return out


def make_trainer(out_dir=None, seed=0, init_seed=0, grad_accum=1, **kwargs):
    seed_everything(init_seed)
    model = TinyPointNet()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.02, weight_decay=1e-2)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=4)
    return Trainer(model, optimizer, scheduler=scheduler, device="cpu", grad_accum=grad_accum,
                   out_dir=out_dir, seed=seed, progress=False, **kwargs)


def params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_params(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# ------------------------------------------------------------------ metrics
def test_confusion_and_accuracies_against_hand_computation():
    target = torch.tensor([0, 0, 0, 1, 1, 3, 3, 3, 3])
    pred = torch.tensor([0, 1, 0, 1, 0, 3, 3, 0, 2])
    conf = confusion_matrix(pred, target, num_classes=4)
    expected = torch.tensor([[2, 1, 0, 0],
                             [1, 1, 0, 0],
                             [0, 0, 0, 0],    # class 2 has no sample
                             [1, 0, 1, 2]])
    assert torch.equal(conf, expected)
    assert overall_accuracy(conf) == pytest.approx(5 / 9)
    acc = class_accuracies(conf)
    assert acc[0] == pytest.approx(2 / 3) and acc[1] == pytest.approx(1 / 2)
    assert torch.isnan(acc[2]) and acc[3] == pytest.approx(2 / 4)
    # mAcc over the classes present (0, 1, 3), the missing class left out.
    assert mean_class_accuracy(conf) == pytest.approx((2 / 3 + 1 / 2 + 1 / 2) / 3)


def test_metric_accumulator_weights_loss_per_sample():
    meter = MetricAccumulator(num_classes=2)
    logits_a = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]])   # preds 0, 1, 0
    meter.update(torch.tensor(1.0), logits_a, torch.tensor([0, 1, 1]))
    meter.update(torch.tensor(4.0), torch.tensor([[0.0, 5.0]]), torch.tensor([1]))
    out = meter.compute()
    assert out["loss"] == pytest.approx((1.0 * 3 + 4.0 * 1) / 4)
    assert torch.equal(out["confusion"], torch.tensor([[1, 0], [1, 2]]))
    assert out["oa"] == pytest.approx(3 / 4)
    assert out["macc"] == pytest.approx((1 + 2 / 3) / 2)
    assert out["num_samples"] == 4


def test_metrics_reject_bad_input():
    with pytest.raises(ValueError, match="target out of range"):
        confusion_matrix(torch.tensor([0]), torch.tensor([3]), num_classes=3)
    with pytest.raises(ValueError, match="pred has 2 entries"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([1]), num_classes=3)
    with pytest.raises(TypeError, match="integer"):
        confusion_matrix(torch.tensor([0.0]), torch.tensor([0]), num_classes=3)
    with pytest.raises(ValueError, match="num_classes"):
        confusion_matrix(torch.tensor([0]), torch.tensor([0]), num_classes=0)
    with pytest.raises(ValueError, match="square"):
        overall_accuracy(torch.zeros(2, 3))
    meter = MetricAccumulator(num_classes=2)
    with pytest.raises(ValueError, match="num_classes=2"):
        meter.update(torch.tensor(0.0), torch.zeros(1, 3), torch.tensor([0]))


# ------------------------------------------------------------------ training
def test_loss_falls_and_accuracy_rises_on_tiny_problem():
    train = DataLoader(make_set(48, seed=1), batch_size=8, shuffle=True)
    val = DataLoader(make_set(24, seed=2), batch_size=12)
    trainer = make_trainer()
    history = trainer.fit(train, val, epochs=4)
    losses = history["train_loss"]
    assert len(history) == 4 and losses[-1] < 0.7 * losses[0]
    assert history["val_oa"][-1] > 0.8           # chance is 1/3
    result = trainer.evaluate(val)
    assert set(result) >= {"oa", "macc", "loss", "confusion"}
    assert int(result["confusion"].sum()) == 24
    assert result["oa"] == pytest.approx(overall_accuracy(result["confusion"]))


def _kill_at(step_fn_calls, epoch_to_kill):
    """A step function that raises (a simulated kill) during the given epoch."""
    from pointcmt_pyg.train import default_step

    def step(model, batch):
        if model.training:
            step_fn_calls.append(1)
        if model.training and len(step_fn_calls) > epoch_to_kill * 6 + 2:
            raise KeyboardInterrupt("killed")
        return default_step(model, batch)
    return step


def test_kill_and_resume_is_bit_identical(tmp_path):
    data, val_data = make_set(48, seed=3), make_set(12, seed=4)

    def loaders():
        return (DataLoader(data, batch_size=8, shuffle=True),   # 6 batches per epoch
                DataLoader(val_data, batch_size=6))

    # Uninterrupted: 4 epochs.
    full = make_trainer(tmp_path / "full", seed=7, grad_accum=4)
    full_history = full.fit(*loaders(), epochs=4, restore_best=False)

    # Killed in the middle of epoch 3 (after 2 completed epochs and their checkpoint).
    calls = []
    killed = make_trainer(tmp_path / "killed", seed=7, grad_accum=4,
                          step_fn=_kill_at(calls, epoch_to_kill=2))
    with pytest.raises(KeyboardInterrupt):
        killed.fit(*loaders(), epochs=4, restore_best=False)
    assert load_checkpoint(tmp_path / "killed" / "last.pt")["epoch"] == 2

    # A new process: a differently initialised model, resumed from the checkpoint.
    resumed = make_trainer(tmp_path / "killed", seed=7, init_seed=123, grad_accum=4)
    assert not torch.equal(resumed.model.head.weight, full.model.head.weight)
    resumed_history = resumed.fit(*loaders(), epochs=4, resume=True, restore_best=False)

    assert_same_params(params(resumed.model), params(full.model))
    assert resumed_history["train_loss"] == full_history["train_loss"]
    assert resumed_history["val_oa"] == full_history["val_oa"]
    assert resumed_history.best_epoch == full_history.best_epoch
    assert_same_params(resumed.best_state, full.best_state)
    assert (resumed.optimizer.state_dict()["param_groups"][0]["lr"]
            == full.optimizer.state_dict()["param_groups"][0]["lr"])
    # The checkpoint files agree too.
    a = load_checkpoint(tmp_path / "full" / "last.pt")
    b = load_checkpoint(tmp_path / "killed" / "last.pt")
    assert a["epoch"] == b["epoch"] == 4
    assert_same_params(a["model"], b["model"])


def test_checkpoint_holds_resume_state(tmp_path):
    trainer = make_trainer(tmp_path)
    trainer.fit(DataLoader(make_set(12, seed=5), batch_size=6, shuffle=True), epochs=1)
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert {"model", "optimizer", "scheduler", "epoch", "best_metric", "history",
            "rng"} <= set(ckpt)
    assert {"torch", "numpy", "python", "cuda"} <= set(ckpt["rng"])
    assert ckpt["scheduler"]["last_epoch"] == 1
    assert History.load_json(tmp_path / "history.json").records[0]["epoch"] == 1
    # No validation loader: nothing to select on, the last state is kept.
    assert ckpt["best_epoch"] == 1 and ckpt["best_metric"] is None


class CountingLoader:
    def __init__(self, loader):
        self.loader, self.passes = loader, 0

    def __iter__(self):
        self.passes += 1
        return iter(self.loader)

    def __len__(self):
        return len(self.loader)


@pytest.mark.parametrize("select", ["val_oa", "val_loss"])
def test_best_state_is_selected_on_the_validation_loader(tmp_path, select):
    train = DataLoader(make_set(48, seed=6), batch_size=8, shuffle=True)
    # Validation labels disagree with training labels: the better the model
    # fits the training set, the worse it does here, so the selected epoch is
    # not the last one and not the one with the best training accuracy.
    val = CountingLoader(DataLoader(make_set(24, seed=8, flip_labels=True), batch_size=12))
    snapshots = {}
    trainer = make_trainer(tmp_path)
    history = trainer.fit(train, val, epochs=4, select=select,
                          on_epoch_end=lambda t, r: snapshots.__setitem__(r["epoch"],
                                                                          params(t.model)))
    assert val.passes == 4                                # validated once per epoch
    column = history[select]
    pick = (max if select == "val_oa" else min)(range(4), key=lambda i: column[i])
    assert history.best_epoch == pick + 1
    assert history.best_metric == column[pick]
    assert history.best_epoch != 4                       # the test's premise
    assert_same_params(params(trainer.model), snapshots[pick + 1])   # restored
    best_file = load_checkpoint(tmp_path / "best.pt")
    assert best_file["epoch"] == pick + 1
    assert_same_params(best_file["model"], snapshots[pick + 1])


def test_select_last_keeps_the_final_epoch_even_when_validation_falls(tmp_path):
    """select="last": the same set-up as above, where the best validation
    epoch is not the last, keeps (and restores, and writes to best.pt) the
    final epoch's weights; the recorded metric is that epoch's val OA."""
    train = DataLoader(make_set(48, seed=6), batch_size=8, shuffle=True)
    val = DataLoader(make_set(24, seed=8, flip_labels=True), batch_size=12)
    snapshots = {}
    trainer = make_trainer(tmp_path)
    history = trainer.fit(train, val, epochs=4, select="last",
                          on_epoch_end=lambda t, r: snapshots.__setitem__(r["epoch"],
                                                                          params(t.model)))
    assert max(range(4), key=lambda i: history["val_oa"][i]) != 3      # the premise
    assert history.best_epoch == 4 and history.best_metric == history["val_oa"][3]
    assert_same_params(params(trainer.model), snapshots[4])
    best_file = load_checkpoint(tmp_path / "best.pt")
    assert best_file["epoch"] == 4 and best_file["select"] == "last"
    assert_same_params(best_file["model"], snapshots[4])


def test_gradient_accumulation_equals_the_larger_batch():
    torch.manual_seed(0)
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    pairs = list(zip(x, y))
    results = []
    for batch_size, accum in ((8, 1), (4, 2), (2, 4)):
        torch.manual_seed(1)
        model = nn.Linear(5, 3)
        trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.5), device="cpu",
                          grad_accum=accum, progress=False)
        trainer.fit(torch.utils.data.DataLoader(pairs, batch_size=batch_size), epochs=2)
        results.append(params(model))
    for other in results[1:]:
        for key in results[0]:
            torch.testing.assert_close(other[key], results[0][key], rtol=0, atol=1e-6)
    # And the 2-group result really differs from one step per small batch.
    torch.manual_seed(1)
    model = nn.Linear(5, 3)
    Trainer(model, torch.optim.SGD(model.parameters(), lr=0.5), device="cpu",
            progress=False).fit(torch.utils.data.DataLoader(pairs, batch_size=4), epochs=2)
    assert not torch.allclose(model.weight, results[0]["weight"], atol=1e-3)


class Output:
    def __init__(self, logits, loss=None):
        self.logits, self.loss = logits, loss


class WithOwnLoss(nn.Module):
    """Returns an object with .logits and .loss (like DistillerOutput)."""

    def __init__(self):
        super().__init__()
        self.net = TinyPointNet(dropout=0.0)

    def forward(self, data):
        logits = self.net(data)
        if not self.training:
            return Output(logits)
        return Output(logits, F.cross_entropy(logits, data.y) + 10.0)


def test_output_objects_with_their_own_loss():
    model = WithOwnLoss()
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), device="cpu",
                      progress=False)
    data = DataLoader(make_set(12, seed=9), batch_size=6)
    history = trainer.fit(data, data, epochs=1)
    assert history["train_loss"][0] > 10.0               # the model's own loss was used
    assert history["val_loss"][0] < 5.0                  # eval: loss None -> loss_fn (CE)
    plain = trainer.evaluate(data)
    model.eval()
    with torch.no_grad():
        expected = sum(F.cross_entropy(model(b).logits, b.y, reduction="sum") for b in data) / 12
    assert plain["loss"] == pytest.approx(float(expected), rel=1e-6)


def test_step_without_logits_selects_on_loss():
    model = nn.Linear(3, 3)

    def step(m, batch):   # a point-regression stage: no logits, no labels
        pos = batch.pos.view(-1, 12, 3)
        return ((m(pos) - pos) ** 2).mean(), None, None

    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), step_fn=step,
                      device="cpu", progress=False)
    data = DataLoader(make_set(12, seed=10), batch_size=4)
    history = trainer.fit(data, data, epochs=3, select="val_loss")
    assert history["train_acc"] == [None] * 3 and history["val_oa"] == [None] * 3
    assert history["val_loss"][2] < history["val_loss"][0]
    with pytest.raises(ValueError, match="select='val_oa'"):
        Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), step_fn=step,
                device="cpu", progress=False).fit(data, data, epochs=1, select="val_oa")


def test_trainer_rejects_bad_input(tmp_path):
    model = TinyPointNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="grad_accum"):
        Trainer(model, opt, grad_accum=0)
    with pytest.raises(TypeError, match="optimizer"):
        Trainer(model, "adam")
    trainer = Trainer(model, opt, device="cpu", progress=False)
    data = DataLoader(make_set(6, seed=0), batch_size=3)
    with pytest.raises(ValueError, match="select"):
        trainer.fit(data, epochs=1, select="test_oa")
    with pytest.raises(FileNotFoundError, match="resume"):
        trainer.fit(data, epochs=1, resume=tmp_path / "nothing.pt")
    with pytest.raises(ValueError, match="out_dir"):
        trainer.fit(data, epochs=1, resume=True)
    bad = [Data(pos=torch.randn(4, 3), y=torch.tensor([5]))]
    with pytest.raises(ValueError, match="out of range"):
        trainer.fit(DataLoader(bad, batch_size=1), epochs=1)
    with pytest.raises(ValueError, match="not a trainer checkpoint"):
        atomic_save({"model": {}}, tmp_path / "other.pt")
        trainer.load_checkpoint(tmp_path / "other.pt")


# ------------------------------------------------------------------ checkpoints
class FailsWhilePickled:
    def __reduce__(self):
        raise RuntimeError("simulated failure during the write")


def test_atomic_save_keeps_the_old_file_when_a_write_fails(tmp_path):
    path = tmp_path / "ckpt.pt"
    atomic_save({"v": torch.arange(3)}, path)
    with pytest.raises(RuntimeError, match="simulated"):
        atomic_save({"big": torch.zeros(10000), "bad": FailsWhilePickled()}, path)
    assert torch.equal(load_checkpoint(path)["v"], torch.arange(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]   # no temp left over


def test_atomic_save_leaves_no_partial_file_when_the_process_dies(tmp_path):
    # The writer process dies (os._exit: no cleanup, no exception handler) in
    # the middle of torch.save while overwriting an existing checkpoint.
    path = tmp_path / "ckpt.pt"
    script = textwrap.dedent(f"""
        import os, torch
        from pointcmt_pyg.train.checkpoint import atomic_save

        class Die:
            def __reduce__(self):
                os._exit(3)

        atomic_save({{"v": torch.ones(2)}}, {str(path)!r})
        atomic_save({{"big": torch.zeros(100000), "die": Die()}}, {str(path)!r})
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), POINTCMT_QUIET="1")
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True)
    assert proc.returncode == 3, proc.stderr
    assert torch.equal(load_checkpoint(path)["v"], torch.ones(2))   # the old file, whole
    leftovers = [p for p in tmp_path.iterdir() if p != path]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".ckpt.pt.")
    assert leftovers[0].name.endswith(".tmp")           # the dead write went to a temp file


def test_load_checkpoint_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="broken.pt"):
        load_checkpoint(broken)
    with pytest.raises(ValueError, match="directory"):
        atomic_save({}, tmp_path)


def test_compiled_forward_trains_and_checkpoints_the_plain_model(tmp_path):
    # backend="eager" exercises the torch.compile wiring (dynamo tracing) without
    # a C++ toolchain; the checkpoint holds the user's module, not the wrapper.
    data = DataLoader(make_set(12, seed=11), batch_size=6, shuffle=True)
    eager = make_trainer(tmp_path / "eager", seed=3)
    eager.fit(data, epochs=1)
    compiled = make_trainer(tmp_path / "compiled", seed=3, compile={"backend": "eager"})
    compiled.fit(data, epochs=1)
    state = load_checkpoint(tmp_path / "compiled" / "last.pt")["model"]
    assert state.keys() == eager.model.state_dict().keys()
    for key, value in eager.model.state_dict().items():
        torch.testing.assert_close(state[key], value, rtol=1e-5, atol=1e-6)


def test_compiled_distiller_compiles_the_students_body_and_keeps_its_head_hooks(tmp_path):
    # The distiller reads the student feature with hooks it registers on the head around
    # each forward, which a compiled region would not run ("the head ran 0 times"): the
    # trainer compiles the student's other submodules in place instead, and the run
    # equals the eager one (backend="eager": dynamo tracing without a C++ toolchain).
    from pointcmt_pyg.models import get_model
    from pointcmt_pyg.nn import CMPG, CrossModalDistiller
    g = torch.Generator().manual_seed(4)
    data = [Data(pos=torch.randn(48, 3, generator=g), y=torch.tensor([i % 3]),
                 img_feat=torch.randn(1, 16, generator=g)) for i in range(12)]
    loader = DataLoader(data, batch_size=6, shuffle=True)
    states, trainers = [], []
    for compile in (False, {"backend": "eager", "dynamic": True}):
        seed_everything(0)
        model = CrossModalDistiller(get_model("pointnet2", 3, dropout=0.0), None, CMPG(16, 32),
                                    teacher_classifier=torch.nn.Linear(16, 3),
                                    teacher_source="cache", teacher_dim=16, recipe="balanced")
        optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-3)
        trainer = Trainer(model, optimizer, device="cpu", progress=False, seed=0, compile=compile,
                          out_dir=tmp_path / str(bool(compile)))
        trainer.fit(loader, epochs=1)
        states.append(model.student.state_dict())
        trainers.append(trainer)
    model = trainers[1].model
    assert [m for m in model.compile_targets()] == [model.student.sa1_module,
                                                    model.student.sa2_module,
                                                    model.student.sa3_module]
    assert all(m._compiled_call_impl is not None for m in model.compile_targets())
    assert model.student.mlp._compiled_call_impl is None          # the head stays eager
    assert states[0].keys() == states[1].keys()                   # no _orig_mod. prefixes
    for key, value in states[0].items():
        torch.testing.assert_close(states[1][key], value, rtol=1e-5, atol=1e-6, msg=key)
