"""Distributed training (torchrun-style env, gloo, 2 CPU processes) matches one process."""
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import DistributedSampler
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader
from torch_geometric.nn import global_mean_pool

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


def _worker(rank, port, out):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    ctx = init_distributed(device="cpu", timeout_s=120)
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


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_gloo_processes_match_one_process(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
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
