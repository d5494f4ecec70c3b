"""Paired statistics of arm-minus-baseline scores over seeds (for RESULTS.md).

Each ``--pair LABEL=BASELINE,ARM`` gives one seed's two scores (e.g. test OA in
percent, as printed by ``pointcmt-pyg evaluate --compare``). Prints the
differences, their mean ± sample std, the 95 % t interval of the mean, how
many pairs are ahead, the two-sided sign test and the one-sample t-test
against 0. Groups (``--group NAME=LABEL,LABEL``) are reported on their own and
pooled.

    python bench/paired_stats.py --pair i4=88.00,88.55 --pair i5=88.55,89.65 \\
        --group teacher3=i4,i5
"""
from __future__ import annotations

import argparse
import math
import statistics
from typing import Dict, List, Tuple

from scipy import stats


def t_half_width(diffs: List[float]) -> float:
    """Half width of the 95 % t interval of the mean of ``diffs`` (0 for fewer than 2)."""
    if len(diffs) < 2:
        return 0.0
    return stats.t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))


def summary(diffs: List[float]) -> str:
    """One line: mean ± std, 95 % interval, pairs ahead, sign test and t-test p."""
    n = len(diffs)
    mean = statistics.mean(diffs)
    ahead = sum(d > 0 for d in diffs)
    nonzero = sum(d != 0 for d in diffs)
    sign_p = stats.binomtest(ahead, nonzero, 0.5).pvalue if nonzero else 1.0
    if n < 2:
        return f"n = 1: {mean:+.2f}; ahead {ahead} / 1"
    std = statistics.stdev(diffs)
    half = t_half_width(diffs)
    t_p = stats.ttest_1samp(diffs, 0.0).pvalue if std > 0 else float("nan")
    return (f"n = {n}: {mean:+.2f} ± {std:.2f}, 95 % interval {mean - half:+.2f} .. {mean + half:+.2f}; "
            f"ahead {ahead} / {n}; sign test p = {sign_p:.3f}; paired t p = {t_p:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pair", action="append", required=True, metavar="LABEL=BASELINE,ARM")
    parser.add_argument("--group", action="append", default=[], metavar="NAME=LABEL,LABEL,...")
    args = parser.parse_args()
    pairs: Dict[str, Tuple[float, float]] = {}
    for spec in args.pair:
        label, _, values = spec.partition("=")
        try:
            base, arm = (float(v) for v in values.split(","))
        except ValueError:
            raise SystemExit(f"--pair {spec!r}: expected LABEL=BASELINE,ARM with two numbers")
        pairs[label] = (base, arm)
    diffs = {label: arm - base for label, (base, arm) in pairs.items()}
    for label, d in diffs.items():
        print(f"{label}: {pairs[label][0]:.2f} -> {pairs[label][1]:.2f} ({d:+.2f})")
    for spec in args.group:
        name, _, labels = spec.partition("=")
        missing = [label for label in labels.split(",") if label not in diffs]
        if missing:
            raise SystemExit(f"--group {name}: no --pair for {', '.join(missing)}")
        print(f"{name}: " + summary([diffs[label] for label in labels.split(",")]))
    print("all pairs: " + summary(list(diffs.values())))


if __name__ == "__main__":
    main()
