"""Time one optimizer step of a student, plain and with PointCMT.

Workload (issue 9): ``B`` clouds of ``N`` uniform random points in the unit
cube, ``C`` classes, AdamW; PointCMT is :class:`~pointcmt_pyg.nn.CrossModalDistiller`
with cached 512-d teacher features (``teacher_source="cache"``) and the recipe of
``--recipe`` (default: the library's, ``aligned``: CE + KD + feature alignment;
recipes with a feature-enhancement term, ``balanced`` and ``official``, add a
fresh CMPG and the EMD between its clouds). Each configuration runs
``--warmup`` untimed steps, then ``--steps`` timed ones (synchronised on CUDA);
the median is reported::

    python bench/train_step.py --model pointnet2 --device cpu
    python bench/train_step.py --model pointnet2 dgcnn --device cuda --json out.json

On the CPU the process keeps freed blocks for reuse, as the
:class:`~pointcmt_pyg.train.Trainer` does when it trains there
(:func:`~pointcmt_pyg.train.retain_freed_memory`); ``--cpu-memory default``
leaves glibc's allocator as it is (every block over 32 MiB mapped and unmapped
on its own, as before session 25). The setting is per process, so compare the
two with two runs.

Inputs are random, so neighbourhoods are sparser than on real shapes: use this
for ratios between configurations measured in the same run, and the pipeline's
own epoch times for absolute training cost.
"""
import argparse
import json
import os
import statistics
import sys
import time
from typing import Dict, List

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("POINTCMT_QUIET", "1")
from torch_geometric.data import Batch, Data  # noqa: E402

import pointcmt_pyg.models._dense as dense_path  # noqa: E402
from pointcmt_pyg.models import get_model, use_pointcmt_ops  # noqa: E402
from pointcmt_pyg.nn import CMPG, CrossModalDistiller  # noqa: E402
from pointcmt_pyg.nn.recipes import DEFAULT_RECIPE, RECIPES, get_recipe  # noqa: E402
from pointcmt_pyg.train import retain_freed_memory  # noqa: E402


def _pyg_examples() -> Dict[str, type]:
    """Our model name -> PyG's own example network of it: the structure of PyG's
    ``examples/pointnet2_classification.py`` and ``dgcnn_classification.py``, built
    from ``torch_geometric.nn`` alone, as tests/test_models.py holds them (the
    references our students are tested equal to: same layers, widths and
    ``state_dict``). They run on our ops through ``use_pointcmt_ops``."""
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from test_models import _RefDGCNN, _RefPointNet2
    return {"pointnet2": _RefPointNet2, "dgcnn": _RefDGCNN}


def make_batch(batch_size: int, num_points: int, num_classes: int, device: torch.device,
               gen: torch.Generator) -> Batch:
    clouds = [Data(pos=torch.rand(num_points, 3, generator=gen),
                   y=torch.randint(num_classes, (1,), generator=gen),
                   img_feat=torch.randn(1, 512, generator=gen)) for _ in range(batch_size)]
    return Batch.from_data_list(clouds).to(device)


