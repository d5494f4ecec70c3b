"""EMD on every instruction-set path of the CPU op, side by side in one run.

The auction's scans are compiled per instruction set (vectors of 16, 32 or 64
bytes) and picked by the widest the CPU has, capped by ``POINTCMT_CPU_ISA``
(read once per process), so each cap runs in its own child process on the same
inputs as ``bench/ops.py``: B = 32 pairs of N = 1,024 points in the unit cube,
random pairs and near pairs (y = x + N(0, 0.01^2), shuffled).

    python bench/emd_isa.py                 # threads: torch's default
    OMP_NUM_THREADS=1 python bench/emd_isa.py

A cap above what the CPU has runs the widest path it has (the row says which).
"""
from __future__ import annotations

import os
import subprocess
import sys

CHILD = r"""
import statistics, sys, time, torch
sys.path.insert(0, sys.argv[1])
from pointcmt_pyg.ops import emd
B, N = 32, 1024
gen = torch.Generator().manual_seed(1)
pairs = {"random": (torch.rand(B, N, 3, generator=gen), torch.rand(B, N, 3, generator=gen))}
xn = torch.rand(B, N, 3, generator=gen)
perm = torch.argsort(torch.rand(B, N, generator=gen), dim=1)
pairs["near"] = (xn, (xn + 0.01 * torch.randn(B, N, 3, generator=gen)).gather(1, perm[..., None].expand(-1, -1, 3)))
for kind, (a, b) in pairs.items():
    emd(a, b)
    times = []
    for _ in range(int(sys.argv[2])):
        start = time.perf_counter()
        emd(a, b)
        times.append(time.perf_counter() - start)
    print(kind, 1000 * statistics.median(times), torch.get_num_threads())
"""


def main() -> None:
    import argparse
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    has = {"scalar": True, "avx2": " avx2" in flags, "avx512": " avx512f" in flags}
    print("| cap (POINTCMT_CPU_ISA) | path run | random pairs ms | near pairs ms | threads |")
    print("|---|---|---:|---:|---:|")
    for cap in ("scalar", "avx2", "avx512"):
        ran = cap if has[cap] else ("avx2" if has["avx2"] else "scalar")
        env = dict(os.environ, POINTCMT_CPU_ISA=cap)
        out = subprocess.run([sys.executable, "-c", CHILD, root, str(args.repeat)], env=env, check=True,
                             capture_output=True, text=True).stdout.split("\n")
        ms = {line.split()[0]: (float(line.split()[1]), line.split()[2]) for line in out if line.strip()}
        print(f"| {cap} | {ran} | {ms['random'][0]:.1f} | {ms['near'][0]:.1f} | {ms['random'][1]} |")


if __name__ == "__main__":
    main()
