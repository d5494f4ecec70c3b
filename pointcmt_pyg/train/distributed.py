r"""Multi-process training under ``torchrun`` for PointCMT (`paper
<https://arxiv.org/abs/2210.04208>`_).

.. code-block:: bash

    torchrun --nproc_per_node 4 examples/modelnet40.py ...           # one node
    torchrun --nnodes 2 --node_rank 0 --master_addr host0 ...         # several

What happens (all of it inside :class:`~pointcmt_pyg.train.Trainer` once
:func:`init_distributed` has run):

* :func:`init_distributed` reads ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``
  (set by ``torchrun``) and joins the process group: ``nccl`` on CUDA,
  ``gloo`` on CPU. Without those variables it does nothing (one process).
* :func:`wrap_model` wraps the model in ``DistributedDataParallel``; DDP
  *averages* gradients over ranks, so with every rank computing a per-sample
  mean over its ``B`` samples the update equals a single process's update on
  the global batch of ``world_size * B`` samples.
* :func:`make_loader` builds a PyG ``DataLoader`` whose sampler shards the
  data: a :class:`~torch.utils.data.DistributedSampler` for training
  (shuffled with ``seed + epoch``; the trainer calls ``set_epoch``), and an
  unpadded :class:`ShardSampler` for evaluation, so every sample is counted
  exactly once when the confusion matrices are summed over ranks.
* Only rank 0 writes checkpoints, logs and progress bars.
"""
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterator, Optional, Sized

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DistributedSampler, Sampler

__all__ = [
    "DistributedContext",
    "init_distributed",
    "cleanup",
    "is_distributed",
    "get_rank",
    "get_world_size",
    "is_main_process",
    "barrier",
    "all_reduce_sum",
    "unwrap_model",
    "wrap_model",
    "ShardSampler",
    "make_loader",
]