class Config:
    """One timed configuration: a student, plain or PointCMT, a grouping, a precision."""

    def __init__(self, model_name: str, distill: bool, grouping: str, precision: str,
                 args: argparse.Namespace) -> None:
        self.model_name, self.distill = model_name, distill
        self.grouping, self.precision = grouping, precision
        # "<grouping>+compile": the same student through torch.compile (dynamic
        # shapes, as the pipeline's --compile); its first step includes compiling.
        # "dense+bn_on_edges": the dense student with its last batch norm and ReLU
        # on every edge before the max, as before they were moved after it
        # (models/_dense.py, point 5): the same math, for a same-run comparison.
        grouping, _, suffix = grouping.partition("+")
        if suffix not in ("", "compile", "bn_on_edges"):
            raise SystemExit(f"--grouping {self.grouping}: the suffixes are '+compile' and "
                             f"'+bn_on_edges'")
        compiled = suffix == "compile"
        self.bn_on_edges = suffix == "bn_on_edges"
        self.device = torch.device(args.device)
        torch.manual_seed(0)
        if grouping == "pyg_example":      # PyG's example network, on our ops via the patch
            examples = _pyg_examples()
            if model_name not in examples:
                raise SystemExit(f"--grouping pyg_example: no PyG example for {model_name!r} "
                                 f"(known: {', '.join(examples)})")
            # For the rest of the process: it reaches only torch.ops.pyg, which our own
            # students never call.
            use_pointcmt_ops()
            student = examples[model_name](args.classes)
        else:
            kwargs = {} if grouping == "-" else {"grouping": grouping}
            student = get_model(model_name, args.classes, **kwargs)
        if distill:
            teacher_head = torch.nn.Linear(512, args.classes)
            # As the pipeline: a CMPG only where the recipe has a feature term.
            cmpg = CMPG(512, 1024) if get_recipe(args.recipe).w_fe > 0 else None
            self.model = CrossModalDistiller(student, None, cmpg,
                                             teacher_classifier=teacher_head,
                                             teacher_source="cache", recipe=args.recipe,
                                             teacher_dim=512, emd_eps=args.emd_eps)
            params = self.model.trainable_parameters()
        else:
            self.model, params = student, student.parameters()
        self.model.to(self.device).train()
        self.forward = self.model
        if compiled and hasattr(self.model, "compile_targets"):   # as the Trainer does
            for module in self.model.compile_targets():
                module.compile(dynamic=True)
        elif compiled:
            self.forward = torch.compile(self.model, dynamic=True)
        self.opt = torch.optim.AdamW(params, lr=1e-3)
        self.times: List[float] = []
        self.first_step_s: float = float("nan")

    def step(self, batch: Batch, timed: bool) -> None:
        sync = self.device.type == "cuda"
        if sync:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        dtype = {"bf16": torch.bfloat16, "16": torch.float16}.get(self.precision)
        commutes = dense_path._commutes_with_max
        if self.bn_on_edges:
            dense_path._commutes_with_max = lambda mlp, h: False
        try:
            with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
                out = self.forward(batch)
                loss = out.loss if self.distill else torch.nn.functional.cross_entropy(out, batch.y)
        finally:
            dense_path._commutes_with_max = commutes
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        if sync:
            torch.cuda.synchronize()
        if timed:
            self.times.append(time.perf_counter() - t0)
        elif self.first_step_s != self.first_step_s:     # nan: this was the first step
            self.first_step_s = time.perf_counter() - t0

    def row(self) -> Dict[str, object]:
        return {"model": self.model_name, "pointcmt": self.distill, "grouping": self.grouping,
                "precision": self.precision, "median_s": statistics.median(self.times),
                "min_s": min(self.times), "steps": len(self.times),
                "first_step_s": self.first_step_s}


