"""Time the layout model against RapidLayout 1.2.1 itself on the structure dev pages, same threads and machine.

    python -m tests.bench_layout [--pages 20] [--threads 2] [--omp-wait-policy passive]
        [--original-python build/structure-ref-venv/bin/python]

Three engines, each in its own process, take turns page by page (the order turning, so that a
shared machine's drift slows all alike): ours with `layout = "parse"` and with `"rapidlayout"`,
and RapidLayout (onnxruntime) run as ../shared/structure-dev-reference/run_rapid_structure.py runs
it. Each call is timed from the decoded page to the regions, after a warm-up. RapidLayout is not a
dependency of parse: it runs under --original-python (`make bench-layout` makes that venv with the
reference's lock-file versions). Prints per engine the median and p90 seconds per page, the
ratios, and how far ours ("rapidlayout") is from RapidLayout's regions on the same pages.
--omp-wait-policy sets OMP_WAIT_POLICY for our engines (libgomp's idle threads sleep instead of
spinning; on a machine with more busy threads than cores this decides PyTorch's speed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STRUCTURE_DEV = ROOT.parent / "shared" / "structure-dev"
ORIGINAL_PYTHON = ROOT / "build" / "structure-ref-venv" / "bin" / "python"


def pages(count: int) -> list[Path]:
    out = []
    for gt in sorted(STRUCTURE_DEV.glob("*.json")):
        if json.loads(gt.read_text()).get("task") == "page":
            out.append(next(p for p in (gt.with_suffix(s) for s in (".png", ".jpg")) if p.exists()))
    return out[:count]


def engine(name: str, threads: int):
    """image file -> (seconds, [(label, box)]), the decode outside the timing (the reference did so too)."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import cv2

    cv2.setNumThreads(threads)
    if name == "RapidLayout":
        from rapid_layout import RapidLayout

        layout = RapidLayout(model_type="pp_layout_cdla",
                             engine_cfg={"intra_op_num_threads": threads, "inter_op_num_threads": 1})

        def run(path: Path):
            image = cv2.imread(str(path))  # BGR, as the reference gave it
            start = time.perf_counter()
            r = layout(image)
            seconds = time.perf_counter() - start
            return seconds, [(str(c), [float(v) for v in b]) for b, c in zip(r.boxes or [], r.class_names or [])]
        return run

    import dataclasses

    import torch

    from service import settings as settings_mod
    from service.structure.layout import LayoutModel

    torch.set_num_threads(threads)
    cfg = settings_mod.load()
    model = LayoutModel.load(dataclasses.replace(cfg.structure, layout=name), cfg.model.weights_dir,
                             torch.device("cpu"))

    def run(path: Path):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1].copy()
        start = time.perf_counter()
        (dets,) = model.detect([image])
        seconds = time.perf_counter() - start
        return seconds, [(d.label, list(d.box)) for d in dets]
    return run


def serve(args: argparse.Namespace) -> None:
    """One engine in this process: page paths on stdin, one JSON answer per line on stdout."""
    run = engine(args.engine, args.threads)
    run(pages(1)[0])
    print("ready", flush=True)
    for line in sys.stdin:
        seconds, regions = run(Path(line.strip()))
        print(json.dumps({"seconds": seconds, "regions": regions}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--original-python", type=Path, default=ORIGINAL_PYTHON)
    parser.add_argument("--omp-wait-policy", choices=("active", "passive"), help="OMP_WAIT_POLICY of our engines")
    parser.add_argument("--engine", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not STRUCTURE_DEV.is_dir():
        sys.exit(f"skipped: the structure dev set {STRUCTURE_DEV} is absent")
    if args.engine:
        return serve(args)
    if not args.original_python.exists():
        sys.exit(f"{args.original_python} is missing: `make bench-layout` makes it, or pass --original-python")
    names = ["parse", "rapidlayout", "RapidLayout"]
    children = {}
    for name in names:
        python = str(args.original_python) if name == "RapidLayout" else sys.executable
        cmd = [python, "-m", "tests.bench_layout", "--engine", name, "--threads", str(args.threads)]
        env = dict(os.environ)
        if args.omp_wait_policy and name != "RapidLayout":
            env["OMP_WAIT_POLICY"] = args.omp_wait_policy.upper()
        children[name] = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
                                          env=env)
    seconds: dict[str, list[float]] = {n: [] for n in names}
    same_classes, worst = 0, 0.0
    todo = pages(args.pages)
    try:
        for name, child in children.items():
            if child.stdout.readline().strip() != "ready":
                sys.exit(f"{name} failed to start (its error is above)")
        for i, path in enumerate(todo):
            regions = {}
            for name in names[i % 3:] + names[:i % 3]:
                children[name].stdin.write(f"{path}\n")
                children[name].stdin.flush()
                answer = children[name].stdout.readline()
                if not answer:
                    sys.exit(f"{name} died on {path.name} (its error is above)")
                reply = json.loads(answer)
                seconds[name].append(reply["seconds"])
                regions[name] = reply["regions"]
            ours, theirs = regions["rapidlayout"], regions["RapidLayout"]
            if [c for c, _ in ours] == [c for c, _ in theirs]:
                same_classes += 1
                for (_, a), (_, b) in zip(ours, theirs):
                    worst = max(worst, *(abs(x - y) for x, y in zip(a, b)))
    finally:
        for child in children.values():
            child.stdin.close()
            child.wait(timeout=60)
    policy = f", ours with OMP_WAIT_POLICY={args.omp_wait_policy.upper()}" if args.omp_wait_policy else ""
    print(f"layout, {len(todo)} structure-dev pages, {args.threads} threads, engines taking turns{policy}")
    for name in names:
        s = sorted(seconds[name])
        print(f"  {name:<12} median {statistics.median(s):6.3f} s  p90 {s[int(0.9 * (len(s) - 1))]:6.3f} s")
    base = seconds["RapidLayout"]
    for name in ("parse", "rapidlayout"):
        per_page = [a / b for a, b in zip(seconds[name], base)]
        print(f"  {name}/RapidLayout: {statistics.median(seconds[name]) / statistics.median(base):.2f}x on medians,"
              f" {statistics.median(per_page):.2f}x median per page")
    print(f"  rapidlayout vs RapidLayout: same classes on {same_classes}/{len(todo)} pages,"
          f" largest box difference {worst:.3f} px")


if __name__ == "__main__":
    main()
