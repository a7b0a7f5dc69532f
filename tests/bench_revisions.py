"""This checkout against another git revision: seconds per SROIE page in-process, taking turns.

    .venv/bin/python -m tests.bench_revisions REV [--pages 10] [--rounds 3] [--threads 2]

REV is checked out into a temporary worktree that shares this checkout's .venv and weights; each
side reads with its own conf/parse.toml's model (the default family).
Each round runs one process per revision over the same pages, in alternating order, so that
the machine's noise falls on both; the medians over every page and round are compared. Used to
show that a change leaves the CPU path no slower (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from service.settings import ROOT
from tests.devset import DEV

# Runs inside the checkout under test: load the default model, time each page's parse().
PROBE = """
import json, sys, time
from pathlib import Path
import numpy as np
from PIL import Image
from service import settings
from service.ocr.model import load_model
names, threads = json.loads(sys.argv[1]), int(sys.argv[2])
cfg = settings.load()
model = load_model(cfg.model, "cpu", threads)
model.warmup()
out = []
for name in names:
    rgb = np.asarray(Image.open(name).convert("RGB"))
    start = time.perf_counter()
    model.parse([rgb])
    out.append(time.perf_counter() - start)
print(json.dumps(out))
"""


def run(checkout: Path, names: list[str], threads: int) -> list[float]:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    env.pop("PARSE_CONFIG", None)
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(names), str(threads)], cwd=checkout,
                          capture_output=True, text=True, check=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench_revisions", description=__doc__.splitlines()[0])
    parser.add_argument("rev")
    parser.add_argument("--pages", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if not DEV.is_dir():
        sys.exit(f"the dev set is not at {DEV}: nothing to measure")
    names = [str(p) for p in sorted(DEV.glob("sroie_*.jpg"))[: args.pages]]
    with tempfile.TemporaryDirectory() as tmp:
        other = Path(tmp) / "rev"
        subprocess.run(["git", "worktree", "add", "-q", "--detach", str(other), args.rev], cwd=ROOT, check=True)
        try:
            (other / ".venv").symlink_to(ROOT / ".venv")
            for f in (ROOT / "weights").iterdir():
                if not (other / "weights" / f.name).exists():
                    (other / "weights" / f.name).symlink_to(f)
            times: dict[str, list[float]] = {"this checkout": [], args.rev: []}
            for r in range(args.rounds):
                order = [("this checkout", ROOT), (args.rev, other)]
                for label, checkout in order if r % 2 == 0 else order[::-1]:
                    times[label] += run(checkout, names, args.threads)
                    print(f"round {r + 1}: {label}: median {statistics.median(times[label]):.3f} s", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(other)], cwd=ROOT, check=False)
    mine, theirs = (statistics.median(times[k]) for k in ("this checkout", args.rev))
    print(f"\n{args.threads} threads, {args.pages} SROIE pages x {args.rounds} rounds: "
          f"this checkout {mine:.3f} s/page, {args.rev} {theirs:.3f} s/page (median), ratio {mine / theirs:.3f}")


if __name__ == "__main__":
    main()
