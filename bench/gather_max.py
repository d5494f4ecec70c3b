"""gather_max against the block path it replaces in the dense EdgeConv of a one-linear MLP.

Block path: ``index_select`` of the centre and neighbour rows, add, ``segment_max`` (``models._dense``'s
general path); ``gather_max`` path: ``a + gather_max(b, slots)``. Same inputs, timed round robin in one
process, median of ``--repeat`` forward and backward calls::

    OMP_NUM_THREADS=1 python bench/gather_max.py --repeat 5
"""
import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from pointcmt_pyg.models._dense import max_over_slots, slot_edges  # noqa: E402
from pointcmt_pyg.ops import gather_max  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--centres", type=int, default=32 * 1024)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--channels", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    n, k, c = args.centres, args.k, args.channels
    a = torch.randn(n, c, requires_grad=True)
    b = torch.randn(n, c, requires_grad=True)
    slots = torch.randint(0, n, (n, k))

    def block_path():
        centre, neighbour, ptr = slot_edges(slots)
        return max_over_slots(a.index_select(0, centre) + b.index_select(0, neighbour), ptr)

    def gather_path():
        return a + gather_max(b, slots)[0]

    assert torch.equal(block_path(), gather_path())
    times = {f: ([], []) for f in (block_path, gather_path)}
    for _ in range(args.repeat):
        for f, (fwd, bwd) in times.items():
            t0 = time.perf_counter()
            out = f()
            t1 = time.perf_counter()
            out.sum().backward()
            t2 = time.perf_counter()
            fwd.append(t1 - t0)
            bwd.append(t2 - t1)
    print(f"{n} centres, k = {k}, {c} channels, {torch.get_num_threads()} threads, median of {args.repeat}")
    for f, (fwd, bwd) in times.items():
        print(f"{f.__name__:12s} forward {1e3 * statistics.median(fwd):7.1f} ms  backward "
              f"{1e3 * statistics.median(bwd):7.1f} ms")


if __name__ == "__main__":
    main()
