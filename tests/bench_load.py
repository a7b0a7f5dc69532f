"""Benchmark of admission under load (make bench-load): goodput, latency and refusals past capacity.

    .venv/bin/python -m tests.bench_load [--image PAGE] [--level-seconds 30] [--soak-minutes 10]

The stack has the default declaration's shape and limits (conf/parse.toml: its instances, its
deadline_seconds and seconds_per_request), on free loopback ports with the rate limit raised (the
429 is a separate refusal). Steps:
1. Capacity: a closed loop at 2 clients per worker; requests per second it sustains, and the
   measured seconds per request of one worker (what [limits] seconds_per_request should say).
2. Open-loop arrivals at 1x, 2x and 4x that capacity, each for --level-seconds: goodput (answers
   per second that were 200 within the deadline), p50 and p99 latency of the 200s, and the share
   refused (503), plus any other status.
3. A soak at 80% of capacity for --soak-minutes: errors (anything but 200) and each worker's RSS
   at its start and end (uWSGI stats).
The client runs on the same cores as the stack.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from service import settings as settings_mod
from tests.bench_stack import percentile
from tests.support import png, receipt_page
from tests.stack import Stack, write_config




def capacity(stack: Stack, image: bytes, clients: int, n: int) -> tuple[float, float]:
    """(requests/s of a closed loop of `clients`, mean seconds per request of one worker from timing_ms)."""
    per_request: list[float] = []
    lock = threading.Lock()

    def client(count: int) -> None:
        for _ in range(count):
            r = stack.parse(image, timeout=120)
            if r.status == 200:
                with lock:
                    per_request.append(r.json()["timing_ms"]["total"] / 1000)

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(n // clients,)) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(per_request) / (time.perf_counter() - start), sum(per_request) / max(1, len(per_request))


def open_loop(stack: Stack, image: bytes, rate: float, seconds: float) -> tuple[list[tuple[int, float]], float]:
    """Requests sent at `rate` per second for `seconds`, whatever the answers: (status, latency) each,
    and the seconds from the first send to the last answer (what goodput is counted over)."""
    results: list[tuple[int, float]] = []
    lock = threading.Lock()

    def one() -> None:
        start = time.perf_counter()
        try:
            status = stack.parse(image, timeout=stack.cfg.limits.deadline_seconds + 60).status
        except OSError:
            status = 0  # reset, refused or hung: counted as an error
        with lock:
            results.append((status, time.perf_counter() - start))

    n = max(1, round(rate * seconds))
    with ThreadPoolExecutor(max_workers=512) as pool:
        t0 = time.perf_counter()
        for i in range(n):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pool.submit(one)
    return results, time.perf_counter() - t0


def level_row(results: list[tuple[int, float]], seconds: float, deadline: float) -> dict:
    """Goodput over `seconds`, the span until the last answer: a queue that is still draining after
    the arrivals stop must not count as throughput."""
    good = [lat for status, lat in results if status == 200 and lat <= deadline]
    served = [lat for status, lat in results if status == 200]
    return {"sent": len(results), "goodput_rps": len(good) / seconds,
            "p50_s": percentile(served, 50) if served else float("nan"),
            "p99_s": percentile(served, 99) if served else float("nan"),
            "refused_share": sum(1 for s, _ in results if s == 503) / len(results),
            "other": sum(1 for s, _ in results if s not in (200, 503))}


def rss_mib(stack: Stack) -> dict[str, float]:
    return {f"{inst.port}/{w['id']}": w["rss"] / 2**20 for inst in stack.cfg.instances for w in stack.stats(inst)["workers"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench_load", description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, help="the page to send (default: a rendered receipt-like page)")
    parser.add_argument("--level-seconds", type=float, default=30, help="seconds of arrivals per load level")
    parser.add_argument("--soak-minutes", type=float, default=10, help="soak at 80%% of capacity (0: none)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    image = args.image.read_bytes() if args.image else png(receipt_page())
    default = settings_mod.load(settings_mod.DEFAULT_CONFIG)
    shape = [{"weight": i.weight, "processes": i.processes, "threads": i.threads} for i in default.instances]
    deadline = default.limits.deadline_seconds
    out: dict = {"image_bytes": len(image), "instances": shape, "deadline_s": deadline,
                 "seconds_per_request_declared": default.limits.seconds_per_request}

    with tempfile.TemporaryDirectory(prefix="parse-bench-load-") as tmp:
        stack = Stack(write_config(Path(tmp), shape, deadline_seconds=deadline,
                                   seconds_per_request=default.limits.seconds_per_request), Path(tmp) / "run")
        try:
            stack.start()
            workers = sum(i["processes"] for i in shape)
            capacity(stack, image, workers, 2 * workers)  # warm every worker
            rps, per_request = capacity(stack, image, 2 * workers, 20 * workers)
            out.update(capacity_rps=rps, seconds_per_request_measured=per_request)
            print(f"image {len(image)} bytes; {len(shape)} instances, {workers} workers; deadline {deadline:g} s; "
                  f"declared {default.limits.seconds_per_request:g} s per request")
            print(f"capacity (closed loop, {2 * workers} clients): {rps:.2f} req/s; "
                  f"measured {per_request:.3f} s per request per worker", flush=True)
            print(f"{'load':>5} {'sent':>6} {'goodput/s':>10} {'p50 s':>7} {'p99 s':>7} {'refused':>8} {'other':>6}")
            out["levels"] = {}
            for factor in (1, 2, 4):
                row = level_row(*open_loop(stack, image, factor * rps, args.level_seconds), deadline)
                out["levels"][f"{factor}x"] = row
                print(f"{factor:>4}x {row['sent']:6d} {row['goodput_rps']:10.2f} {row['p50_s']:7.2f} {row['p99_s']:7.2f} "
                      f"{row['refused_share']:8.1%} {row['other']:6d}", flush=True)
                time.sleep(deadline / 4)  # the queues drain before the next level
            if args.soak_minutes > 0:
                start_rss = rss_mib(stack)
                soak, _ = open_loop(stack, image, 0.8 * rps, args.soak_minutes * 60)
                end_rss = rss_mib(stack)
                errors = sum(1 for s, _ in soak if s != 200)
                out["soak"] = {"minutes": args.soak_minutes, "requests": len(soak), "errors": errors,
                               "rss_start_mib": start_rss, "rss_end_mib": end_rss,
                               "p99_s": percentile([lat for _, lat in soak], 99)}
                print(f"soak {args.soak_minutes:g} min at 80% ({0.8 * rps:.2f} req/s): {len(soak)} requests, "
                      f"{errors} errors, p99 {out['soak']['p99_s']:.2f} s")
                for key in start_rss:
                    print(f"  worker {key}: RSS {start_rss[key]:.0f} MiB at start, {end_rss.get(key, float('nan')):.0f} MiB at end")
        finally:
            stack.stop()
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
