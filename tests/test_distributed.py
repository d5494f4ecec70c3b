"""Distributed training (torchrun-style env, gloo, 2 CPU processes) matches one process."""
import os

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import DistributedSampler
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader
from torch_geometric.nn import global_mean_pool

from conftest import free_port
from pointcmt_pyg.train import Trainer, seed_everything
from pointcmt_pyg.train.distributed import (DistributedContext, ShardSampler, init_distributed,
                                            make_loader, unwrap_model)

NUM_CLASSES = 3
WORLD = 2
PER_RANK_BATCH = 2
GRAD_ACCUM = 2          # global batch per optimizer step: 2 ranks x 2 batches x 2 = 8


class Net(nn.Module):
    """No batch norm, no dropout: a rank's forward depends only on its samples."""

    def __init__(self):
        super().__init__()
        self.point = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 16))
        self.head = nn.Linear(16, NUM_CLASSES)

    def forward(self, data):
        return self.head(global_mean_pool(self.point(data.pos).relu(), data.batch))


def make_set(num, seed):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(num):
        y = i % NUM_CLASSES
        pos = 0.8 * torch.randn(10, 3, generator=g)
        pos[:, y] += 1.0
        out.append(Data(pos=pos, y=torch.tensor([y])))
    return out


def make_trainer(out_dir, grad_accum):
    seed_everything(0)
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    return Trainer(model, optimizer, device="cpu", out_dir=out_dir, seed=0, progress=False,
                   grad_accum=grad_accum)


