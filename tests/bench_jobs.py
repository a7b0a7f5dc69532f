"""Benchmark of jobs (make bench-jobs): a 50-page job against the same pages one request at a time.

    .venv/bin/python -m tests.bench_jobs [--pages 50] [--family ppocr]

On a stack of the instances conf/parse.toml declares (its [[instances]], on free loopback
ports): the pages are sent one /v1/parse request at a time, then as one job with the shipped
[jobs] settings (one page in flight: the rest of the fleet stays free for interactive traffic),
then as one job allowed every worker of the fleet. Pages per second for each, from the first
byte sent to the last answer (for a job: submit to status done, polled every 0.1 s).
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

from PIL import Image

from service import settings as settings_mod
from tests.stack import Stack, http, write_config
from tests.support import multipart, render_lines


def pages(n: int) -> list[bytes]:
    out = []
    for i in range(n):
        buf = io.BytesIO()
        lines = [f"Page {i + 1} line {k}: item {i * 7 + k} costs {k}.{i % 100:02d}" for k in range(6)]
        Image.fromarray(render_lines(lines, size=24)).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def one_at_a_time(stack: Stack, files: list[bytes]) -> float:
    start = time.perf_counter()
    for data in files:
        r = stack.parse(data, timeout=120)
        assert r.status == 200, r.body
    return time.perf_counter() - start


def as_job(stack: Stack, files: list[bytes]) -> float:
    body, ctype = multipart([("image", f"page{n}.png", f, "image/png") for n, f in enumerate(files)])
    start = time.perf_counter()
    r = http(stack.url + "/v1/jobs", body, ctype)
    assert r.status == 202, r.body
    job_id = r.json()["id"]
    while True:
        status = http(stack.url + f"/v1/jobs/{job_id}").json()
        if status["status"] != "queued" and status["status"] != "running":
            break
        time.sleep(0.1)
    seconds = time.perf_counter() - start
    assert status["status"] == "done" and status["pages_done"] == len(files), status
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=50)
    parser.add_argument("--family", default=None, help="model family (default: conf/parse.toml's)")
    args = parser.parse_args()
    shipped = settings_mod.load(settings_mod.DEFAULT_CONFIG)
    instances = [{"weight": i.weight, "processes": i.processes, "threads": i.threads} for i in shipped.instances]
    fleet = sum(i.processes for i in shipped.instances)
    files = pages(args.pages)
    print(f"{args.pages} pages, {len(instances)} instances, {fleet} workers, family "
          f"{args.family or shipped.model.family}")
    for label, workers in (("job, shipped [jobs] workers", shipped.jobs.workers), ("job, every worker", fleet)):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = write_config(Path(tmp), instances, family=args.family, deadline_seconds=60,
                               extra=f"[jobs]\nworkers = {workers}\n")
            stack = Stack(cfg, Path(tmp) / "run")
            try:
                stack.start()
                if workers == shipped.jobs.workers:
                    stack.parse(files[0])  # both instances warm before the first figure
                    seconds = one_at_a_time(stack, files)
                    print(f"  one request at a time       {args.pages / seconds:6.2f} pages/s ({seconds:.1f} s)")
                seconds = as_job(stack, files)
                print(f"  {label:<28}{args.pages / seconds:6.2f} pages/s ({seconds:.1f} s, workers = {workers})")
            finally:
                stack.stop()


if __name__ == "__main__":
    main()
