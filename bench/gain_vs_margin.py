"""The gain of a recipe against the teacher's lead over the plain student.

Each ``--setting`` gives one configuration's numbers as RESULTS.md reports
them: the teacher's OA, the plain student's mean OA, and the per-seed paired
differences (recipe minus baseline) on the same split. The script prints, per
setting, the teacher's lead (teacher minus the baseline mean), the mean gain ±
its sample std, and the share of the lead the recipe closes, and with
``--plot`` draws gain against lead (a point per setting, its 95 % t interval
as an error bar; with one or two seeds, the seeds themselves):

    python bench/gain_vs_margin.py --plot docs/results/gain_vs_margin.png \\
        --setting "SSG 64 pts=90.86,77.45,+4.1,+3.2,+5.5" \\
        --setting "SSG 128 pts=90.86,88.87,+1.98,+0.88,-1.10"

A setting's value is ``TEACHER,BASELINE_MEAN,DIFF,DIFF,...`` (percent). The
question it answers: is the gain set by how much more the teacher knows than
the student (then the share is about constant), or by the student?
"""
from __future__ import annotations

import argparse
import statistics
from typing import List, Tuple

from paired_stats import t_half_width  # bench/, beside this script


def parse_setting(text: str) -> Tuple[str, float, float, List[float]]:
    """``"LABEL=TEACHER,BASELINE,D1,D2,..."`` -> (label, teacher, baseline, diffs)."""
    label, sep, values = text.rpartition("=")
    if not sep or not label:
        raise argparse.ArgumentTypeError(f"--setting must be LABEL=TEACHER,BASELINE,DIFF,..., got {text!r}")
    try:
        numbers = [float(v) for v in values.split(",")]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--setting {text!r}: {err}") from None
    if len(numbers) < 3:
        raise argparse.ArgumentTypeError(f"--setting {text!r} needs a teacher OA, a baseline mean and at least "
                                         "one paired difference")
    return label, numbers[0], numbers[1], numbers[2:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setting", type=parse_setting, action="append", required=True,
                        metavar="LABEL=TEACHER,BASELINE,DIFF,...")
    parser.add_argument("--plot", default=None, metavar="PNG", help="draw gain against the teacher's lead")
    parser.add_argument("--title", default="gain over the plain student against the teacher's lead")
    args = parser.parse_args()

    print("| setting | seeds | teacher | baseline | teacher's lead | gain (mean ± std) | 95 % interval | share of the lead |")
    print("|---|---:|---:|---:|---:|---:|---|---:|")
    rows = []
    for label, teacher, base, diffs in args.setting:
        lead, gain, half = teacher - base, statistics.mean(diffs), t_half_width(diffs)
        std = f" ± {statistics.stdev(diffs):.2f}" if len(diffs) > 1 else " (1 seed)"
        share = f"{100 * gain / lead:.0f} %" if lead > 0 else "-"
        print(f"| {label} | {len(diffs)} | {teacher:.2f} | {base:.2f} | {lead:+.2f} | {gain:+.2f}{std} | "
              f"{gain - half:+.2f} .. {gain + half:+.2f} | {share} |")
        rows.append((label, lead, gain, half))

    if args.plot:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(7, 4.5), dpi=120)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        for (label, lead, gain, half), (_, _, _, diffs) in zip(rows, args.setting):
            if len(diffs) > 2:       # the 95 % t interval of the mean
                ax.errorbar([lead], [gain], yerr=[half], fmt="o", capsize=4, label=label)
            else:                    # too few seeds for an interval: the seeds themselves
                dot = ax.plot([lead], [gain], "o", label=f"{label}; x = each seed")[0]
                ax.plot([lead] * len(diffs), diffs, "x", color=dot.get_color())
        top = max(lead for _, lead, _, _ in rows) * 1.1
        ax.plot([0, top], [0, 0], color="grey", lw=0.8)
        ax.plot([0, top], [0, top / 2], color="grey", lw=0.8, ls="--", label="half of the lead")
        ax.set_xlabel("teacher's lead over the plain student (OA points)")
        ax.set_ylabel("recipe - baseline (OA points)")
        ax.set_title(args.title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
        fig.tight_layout()
        fig.savefig(args.plot)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
