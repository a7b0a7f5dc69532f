"""Benchmark of the serving stack (make bench): what Nginx + uWSGI + Flask add to the pipeline.

    .venv/bin/python -m tests.bench_stack [--requests 60] [--family ppocr] [--json out.json]

1. The pipeline in-process: decode + parse of one small image, the same code a worker runs.
2. Two instances (one worker, one torch thread each) behind Nginx: a closed loop at concurrency
   1, 2 and 4 over persistent HTTP connections; throughput and p50/p95/p99 latency. The serving
   overhead is p50 through Nginx at concurrency 1 minus the in-process p50; and, immune to the
   model's own run-to-run spread on a busy machine, per request: the client's latency minus the
   time the app itself measured (timing_ms.total), which leaves Nginx, uWSGI, Flask, the upload
   and the JSON encoding.
3. The same loop at concurrency 4 against one instance, for the two-instance speed-up.
The client runs on the same cores as the stack, as a local client would.
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import io
import json
import tempfile
import threading
import time
from pathlib import Path

from PIL import Image

from service import settings as settings_mod
from service.documents.images import decode_page
from service.settings import Limits
from service.ocr.model import load_model
from tests.conftest import render_lines
from tests.stack import Stack, default_family, write_config


def small_image() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(render_lines(["Total 42.50"], size=20, margin=8)).save(buf, format="PNG")
    return buf.getvalue()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summary(latencies: list[float], seconds: float | None = None) -> dict[str, float]:
    out = {"n": len(latencies), "p50_ms": percentile(latencies, 50) * 1000,
           "p95_ms": percentile(latencies, 95) * 1000, "p99_ms": percentile(latencies, 99) * 1000}
    if seconds is not None:
        out["rps"] = len(latencies) / seconds
    return out


def in_process(family: str, image: bytes, n: int) -> dict[str, float]:
    cfg = settings_mod.load(settings_mod.DEFAULT_CONFIG)
    model = load_model(dataclasses.replace(cfg.model, family=family), "cpu", threads=1)
    model.warmup()
    latencies = []
    for _ in range(n):
        start = time.perf_counter()
        rgb, grey = decode_page(image, Limits(), grey=model.reads_grey)  # the route's decode step
        model.parse([rgb], [grey])
        latencies.append(time.perf_counter() - start)
    return summary(latencies)


def closed_loop(stack: Stack, image: bytes, concurrency: int, n: int) -> dict[str, float]:
    """`concurrency` clients, each sending its next request when the last one answered."""
    host, port = stack.cfg.nginx.listen.split(":")
    latencies: list[float] = []
    overheads: list[float] = []  # client latency minus the app's own timing_ms.total, per request
    failures: list[int] = []
    lock = threading.Lock()
    per_client = [n // concurrency + (1 if i < n % concurrency else 0) for i in range(concurrency)]

    def client(count: int) -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=120)
        conn.request("GET", "/healthz")  # open the connection before the clock starts
        conn.getresponse().read()
        barrier.wait()
        for _ in range(count):
            start = time.perf_counter()
            conn.request("POST", "/v1/parse", body=image, headers={"Content-Type": "image/png"})
            response = conn.getresponse()
            body = response.read()
            latency = time.perf_counter() - start
            with lock:
                latencies.append(latency)
                if response.status != 200:
                    failures.append(response.status)
                else:
                    overheads.append(latency - json.loads(body)["timing_ms"]["total"] / 1000)
        conn.close()

    barrier = threading.Barrier(concurrency + 1)
    threads = [threading.Thread(target=client, args=(c,)) for c in per_client]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    result = summary(latencies, time.perf_counter() - start)
    result["failures"] = len(failures)
    result["overhead_p50_ms"] = percentile(overheads, 50) * 1000 if overheads else float("nan")
    return result


def with_stack(instances: list[dict], family: str, fn):
    with tempfile.TemporaryDirectory(prefix="parse-bench-") as tmp:
        stack = Stack(write_config(Path(tmp), instances, family=family, deadline_seconds=60), Path(tmp) / "run")
        try:
            stack.start()
            return fn(stack)
        finally:
            stack.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench_stack", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=60, help="requests per measurement (default 60)")
    parser.add_argument("--family", default=default_family(), help="model family (default: conf/parse.toml's)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    image = small_image()
    one = {"weight": 1, "processes": 1, "threads": 1}

    results: dict = {"family": args.family, "image_bytes": len(image), "requests": args.requests}
    results["in_process"] = in_process(args.family, image, args.requests)

    def loops(stack: Stack) -> dict:
        closed_loop(stack, image, 2, 8)  # warm both instances' first requests and Nginx
        return {f"c{c}": closed_loop(stack, image, c, args.requests) for c in (1, 2, 4)}

    results["two_instances"] = with_stack([one, one], args.family, loops)
    results["one_instance"] = with_stack([one], args.family, lambda s: (closed_loop(s, image, 2, 8),
                                                                        closed_loop(s, image, 4, args.requests))[1])
    results["overhead_p50_ms"] = results["two_instances"]["c1"]["p50_ms"] - results["in_process"]["p50_ms"]
    results["overhead_per_request_p50_ms"] = results["two_instances"]["c1"]["overhead_p50_ms"]
    results["speedup_two_vs_one"] = results["two_instances"]["c4"]["rps"] / results["one_instance"]["rps"]

    print(f"family {args.family}, image {len(image)} bytes, {args.requests} requests per row")
    print(f"{'':28} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'failed':>6}")
    ip = results["in_process"]
    print(f"{'in-process decode+parse':28} {'':>7} {ip['p50_ms']:8.1f} {ip['p95_ms']:8.1f} {ip['p99_ms']:8.1f}")
    rows = [(f"2 instances, concurrency {c}", results["two_instances"][f"c{c}"]) for c in (1, 2, 4)]
    rows.append(("1 instance, concurrency 4", results["one_instance"]))
    for name, r in rows:
        print(f"{name:28} {r['rps']:7.2f} {r['p50_ms']:8.1f} {r['p95_ms']:8.1f} {r['p99_ms']:8.1f} {r['failures']:6d}")
    print(f"serving overhead at p50 (concurrency 1 minus in-process): {results['overhead_p50_ms']:.1f} ms (goal <= 3)")
    print(f"serving overhead per request at p50 (client latency minus the app's timing_ms.total, "
          f"concurrency 1): {results['overhead_per_request_p50_ms']:.2f} ms")
    print(f"two instances / one instance at concurrency 4: {results['speedup_two_vs_one']:.2f}x (goal >= 1.8)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