@dataclass
class DistributedContext:
    r"""Where this process stands: ``rank`` of ``world_size`` processes,
    ``local_rank`` on its node, and the ``device`` it should use."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: Optional[str] = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _env_int(name: str) -> Optional[int]:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from None


def init_distributed(backend: Optional[str] = None, device: Optional[str] = None,
                     timeout_s: float = 1800.0) -> DistributedContext:
    r"""Joins the process group described by the ``torchrun`` environment.

    Args:
        backend (str, optional): ``"nccl"`` or ``"gloo"``; default ``nccl``
            when the device is CUDA, else ``gloo``.
        device (str, optional): ``"cpu"`` or ``"cuda"``; default CUDA when
            available. On CUDA each process uses ``cuda:LOCAL_RANK``.
        timeout_s (float): Collective timeout in seconds.

    Returns:
        DistributedContext: Single-process (rank 0 of 1) when ``WORLD_SIZE``
        is unset or 1; otherwise this process's rank, after
        ``init_process_group("env://")``. Calling it again returns the
        context of the group already joined.

    Raises:
        ValueError: Inconsistent environment (``RANK`` outside ``0..WORLD_SIZE-1``)
            or an unknown ``backend``/``device``.
    """
    if device is not None and torch.device(device).type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if backend is not None and backend not in ("nccl", "gloo", "mpi"):
        raise ValueError(f"backend must be 'nccl', 'gloo' or 'mpi', got {backend!r}")
    world_size = _env_int("WORLD_SIZE") or 1
    rank = _env_int("RANK") or 0
    local_rank = _env_int("LOCAL_RANK")
    local_rank = rank if local_rank is None else local_rank
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"RANK={rank} is not in 0..WORLD_SIZE-1 (WORLD_SIZE={world_size})")
    use_cuda = (torch.cuda.is_available() if device is None
                else torch.device(device).type == "cuda")
    if use_cuda and not torch.cuda.is_available():
        raise ValueError("device='cuda' but CUDA is not available")
    if use_cuda:
        torch.cuda.set_device(local_rank % max(torch.cuda.device_count(), 1))
        dev = torch.device("cuda", torch.cuda.current_device())
    else:
        dev = torch.device("cpu")
    if world_size == 1 and not (dist.is_available() and dist.is_initialized()):
        return DistributedContext(0, 1, 0, dev, None)
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but torch.distributed is not available in this build")
    if not dist.is_initialized():
        backend = backend or ("nccl" if use_cuda else "gloo")
        kwargs = {"device_id": dev} if backend == "nccl" else {}
        dist.init_process_group(backend=backend, init_method="env://", rank=rank,
                                world_size=world_size, timeout=timedelta(seconds=timeout_s),
                                **kwargs)
    return DistributedContext(dist.get_rank(), dist.get_world_size(), local_rank, dev,
                              dist.get_backend())


def cleanup() -> None:
    r"""Leaves the process group (no-op when none was joined)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    r"""``True`` inside an initialised process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    r"""Rank 0 (or the only process): the one that writes files and logs."""
    return get_rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_reduce_sum(tensor: Tensor) -> Tensor:
    r"""Sums ``tensor`` over ranks in place (returned for chaining)."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def unwrap_model(model: nn.Module) -> nn.Module:
    r"""The user's module inside ``DistributedDataParallel`` / ``torch.compile`` wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def wrap_model(model: nn.Module, device: Optional[torch.device] = None,
               **ddp_kwargs: Any) -> nn.Module:
    r"""Wraps ``model`` in ``DistributedDataParallel`` when running distributed
    (returns it unchanged otherwise). ``device`` is the module's CUDA device
    (``None`` on CPU); ``ddp_kwargs`` go to DDP (e.g. ``find_unused_parameters``)."""
    if not is_distributed():
        return model
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("model has no trainable parameter to synchronise with DDP")
    device = None if device is None else torch.device(device)
    if device is not None and device.type == "cuda":
        return nn.parallel.DistributedDataParallel(model, device_ids=[device], **ddp_kwargs)
    return nn.parallel.DistributedDataParallel(model, **ddp_kwargs)


class ShardSampler(Sampler[int]):
    r"""Every ``world_size``-th index starting at ``rank``, in order, without
    padding: rank shards are disjoint and together cover the dataset once.
    For evaluation (``DistributedSampler`` repeats samples to even the
    shards, which would count them twice in the metrics)."""

    def __init__(self, data_source: Sized, rank: Optional[int] = None,
                 world_size: Optional[int] = None) -> None:
        self.num = len(data_source)
        self.rank = get_rank() if rank is None else int(rank)
        self.world_size = get_world_size() if world_size is None else int(world_size)
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank={self.rank} is not in 0..world_size-1 "
                             f"(world_size={self.world_size})")

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.num, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.num, self.world_size))


def make_loader(dataset: Any, batch_size: int, shuffle: bool = False, seed: int = 0,
                drop_last: bool = False, num_workers: int = 0, evaluation: bool = False,
                distributed: Optional[bool] = None, **kwargs: Any):
    r"""A PyG :class:`~torch_geometric.loader.DataLoader`, sharded across ranks
    when running distributed.

    Args:
        dataset: A PyG dataset (or any sized map-style dataset of ``Data``).
        batch_size (int): Samples per batch *per process*; the global batch is
            ``world_size * batch_size``.
        shuffle (bool): Shuffle for training. Distributed: a
            ``DistributedSampler(shuffle, seed, drop_last)`` (call
            ``loader.sampler.set_epoch(epoch)``; the trainer does); otherwise
            the loader's shuffle, drawn from the global torch RNG that the
            trainer reseeds every epoch.
        seed (int): The ``DistributedSampler`` seed.
        drop_last (bool): Drop the last incomplete batch.
        num_workers (int): Loader worker processes.
        evaluation (bool): A loader for evaluation: distributed, it uses an
            unpadded :class:`ShardSampler` so each sample counts once (its
            shards may differ in length by one, fine for evaluation, which runs
            the unwrapped model). Training loaders use a ``DistributedSampler``
            whose shards have equal length (DDP needs every rank to take the
            same number of steps; it pads by repeating a few samples).
        distributed (bool, optional): Force sharding on/off; default: on inside
            a process group of more than one rank.
        **kwargs: Other ``DataLoader`` arguments.
    """
    from torch_geometric.loader import DataLoader

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not hasattr(dataset, "__len__"):
        raise TypeError(f"dataset must be a sized dataset, got {type(dataset).__name__}")
    if len(dataset) == 0:
        raise ValueError("dataset is empty")
    distributed = is_distributed() if distributed is None else bool(distributed)
    if not distributed:
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                          num_workers=num_workers, **kwargs)
    if evaluation:
        if shuffle:
            raise ValueError("an evaluation loader does not shuffle; pass shuffle=False")
        sampler: Sampler = ShardSampler(dataset)
    else:
        sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last,
                      num_workers=num_workers, **kwargs)
