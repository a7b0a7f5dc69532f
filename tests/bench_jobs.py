"""Benchmark of jobs (make bench-jobs): a 50-page job against the same pages one request at a time.

    .venv/bin/python -m tests.bench_jobs [--pages 50] [--family ppocr]
    .venv/bin/python -m tests.bench_jobs --fleet [--pages 50]     (root: network namespaces)

Fleet mode runs the namespace fleet of tests/test_fleet_netns.py (front host with Nginx and
PostgreSQL, instance hosts a and b, one worker each, [jobs] workers = 2): pages per second of one
job over both hosts; then the time from the loss of the host whose coordinator holds pages (every
process killed) to the last of those pages being read on the other; then the job on that host alone.

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


def fleet_pdf(pages: int) -> bytes:
    """`pages` pages of one shared content stream: about 150 bytes a page, so that the job's time is
    its pages' reading, not its upload."""
    from tests.pdfs import written_pdf

    text = b"BT /F1 14 Tf 72 80 Td (Item 12 costs 3.50) Tj 0 -28 Td (Total 41.50 paid) Tj ET"
    first = 5
    kids = b" ".join(b"%d 0 R" % (first + i) for i in range(pages))
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>",
               b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, pages),
               b"<< /Length %d >>\nstream\n%s\nendstream" % (len(text), text),
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    objects += [b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 360 144] /Contents 3 0 R "
                b"/Resources << /Font << /F1 4 0 R >> >> >>"] * pages
    return written_pdf(objects)


def fleet_mode(pages: int) -> None:
    from service.store.db import Postgres
    from tests import netns, pg
    from tests.test_fleet_netns import JOB_QUERY, LEASE_S, Fleet, call, wait_job

    why = netns.netns_usable() or pg.usable()
    if why:
        raise SystemExit(f"fleet mode needs network namespaces and PostgreSQL: {why}")
    body, ctype = multipart([("image", "bench.pdf", fleet_pdf(pages), "application/pdf")])
    with tempfile.TemporaryDirectory() as tmp:
        fs = Fleet(Path(tmp))
        try:
            fs.start()

            def job() -> str:
                r = call(fs, "POST", "/v1/jobs" + JOB_QUERY, body, ctype)
                assert r.status == 202, r.body
                return r.json()["id"]

            def timed() -> float:
                start = time.perf_counter()
                status = wait_job(fs, job(), timeout=1800)
                assert status["status"] == "done" and status["pages_done"] == pages, status
                return time.perf_counter() - start

            print(f"fleet: one {pages}-page job ({len(body)} bytes), [jobs] workers = 2, one worker per host, "
                  f"lease {LEASE_S} s")
            wait_job(fs, job(), timeout=600)  # both hosts warm
            two = timed()
            print(f"  two hosts (a + b)           {pages / two:6.2f} pages/s ({two:.1f} s)")
            # The host whose coordinator holds pages is lost: how long until they are read elsewhere.
            store = Postgres(fs.cfg.store.url, fs.cfg.store.password_file, 5)
            job_id = job()
            wait_job(fs, job_id, lambda j: j["pages_done"] >= 3, timeout=600)
            with fs.clients(1) as pool:
                while not (held := pool.submit(_leased, store, job_id).result()):
                    time.sleep(0.01)
                lost_host = held[0][1].split(":")[0]
                fs.kill(lost_host)
                lost = time.perf_counter()
                idxs = [idx for idx, owner in held if owner.startswith(lost_host + ":")]
                while pool.submit(_done_pages, store, job_id, idxs).result() < len(idxs):
                    time.sleep(0.05)
            recovered = time.perf_counter() - lost
            wait_job(fs, job_id, timeout=1800)
            survivor = "b" if lost_host == "a" else "a"
            print(f"  host {lost_host} lost: the {len(idxs)} page(s) its coordinator held read on {survivor} "
                  f"{recovered:.1f} s later (lease {LEASE_S} s)")
            one = timed()
            print(f"  one host ({survivor})                {pages / one:6.2f} pages/s ({one:.1f} s); "
                  f"two hosts: {one / two:.2f}x")
        finally:
            fs.stop()


def _leased(store, job_id: str) -> list[tuple[int, str]]:
    """(page, coordinator) of the job's pages leased now."""
    with store.tx() as tx:
        return [(r["idx"], r["lease_owner"]) for r in tx.query(
            "SELECT idx, lease_owner FROM job_page WHERE job_id = ? AND done = 0 AND lease_owner IS NOT NULL",
            (job_id,))]


def _done_pages(store, job_id: str, idxs: list[int]) -> int:
    with store.tx() as tx:
        return sum(tx.one("SELECT done FROM job_page WHERE job_id = ? AND idx = ?", (job_id, i))["done"] for i in idxs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=50)
    parser.add_argument("--family", default=None, help="model family (default: conf/parse.toml's)")
    parser.add_argument("--fleet", action="store_true", help="the namespace fleet: two hosts against one, host loss")
    args = parser.parse_args()
    if args.fleet:
        fleet_mode(args.pages)
        return
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