def _join_gloo_group(rank, port):
    """What torchrun does for a spawned worker: its env, one thread, the gloo group."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    return init_distributed(device="cpu")


def _worker(rank, port, out):
    ctx = _join_gloo_group(rank, port)
    try:
        assert (ctx.rank, ctx.world_size, ctx.backend) == (rank, WORLD, "gloo")
        train = make_loader(make_set(24, seed=1), batch_size=PER_RANK_BATCH, shuffle=True,
                            seed=5)
        val = make_loader(make_set(13, seed=2), batch_size=3, evaluation=True)
        trainer = make_trainer(os.path.join(out, f"rank{rank}"), GRAD_ACCUM)
        assert isinstance(trainer._ddp, nn.parallel.DistributedDataParallel)
        history = trainer.fit(train, val, epochs=2, restore_best=False)
        metrics = trainer.evaluate(val)
        torch.save({"params": {k: v.clone() for k, v in trainer.model.state_dict().items()},
                    "history": history.to_dict(), "metrics": metrics,
                    "val_samples": len(val.sampler)},
                   os.path.join(out, f"result{rank}.pt"))
    finally:
        torch.distributed.destroy_process_group()


def test_two_gloo_processes_match_one_process(tmp_path):
    mp.spawn(_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"result{r}.pt", weights_only=False) for r in range(WORLD)]

    # One process on the same global batches: the same shuffled order
    # (DistributedSampler with one replica and the same seed; the trainer calls
    # set_epoch on it), 8 samples per optimizer step.
    data = make_set(24, seed=1)
    train = DataLoader(data, batch_size=PER_RANK_BATCH * GRAD_ACCUM * WORLD,
                       sampler=DistributedSampler(data, num_replicas=1, rank=0, shuffle=True,
                                                  seed=5))
    val = DataLoader(make_set(13, seed=2), batch_size=5)
    single = make_trainer(tmp_path / "single", grad_accum=1)
    history = single.fit(train, val, epochs=2, restore_best=False)
    metrics = single.evaluate(val)

    # DDP averages gradients over ranks: with per-rank mean losses the update is
    # the single-process update on the global batch (up to float summation order).
    for rank in ranks:
        for key, value in single.model.state_dict().items():
            torch.testing.assert_close(rank["params"][key], value, rtol=1e-5, atol=1e-6)
    # The run must actually have moved the parameters.
    seed_everything(0)
    assert not torch.allclose(Net().head.weight, single.model.head.weight, atol=1e-3)

    # Reduced metrics equal the single-process metrics: every sample counted once.
    assert sum(r["val_samples"] for r in ranks) == 13
    for rank in ranks:
        assert torch.equal(rank["metrics"]["confusion"], metrics["confusion"])
        assert int(rank["metrics"]["confusion"].sum()) == 13
        assert rank["metrics"]["oa"] == metrics["oa"]
        assert rank["metrics"]["macc"] == metrics["macc"]
        assert rank["metrics"]["loss"] == pytest.approx(metrics["loss"], rel=1e-5)
        ours = rank["history"]["records"]
        for mine, ref in zip(ours, history.records):
            assert mine["train_loss"] == pytest.approx(ref["train_loss"], rel=1e-5)
            assert mine["train_acc"] == ref["train_acc"]
            assert mine["val_oa"] == ref["val_oa"]

    # Only rank 0 wrote files.
    assert (tmp_path / "rank0" / "last.pt").is_file()
    assert (tmp_path / "rank0" / "history.json").is_file()
    assert not (tmp_path / "rank1").exists()


def test_single_process_context_without_torchrun_env(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    ctx = init_distributed(device="cpu")
    assert ctx == DistributedContext(0, 1, 0, torch.device("cpu"), None)
    assert not torch.distributed.is_initialized()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="RANK=2"):
        init_distributed(device="cpu")
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ValueError, match="RANK"):
        init_distributed(device="cpu")


def test_shard_sampler_covers_each_index_once():
    shards = [list(ShardSampler(range(11), rank=r, world_size=3)) for r in range(3)]
    assert shards == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8]]
    assert [len(ShardSampler(range(11), rank=r, world_size=3)) for r in range(3)] == [4, 4, 3]
    with pytest.raises(ValueError, match="rank=3"):
        ShardSampler(range(4), rank=3, world_size=3)


def test_make_loader_single_process_and_bad_input():
    data = make_set(6, seed=0)
    loader = make_loader(data, batch_size=4)
    assert [b.num_graphs for b in loader] == [4, 2]
    forced = make_loader(data, batch_size=2, evaluation=True, distributed=True)
    assert isinstance(forced.sampler, ShardSampler)       # rank 0 of 1: everything
    assert len(forced.sampler) == 6
    with pytest.raises(ValueError, match="batch_size"):
        make_loader(data, batch_size=0)
    with pytest.raises(ValueError, match="empty"):
        make_loader([], batch_size=2)
    with pytest.raises(ValueError, match="shuffle"):
        make_loader(data, batch_size=2, shuffle=True, evaluation=True, distributed=True)
    model = Net()
    assert unwrap_model(model) is model


# ------------------------------------------------ BatchNorm student inside CrossModalDistiller
FEAT = 16


class BNNet(nn.Module):
    """A student with BatchNorm over points and a linear head on a 16-d feature."""

    def __init__(self):
        super().__init__()
        self.point = nn.Sequential(nn.Linear(3, FEAT), nn.BatchNorm1d(FEAT), nn.ReLU(),
                                   nn.Linear(FEAT, FEAT))
        self.head = nn.Linear(FEAT, NUM_CLASSES)

    def forward(self, data):
        return self.head(global_mean_pool(self.point(data.pos), data.batch))


class LinearCMPG(nn.Module):
    def __init__(self):
        super().__init__()
        self.in_dim, self.num_points = FEAT, 12
        self.lin = nn.Linear(FEAT, 3 * 12)

    def forward(self, f):
        return self.lin(f).view(f.size(0), 12, 3)


def make_feature_set(num, seed):
    out = make_set(num, seed)
    g = torch.Generator().manual_seed(seed + 100)
    for d in out:
        d.img_feat = torch.randn(1, FEAT, generator=g)
    return out


def make_distiller_trainer(out_dir, grad_accum):
    from pointcmt_pyg.nn import CrossModalDistiller
    seed_everything(0)
    model = CrossModalDistiller(BNNet(), None, LinearCMPG(), teacher_source="cache",
                                teacher_classifier=nn.Linear(FEAT, NUM_CLASSES), recipe="balanced")
    optimizer = torch.optim.SGD(model.trainable_parameters(), lr=0.1, momentum=0.9)
    return Trainer(model, optimizer, device="cpu", out_dir=out_dir, seed=0, progress=False,
                   grad_accum=grad_accum)


def _bn_worker(rank, port, out):
    _join_gloo_group(rank, port)
    try:
        train = make_loader(make_feature_set(24, seed=1), batch_size=PER_RANK_BATCH, shuffle=True,
                            seed=5)
        trainer = make_distiller_trainer(os.path.join(out, f"rank{rank}"), GRAD_ACCUM)
        assert isinstance(trainer._ddp, nn.parallel.DistributedDataParallel)
        trainer.fit(train, None, epochs=2, restore_best=False)
        torch.save({k: v.clone() for k, v in trainer.model.named_parameters()},
                   os.path.join(out, f"bn{rank}.pt"))
    finally:
        torch.distributed.destroy_process_group()


class RankInterleavedSampler(torch.utils.data.Sampler):
    """The 2-rank micro-batch order as one stream: rank 0's first micro-batch, rank 1's
    first, rank 0's second, ... (each rank's shard as DistributedSampler deals it)."""

    def __init__(self, n, seed):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        shards = []
        for r in range(WORLD):   # each rank's shard of this epoch's permutation
            sampler = DistributedSampler(range(self.n), num_replicas=WORLD, rank=r, shuffle=True,
                                         seed=self.seed)
            sampler.set_epoch(self.epoch)
            shards.append(list(sampler))
        order = []
        for start in range(0, len(shards[0]), PER_RANK_BATCH):
            for r in range(WORLD):
                order += shards[r][start:start + PER_RANK_BATCH]
        return iter(order)

    def __len__(self):
        return self.n


def test_batchnorm_student_in_distiller_two_processes_match_per_rank_statistics(tmp_path):
    """Under DDP on CPU, BatchNorm normalises each rank's micro-batch with that micro-batch's
    own statistics (no SyncBatchNorm, which needs CUDA). Two gloo processes must therefore
    equal one process that sees the same micro-batches one after another with the gradient
    accumulated over all of them: same parameters after two epochs."""
    mp.spawn(_bn_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"bn{r}.pt") for r in range(WORLD)]

    data = make_feature_set(24, seed=1)
    train = DataLoader(data, batch_size=PER_RANK_BATCH, sampler=RankInterleavedSampler(24, 5))
    single = make_distiller_trainer(tmp_path / "single", grad_accum=GRAD_ACCUM * WORLD)
    single.fit(train, None, epochs=2, restore_best=False)
    params = dict(single.model.named_parameters())
    for rank in ranks:
        assert rank.keys() == params.keys()
        for key, value in params.items():
            torch.testing.assert_close(rank[key], value.detach(), rtol=1e-5, atol=1e-6)
    seed_everything(0)
    assert not torch.allclose(BNNet().head.weight, single.model.student.head.weight, atol=1e-3)

    # Whole-batch statistics (what SyncBatchNorm would give) lead elsewhere: the test can tell.
    whole = DataLoader(data, batch_size=PER_RANK_BATCH * WORLD, sampler=RankInterleavedSampler(24, 5))
    other = make_distiller_trainer(tmp_path / "whole", grad_accum=GRAD_ACCUM)
    other.fit(whole, None, epochs=2, restore_best=False)
    assert not torch.allclose(other.model.student.point[0].weight, single.model.student.point[0].weight,
                              atol=1e-4)