def real_batches(root: str, count: int, args: argparse.Namespace, device: torch.device,
                 gen: torch.Generator) -> List[Batch]:
    """Batches of real shapes (the first ``count * B`` of a point folder's
    training split, centred and scaled into the unit sphere as the pipeline's
    students see them)."""
    from pointcmt_pyg.datasets import PointCloudFolder
    from torch_geometric.transforms import NormalizeScale
    data = PointCloudFolder(root, "train", num_points=args.points, sampling="random", seed=0)
    norm = NormalizeScale()
    out = []
    for b in range(count):
        clouds = []
        for i in range(b * args.batch_size, (b + 1) * args.batch_size):
            d = norm(data[(i * 37) % len(data)])
            clouds.append(Data(pos=d.pos, y=d.y.view(1) % args.classes,
                               img_feat=torch.randn(1, 512, generator=gen)))
        out.append(Batch.from_data_list(clouds).to(device))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", nargs="+", default=["pointnet2"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--points", type=int, default=1024)
    parser.add_argument("--classes", type=int, default=40)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--grouping", nargs="+", default=["message_passing", "dense"],
                        help="student implementations to compare (models without one: '-'; "
                             "pyg_example: PyG's own example network of that model, run on our "
                             "ops through use_pointcmt_ops; <grouping>+compile: that student "
                             "through torch.compile(dynamic=True))")
    parser.add_argument("--precision", nargs="+", default=["32"], choices=["32", "bf16", "16"])
    parser.add_argument("--no-pointcmt", action="store_true", help="time the plain step only")
    parser.add_argument("--data", help="a point folder (e.g. ModelNet40): real shapes instead of "
                                       "random points")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default=DEFAULT_RECIPE,
                        help=f"the PointCMT step's recipe (default: {DEFAULT_RECIPE!r}, the library's)")
    parser.add_argument("--emd-eps", type=float, default=None,
                        help="the distiller's emd_eps (default: the op's, 1e-3)")
    parser.add_argument("--cpu-memory", choices=["retain", "default"], default="retain",
                        help="retain: keep freed CPU blocks for reuse, as training does "
                             "(default); default: glibc's allocator untouched")
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--table", nargs="+", metavar="JSON",
                        help="instead of timing: write the BENCHMARKS.md section from these "
                             "--json files (with --command and --note)")
    parser.add_argument("--command", nargs="+", default=[], help="the commands that made them")
    parser.add_argument("--note", default="", help="conditions to record (e.g. other jobs)")
    parser.add_argument("--out", default=os.path.join(ROOT, "BENCHMARKS.md"))
    args = parser.parse_args()
    if args.table:
        write_table(args)
        return
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: CUDA is not available here")
    device = torch.device(args.device)
    if device.type == "cpu" and args.cpu_memory == "retain":
        retain_freed_memory(True)
    gen = torch.Generator().manual_seed(1)
    batches = (real_batches(args.data, 2, args, device, gen) if args.data else
               [make_batch(args.batch_size, args.points, args.classes, device, gen)
                for _ in range(2)])
    rows = []
    for name in args.model:
        configs = [Config(name, distill, grouping, precision, args)
                   for precision in args.precision for grouping in args.grouping
                   for distill in ((False,) if args.no_pointcmt else (False, True))]
        # Round robin, one step of every configuration per round: load on the
        # machine that changes during the run hits all of them alike.
        for step in range(args.warmup + args.steps):
            for config in configs:
                config.step(batches[step % 2], timed=step >= args.warmup)
        for config in configs:
            row = config.row()
            row["cpu_memory"] = args.cpu_memory if device.type == "cpu" else "-"
            row["recipe"] = args.recipe if config.distill else "-"
            rows.append(row)
            print(f"{name:12s} {config.grouping:16s} {config.precision:5s} "
                  f"{'PointCMT ' + args.recipe if config.distill else 'plain':18s} median "
                  f"{row['median_s'] * 1e3:9.1f} ms/step (min {row['min_s'] * 1e3:.1f}, "
                  f"{row['steps']} steps, B={args.batch_size} x {args.points} points, "
                  f"{args.device}, {torch.get_num_threads()} threads, cpu memory "
                  f"{row['cpu_memory']})", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


def write_table(args: argparse.Namespace) -> None:
    """The "Training step" section of BENCHMARKS.md from --json files."""
    import datetime
    import platform
    rows: List[Dict[str, object]] = []
    for path in args.table:
        with open(path) as fh:
            rows += json.load(fh)
    index = {(r["model"], r["precision"], r["grouping"], r["pointcmt"]): r["median_s"] for r in rows}
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{os.cpu_count()} cores ({platform.machine()}), torch {torch.__version__}. "
    commands = ["```bash", *args.command, "```", ""]
    from ops import write_section
    # The students' table needs both groupings, plain and PointCMT; other runs
    # (the PyG-example or torch.compile comparisons) leave that section as it is.
    students = list(dict.fromkeys((r["model"], r["precision"]) for r in rows
                                  if all((r["model"], r["precision"], g, d) in index
                                         for g in ("message_passing", "dense")
                                         for d in (False, True))))
    if students:
        # rows written before the recipe was recorded ran `balanced`
        recipes = ", ".join(f"`{name}`" for name in sorted({r.get("recipe", "balanced")
                                                            for r in rows if r["pointcmt"]}))
        lines = [f"## Training step (students): {stamp}", "",
                 "One optimizer step (forward, backward, AdamW) of each student on B = 32 real "
                 "ModelNet40 shapes of 1,024 points, median of the timed steps; PointCMT = "
                 f"`CrossModalDistiller` (recipe {recipes}, cached 512-d teacher features). "
                 "`message_passing` is PyG's `PointNetConv` / EdgeConv propagation (the "
                 "reference), `dense` the default grouping (`pointcmt_pyg/models/_dense.py`). "
                 "All configurations of a model run round robin, one step each per round, in "
                 "one process. " + machine + args.note, "", *commands,
                 "| student | precision | message passing plain | dense plain | speed-up | "
                 "message passing PointCMT | dense PointCMT | speed-up | dense PointCMT / plain |",
                 "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for model, precision in students:
            def get(grouping: str, distill: bool) -> float:
                return index.get((model, precision, grouping, distill), float("nan"))
            mp, dn = get("message_passing", False), get("dense", False)
            mpc, dnc = get("message_passing", True), get("dense", True)
            lines.append(f"| {model} | {precision} | {mp:.2f} s | {dn:.2f} s | {mp / dn:.2f}x | "
                         f"{mpc:.2f} s | {dnc:.2f} s | {mpc / dnc:.2f}x | {dnc / dn:.2f} |")
        section = "\n".join(lines) + "\n"
        print(section)
        write_section(args.out, "## Training step (students):", section)
    examples = [(m, p) for m, p in dict.fromkeys((r["model"], r["precision"]) for r in rows)
                if (m, p, "pyg_example", False) in index]
    if examples:
        lines = [f"## Training step (PyG's example networks on our ops): {stamp}", "",
                 "PyG's own example classifiers (the structure of PyG's "
                 "`examples/pointnet2_classification.py` and `dgcnn_classification.py`, built "
                 "from `torch_geometric.nn` alone, as `tests/test_models.py` holds them) run "
                 "unchanged on our ops through `use_pointcmt_ops()`: PyG 2.8 from PyPI cannot "
                 "run them at all (no pyg-lib). They are the same networks as our `pointnet2` and "
                 "`dgcnn` students (same layers, widths and `state_dict`), timed round robin in "
                 "one process on B = 32 real ModelNet40 shapes of 1,024 points, one optimizer "
                 "step (forward, backward, AdamW), median of the timed steps. The last column "
                 "is what our dense grouping adds to the patch alone. " + machine + args.note,
                 "", *commands,
                 "| network | precision | PyG example on our ops | our message passing | "
                 "our dense | PyG example / dense |", "|---|---|---:|---:|---:|---:|"]
        for model, precision in examples:
            ex = index[(model, precision, "pyg_example", False)]
            mp = index.get((model, precision, "message_passing", False), float("nan"))
            dn = index.get((model, precision, "dense", False), float("nan"))
            lines.append(f"| {model} | {precision} | {ex:.2f} s | {mp:.2f} s | {dn:.2f} s | "
                         f"{ex / dn:.2f}x |")
        section = "\n".join(lines) + "\n"
        print(section)
        write_section(args.out, "## Training step (PyG's example networks on our ops):", section)


    compiled = [r for r in rows if r["grouping"].endswith("+compile")]
    if compiled:
        first = {(r["model"], r["precision"], r["grouping"], r["pointcmt"]): r.get("first_step_s")
                 for r in rows}
        lines = [f"## Training step (torch.compile): {stamp}", "",
                 "The student's step with its forward through `torch.compile(dynamic=True)` (what "
                 "`--compile` does in the pipeline and `distill`) against the same student eager, "
                 "timed round robin in one process on B = 32 real ModelNet40 shapes of 1,024 "
                 "points; the first step includes compiling (inductor). " + machine + args.note,
                 "", *commands,
                 "| student | precision | run | eager | compiled | speed-up | first compiled step "
                 "| steps to repay it |", "|---|---|---|---:|---:|---:|---:|---:|"]
        for r in compiled:
            key = (r["model"], r["precision"], r["grouping"], r["pointcmt"])
            eager_key = (r["model"], r["precision"], r["grouping"][:-len("+compile")], r["pointcmt"])
            eager = index.get(eager_key, float("nan"))
            comp, once = r["median_s"], first[key]
            repay = (once - eager) / (eager - comp) if eager > comp else float("inf")
            lines.append(f"| {r['model']} | {r['precision']} | "
                         f"{'PointCMT' if r['pointcmt'] else 'plain'} | {eager:.2f} s | "
                         f"{comp:.2f} s | {eager / comp:.2f}x | {once:.0f} s | {repay:.0f} |")
        section = "\n".join(lines) + "\n"
        print(section)
        write_section(args.out, "## Training step (torch.compile):", section)


if __name__ == "__main__":
    main()
