"""Benchmark of one GPU at full use (make bench-gpu): throughput, latency, kernel time, accuracy.

    .venv/bin/python -m tests.bench_gpu [--device cuda:0] [--processes 1] [--batch-pages 16]
        [--batch-wait-ms 5] [--threads 1] [--pages 40] [--crops 50] [--concurrency 1,8,32,64]
        [--rounds 3] [--level-seconds 6] [--profile-pages 10] [--family ppocr] [--precision auto]
        [--det-bucket 0] [--cudnn] [--baseline DIR] [--json out.json]

1. Unbatched: a stack of one instance on the device with batch_pages = 1 and the shipped [model]
   settings reads every dev page (SROIE receipts, ?mode=page) and line crop (?mode=line) once; its
   answers are what the settings under test must keep, computed in this run by the same model on
   the same device.
2. Batched: one instance on the device, --processes workers each gathering up to --batch-pages
   pages per model call, waiting at most --batch-wait-ms for others, with the [model] settings
   under test (--precision, --det-bucket, --cudnn; the shipped ones by default). The same pages
   and crops sent all at once (its warm-up, and the answers the accuracy check reads), then closed
   loops of N clients over persistent connections through Nginx, N in --concurrency, for
   --level-seconds each, the levels taking turns for --rounds rounds (a busy host drifts, and
   taking turns drifts every level alike). Per level: pages per second, p50 and p99 latency,
   non-200 answers, the app's own time and batch wait, and pages per model call (/metrics);
   medians over the rounds.
3. In-process (service.ocr.model.load_model on the device, the settings under test): wall time
   per page and per stage, one page per call and --batch-pages pages per call; on CUDA also the
   kernels' time per page (torch.profiler, self CUDA time of every kernel and copy) against the
   host's share.
4. Accuracy: the share of lines whose text the batched stack gives identically to the unbatched
   one, and score.py's case-insensitive CER of both against the ground truth, SROIE pages and line
   crops. With --baseline DIR (prediction files of an earlier checkout on the same device, as
   `python -m tests.devset --out DIR` writes them: today's output), the same against those too.
5. A summary of the GPU goals next to the figures measured.

Pages are the SROIE dev pages from ../shared/ocr-dev (read in place, tests/devset.py); without the
dev set, rendered pages and lines stand in, and the CER is skipped (the identical-lines share stays).
The client runs on the same host as the stack.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import statistics
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from http.client import HTTPConnection, HTTPException
from pathlib import Path

from service import settings as settings_mod
from tests.bench_jobs import pages as rendered_pages
from tests.bench_stack import percentile
from tests.devset import DEV, SCORE, cer, compare, dev_items
from tests.stack import Stack, default_family, http, write_config
from tests.support import png, render_lines

# The goals for one GPU with the default model (docs/benchmarks.md, GPU).
GOAL_PAGES_PER_SECOND = 100.0
GOAL_MS_AT_ONE = 40.0
GOAL_IDENTICAL = 0.97
DEADLINE_SECONDS = 60.0


@dataclass(frozen=True)
class Item:
    """One upload: its name (the dev set's basename), bytes, content type and ?mode=."""

    name: str
    data: bytes
    content_type: str
    mode: str


def dev_uploads(subset: str, count: int, mode: str) -> list[Item]:
    out = []
    for path, _ in dev_items({subset})[:count]:
        ctype = "image/jpeg" if path.suffix == ".jpg" else "image/png"
        out.append(Item(path.stem, path.read_bytes(), ctype, mode))
    return out


def rendered_uploads(pages: int, crops: int) -> tuple[list[Item], list[Item]]:
    """Stand-ins without the dev set: receipt-like rendered pages, and single rendered lines."""
    page_items = [Item(f"page{n}", data, "image/png", "page") for n, data in enumerate(rendered_pages(pages))]
    crop_items = [Item(f"line{n}", png(render_lines([f"Item {n * 13 % 97:02d} total RM {n * 1.7:.2f}"],
                                                     size=24, margin=6)), "image/png", "line")
                  for n in range(crops)]
    return page_items, crop_items


def model_keys(args: argparse.Namespace) -> dict:
    """The [model] settings under test; the unbatched stack runs the shipped ones (today's output)."""
    return {"precision": args.precision, "det_bucket": args.det_bucket, "cudnn": args.cudnn}


def declare(folder: Path, args: argparse.Namespace, batch_pages: int, model: dict) -> Stack:
    """A stack of one instance on the device. Admission is sized for the largest concurrency twice
    over (deploy.admitted: each request thread holds deadline / seconds_per_request), so no level is
    refused by a queue sized for a CPU's time per request, and the listen queue stays far below
    net.core.somaxconn."""
    slots = args.processes * batch_pages
    per_slot = -(-2 * max(args.concurrency) // slots)
    instance = {"device": args.device, "processes": args.processes, "threads": args.threads,
                "batch_pages": batch_pages, "batch_wait_ms": args.batch_wait_ms}
    # Half a request over per_slot, so that deploy's floor(deadline / seconds) is per_slot whatever the rounding.
    cfg = write_config(folder, [instance], family=args.family, deadline_seconds=DEADLINE_SECONDS,
                       seconds_per_request=DEADLINE_SECONDS / (per_slot + 0.5), model=model)
    return Stack(cfg, folder / "run")


def check_device(stack: Stack, wanted: str) -> str:
    """The device the stack's workers really run on (/v1/models); a CUDA request that fell back to
    the CPU would make every figure a CPU figure, so it stops the run."""
    served = http(stack.url + "/v1/models").json()["device"]
    if wanted.startswith("cuda") and not served.startswith("cuda"):
        sys.exit(f"the stack asked for {wanted} but its worker runs on {served}: see its log in {stack.run}")
    return served


@dataclass
class Answer:
    item: Item
    status: int
    seconds: float
    body: dict | None  # the JSON of a 200


def send(conn: HTTPConnection, item: Item) -> Answer:
    start = time.perf_counter()
    try:
        conn.request("POST", f"/v1/parse?mode={item.mode}", body=item.data, headers={"Content-Type": item.content_type})
        response = conn.getresponse()
        raw = response.read()
        status = response.status
    except (OSError, HTTPException):
        status, raw = 0, b""  # reset, refused or hung up: counted with the non-200s
        conn.close()
    seconds = time.perf_counter() - start
    return Answer(item, status, seconds, json.loads(raw) if status == 200 else None)


def connection(stack: Stack) -> HTTPConnection:
    host, port = stack.cfg.nginx.listen.split(":")
    conn = HTTPConnection(host, int(port), timeout=DEADLINE_SECONDS + 30)
    conn.request("GET", "/healthz")  # connected before the clock starts
    conn.getresponse().read()
    return conn


def closed_loop(stack: Stack, items: list[Item], clients: int, seconds: float | None) -> tuple[list[Answer], float]:
    """`clients` clients over persistent connections, each sending its next item when the last one
    answered, the items dealt out in turn: for `seconds` (each client sends at least one), or, with
    None, until every item was sent once. (answers, seconds from the start to the last answer)."""
    answers: list[Answer] = []
    lock = threading.Lock()
    order = itertools.cycle(items) if seconds is not None else iter(items)
    barrier = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def next_item() -> Item | None:
        with lock:
            return next(order, None)

    errors: list[BaseException] = []

    def client() -> None:
        try:
            conn = connection(stack)
            barrier.wait()
            first = True
            while first or seconds is None or time.perf_counter() < stop_at[0]:
                first = False
                item = next_item()
                if item is None:
                    break
                answer = send(conn, item)
                with lock:
                    answers.append(answer)
            conn.close()
        except BaseException as err:  # a client that cannot connect must not leave the others waiting
            errors.append(err)
            barrier.abort()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    start = time.perf_counter()
    stop_at[0] = start + (seconds or 0)
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        pass
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"{len(errors)} of {clients} clients failed") from errors[0]
    return answers, time.perf_counter() - start


def read_all(stack: Stack, items: list[Item], clients: int) -> dict[str, Answer]:
    """Every item once, `clients` at a time; each item's answer by name."""
    answers, _ = closed_loop(stack, items, min(clients, len(items)), None)
    return {a.item.name: a for a in answers}


def server_p50(answers: list[Answer], stage: str) -> float:
    """The median of the app's own timing_ms[stage] over the 200s that report it."""
    values = [a.body["timing_ms"][stage] for a in answers if a.body and stage in a.body["timing_ms"]]
    return percentile(values, 50) if values else float("nan")


def batch_counts(stack: Stack) -> tuple[float, float]:
    """(sum, count) of the parse_batch_pages histogram in /metrics: pages read in the same model call
    as each page, over every page read so far (none where batching is off)."""
    values = dict.fromkeys(("parse_batch_pages_sum", "parse_batch_pages_count"), 0.0)
    for line in http(stack.url + "/metrics").body.decode().splitlines():
        name, _, value = line.partition(" ")
        if name in values:
            values[name] = float(value)
    return values["parse_batch_pages_sum"], values["parse_batch_pages_count"]


def level(stack: Stack, items: list[Item], clients: int, seconds: float) -> dict:
    """One closed loop: pages per second of 200s, their latency, the non-200s, the app's own time,
    and the pages per model call (page-weighted mean)."""
    before = batch_counts(stack)
    answers, elapsed = closed_loop(stack, items, clients, seconds)
    after = batch_counts(stack)
    ok = [a.seconds for a in answers if a.status == 200]
    pages = after[1] - before[1]
    return {"sent": len(answers), "pages_per_second": len(ok) / elapsed,
            "p50_ms": percentile(ok, 50) * 1000 if ok else float("nan"),
            "p99_ms": percentile(ok, 99) * 1000 if ok else float("nan"),
            "non_200": len(answers) - len(ok),
            "server_ms_p50": server_p50(answers, "total"), "batch_wait_ms_p50": server_p50(answers, "batch_wait"),
            "pages_per_batch": (after[0] - before[0]) / pages if pages else float("nan")}


def load_levels(stack: Stack, items: list[Item], args: argparse.Namespace) -> dict[int, dict]:
    """Every level in turn, --rounds times; per level the medians over the rounds (non-200: the sum)."""
    rounds: dict[int, list[dict]] = {c: [] for c in args.concurrency}
    for r in range(args.rounds):
        for c in args.concurrency:
            row = level(stack, items, c, args.level_seconds)
            rounds[c].append(row)
            print(f"  round {r + 1} concurrency {c:3d}: {row['pages_per_second']:8.2f} pages/s, p50 {row['p50_ms']:8.1f} ms,"
                  f" p99 {row['p99_ms']:8.1f} ms, {row['non_200']} non-200 of {row['sent']}", flush=True)
    out = {}
    for c, rows in rounds.items():
        out[c] = {key: statistics.median(r[key] for r in rows)
                  for key in ("pages_per_second", "p50_ms", "p99_ms", "server_ms_p50", "batch_wait_ms_p50",
                              "pages_per_batch")}
        out[c] |= {"non_200": sum(r["non_200"] for r in rows), "sent": sum(r["sent"] for r in rows),
                   "pages_per_second_range": (min(r["pages_per_second"] for r in rows),
                                              max(r["pages_per_second"] for r in rows))}
    return out


def run_stack(args: argparse.Namespace, batch_pages: int, model: dict, items: list[Item], crops: list[Item],
              measure: bool) -> dict:
    """One stack: every page and crop read once at the largest concurrency (the warm-up, and the
    outputs compared), then, when `measure`, the load levels."""
    with tempfile.TemporaryDirectory(prefix="parse-bench-gpu-") as tmp:
        stack = declare(Path(tmp), args, batch_pages, model)
        try:
            started = time.perf_counter()
            stack.start()
            out: dict = {"start_seconds": time.perf_counter() - started, "device": check_device(stack, args.device),
                         "declaration": model_line(stack.cfg) + "; "
                         + (Path(tmp) / "parse.toml").read_text().split("[[instances]]", 1)[1].strip()}
            print(f"  stack up in {out['start_seconds']:.1f} s, workers on {out['device']}", flush=True)
            clients = max(args.concurrency)
            out["pages"] = read_all(stack, items, clients)
            out["crops"] = read_all(stack, crops, clients)
            if measure:
                out["levels"] = load_levels(stack, items, args)
        finally:
            stack.stop()
    return out


def profile(args: argparse.Namespace, items: list[Item]) -> dict:
    """In-process wall time per page and per stage at one page per call and --batch-pages per call;
    on CUDA also the kernels' time per page."""
    import torch

    from service.documents.images import decode_page
    from service.ocr import allocator
    from service.ocr.model import load_model
    from service.settings import Limits

    cfg = settings_mod.load(settings_mod.DEFAULT_CONFIG)
    model = load_model(dataclasses.replace(cfg.model, family=args.family, **model_keys(args)), args.device, args.threads)
    model.warmup()
    cuda = model.device.type == "cuda"
    chosen = items[:args.profile_pages]
    out: dict = {"device": str(model.device), "precision": model.precision, "pages": len(chosen)}

    def one_pass(batch: int) -> dict:
        stages = {"decode": 0.0, "detect": 0.0, "recognize": 0.0}
        start = time.perf_counter()
        for k in range(0, len(chosen), batch):
            t0 = time.perf_counter()
            decoded = [decode_page(item.data, Limits(), grey=model.reads_grey) for item in chosen[k:k + batch]]
            stages["decode"] += time.perf_counter() - t0
            pages = model.parse([rgb for rgb, _ in decoded], [grey for _, grey in decoded])
            for page in pages:  # each page carries its share of its call's stage times
                stages["detect"] += page.timing.get("detect", 0.0)
                stages["recognize"] += page.timing.get("recognize", 0.0)
            allocator.release_above(cfg.limits.worker_memory_bytes)  # as a worker does after each request
        wall = time.perf_counter() - start
        row = {"wall_ms": wall / len(chosen) * 1000}
        row |= {f"{stage}_ms": seconds / len(chosen) * 1000 for stage, seconds in stages.items()}
        row["other_ms"] = row["wall_ms"] - sum(row[f"{stage}_ms"] for stage in stages)
        return row

    def kernels(batch: int) -> float:
        """Self CUDA time of every kernel and copy per page, ms (torch.profiler's "Self CUDA time total")."""
        from torch.profiler import ProfilerActivity
        with torch.profiler.profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            one_pass(batch)
            torch.cuda.synchronize()
        total_us = sum(getattr(e, "self_device_time_total", 0.0) for e in prof.key_averages()
                       if e.device_type == torch.autograd.DeviceType.CUDA)
        return total_us / 1000 / len(chosen)

    for batch in sorted({1, min(args.batch_pages, len(chosen))}):
        if cuda:  # a batch's first shapes cost the GPU allocator and kernel selection once: not per page
            one_pass(batch)
        row = one_pass(batch)
        if cuda:
            row["kernel_ms"] = kernels(batch)
            row["host_ms"] = row["wall_ms"] - row["kernel_ms"]
        out[f"batch{batch}"] = row
    if cuda:
        out["max_memory_mib"] = torch.cuda.max_memory_allocated(model.device) / 2**20
    return out


def lines_of(answer: Answer | None) -> list[dict]:
    return answer.body["images"][0]["lines"] if answer is not None and answer.body else []


def predictions(answers: dict[str, Answer], folder: Path) -> None:
    """Each answered item's lines as a score.py prediction file (a non-200 scores as empty)."""
    folder.mkdir(parents=True)
    for name, answer in answers.items():
        (folder / f"{name}.json").write_text(json.dumps({"lines": lines_of(answer)}))


def identical(batched: dict[str, Answer], expected: dict[str, list[dict]]) -> tuple[int, int, float]:
    """(expected lines whose text the batched answer gives identically, in order; expected lines;
    largest quad difference in px on those lines)."""
    same = total = 0
    quad = 0.0
    for name, want in expected.items():
        s, q, _ = compare(lines_of(batched.get(name)), want)
        same, total, quad = same + s, total + len(want), max(quad, q)
    return same, total, quad


def accuracy(unbatched: dict, batched: dict, dev: bool, baseline: Path | None) -> dict:
    """Per kind (pages, crops): the batched answers against the unbatched ones and, given a
    baseline folder, against its predictions; with the dev set, score.py's CER-ci of each."""
    out: dict = {}
    for key, subset in (("pages", "sroie"), ("crops", "sroie_lines")):
        same, total, quad = identical(batched[key], {n: lines_of(a) for n, a in unbatched[key].items()})
        row = {"identical": same, "lines": total, "max_quad_px": quad}
        if baseline is not None:
            base = {name: json.loads((baseline / f"{name}.json").read_text())["lines"] for name in unbatched[key]}
            row["identical_baseline"], row["lines_baseline"], _ = identical(batched[key], base)
        if dev and unbatched[key]:
            with tempfile.TemporaryDirectory() as tmp:
                for name, result in (("unbatched", unbatched), ("batched", batched)):
                    predictions(result[key], Path(tmp) / name)
                    row[f"cer_{name}"] = cer(Path(tmp) / name, {subset}, pages=len(result[key]))[subset]["cer_ci_micro"]
                if baseline is not None:
                    (Path(tmp) / "baseline").mkdir()
                    for name in unbatched[key]:  # only the items run: the folder may hold others
                        (Path(tmp) / "baseline" / f"{name}.json").write_bytes((baseline / f"{name}.json").read_bytes())
                    row["cer_baseline"] = cer(Path(tmp) / "baseline", {subset},
                                              pages=len(unbatched[key]))[subset]["cer_ci_micro"]
        out[key] = row
    return out


def model_line(cfg: settings_mod.Settings) -> str:
    m = cfg.model
    return f"precision = {m.precision!r}; det_bucket = {m.det_bucket}; cudnn = {str(m.cudnn).lower()}"


def share(part: int, whole: int, long: bool = True) -> str:
    text = f"{part / max(1, whole):.2%}"
    return f"{part}/{whole} ({text})" if long else text


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.bench_gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda:0", help="the instance's device: cuda:N, or cpu to try the script")
    parser.add_argument("--family", default=default_family(), help="model family (default: conf/parse.toml's)")
    parser.add_argument("--processes", type=int, default=1, help="uWSGI workers on the device, one model each")
    parser.add_argument("--batch-pages", type=int, default=16, help="most pages one model call gathers")
    parser.add_argument("--batch-wait-ms", type=float, default=5.0, help="longest a page waits for others")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads per worker")
    shipped = settings_mod.load(settings_mod.DEFAULT_CONFIG).model
    parser.add_argument("--precision", default=shipped.precision, help="[model] precision of the batched stack")
    parser.add_argument("--det-bucket", type=int, default=shipped.det_bucket,
                        help="[model] det_bucket of the batched stack (px multiple; 0: none)")
    parser.add_argument("--cudnn", action=argparse.BooleanOptionalAction, default=shipped.cudnn,
                        help="[model] cudnn of the batched stack")
    parser.add_argument("--pages", type=int, default=40, help="SROIE dev pages (default: all 40)")
    parser.add_argument("--crops", type=int, default=50, help="SROIE line crops (default: all 50)")
    parser.add_argument("--concurrency", default="1,8,32,64", help="clients per load level, comma-separated")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of all levels in turn; medians are printed")
    parser.add_argument("--level-seconds", type=float, default=6.0, help="seconds of sending per level and round")
    parser.add_argument("--profile-pages", type=int, default=10, help="pages of the in-process timing")
    parser.add_argument("--baseline", type=Path, help="prediction files of today's output on this device "
                        "(python -m tests.devset --out DIR in an earlier checkout) to compare with too")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    if min(args.concurrency) < 1 or min(args.processes, args.batch_pages, args.threads, args.pages, args.rounds) < 1:
        parser.error("--concurrency, --processes, --batch-pages, --threads, --pages and --rounds need values >= 1")
    return args


def environment(args: argparse.Namespace) -> str:
    import torch

    line = f"torch {torch.__version__}"
    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            sys.exit(f"--device {args.device}: torch {torch.__version__} sees no CUDA device "
                     f"(torch.version.cuda = {torch.version.cuda}); run with --device cpu to try the script here")
        index = int(args.device.partition(":")[2] or 0)
        props = torch.cuda.get_device_properties(index)
        line += (f", CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, {props.name} "
                 f"({props.total_memory / 2**30:.0f} GiB)")
    return line


def stop_on_term(signum: int, frame: object) -> None:
    """SIGTERM (a timeout, Ctrl-C's cousin) unwinds like an error, so every stack is stopped by PID."""
    raise SystemExit(f"stopped by signal {signum}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, stop_on_term)
    began = time.perf_counter()
    dev = DEV.is_dir() and SCORE.is_file()
    if dev:
        items = dev_uploads("sroie", args.pages, "page")
        crops = dev_uploads("sroie_lines", args.crops, "line")
    else:
        print(f"the dev set ({DEV}) or its scorer ({SCORE}) is absent: rendered pages and lines stand in, and the"
              " CER is skipped (the identical-lines share is still measured)")
        items, crops = rendered_uploads(args.pages, args.crops)
    if args.baseline:
        missing = [i.name for i in items + crops if not (args.baseline / f"{i.name}.json").is_file()]
        if missing:
            sys.exit(f"--baseline {args.baseline} has no prediction for {len(missing)} of the {len(items) + len(crops)}"
                     f" items (first: {missing[0]}.json): write it with python -m tests.devset --subset sroie"
                     " --subset sroie_lines --out DIR")
    env = environment(args)
    print(f"bench-gpu: family {args.family}, device {args.device}, {args.processes} worker(s), batch_pages "
          f"{args.batch_pages}, batch_wait_ms {args.batch_wait_ms:g}, {args.threads} torch thread(s), precision "
          f"{args.precision}, det_bucket {args.det_bucket}, cudnn {str(args.cudnn).lower()}; {env}")
    print(f"{len(items)} {'SROIE' if dev else 'rendered'} pages, {len(crops)} line crops; concurrency "
          f"{','.join(map(str, args.concurrency))}, {args.rounds} rounds of {args.level_seconds:g} s per level", flush=True)

    print("\n1. unbatched stack (batch_pages = 1): every page and crop once, the answers the settings under test must keep", flush=True)
    unbatched = run_stack(args, 1, {}, items, crops, measure=False)
    print("  " + unbatched["declaration"].replace("\n", "; "))
    print(f"\n2. batched stack (batch_pages = {args.batch_pages}): every page and crop at once, then the load levels",
          flush=True)
    batched = run_stack(args, args.batch_pages, model_keys(args), items, crops, measure=True)
    print("  declaration: " + batched["declaration"].replace("\n", "; "))
    print(f"  {'concurrency':>11} {'pages/s':>9} {'(range)':>17} {'p50 ms':>9} {'p99 ms':>9} {'server p50':>10}"
          f" {'wait p50':>9} {'per batch':>9} {'non-200':>9}")
    for c, row in batched["levels"].items():
        lo, hi = row["pages_per_second_range"]
        print(f"  {c:>11} {row['pages_per_second']:9.2f} {f'({lo:.2f}-{hi:.2f})':>17} {row['p50_ms']:9.1f}"
              f" {row['p99_ms']:9.1f} {row['server_ms_p50']:10.1f} {row['batch_wait_ms_p50']:9.1f}"
              f" {row['pages_per_batch']:9.2f} {row['non_200']:>4}/{row['sent']:<4}")
    print("  server p50: the app's timing_ms.total; wait p50: its timing_ms.batch_wait (a page's wait for its batch);"
          " per batch: pages per model call, per page (parse_batch_pages)")

    print(f"\n3. in-process on {args.device}: {min(args.profile_pages, len(items))} pages, ms per page", flush=True)
    prof = profile(args, items)
    cuda = prof["device"].startswith("cuda")
    print(f"  {'pages per call':>14} {'wall':>8} {'decode':>8} {'detect':>8} {'recognize':>9} {'other':>8}"
          + (f" {'kernels':>8} {'host':>8} {'GPU busy':>8}" if cuda else ""))
    for key, row in prof.items():
        if not key.startswith("batch"):
            continue
        text = (f"  {key[5:]:>14} {row['wall_ms']:8.1f} {row['decode_ms']:8.1f} {row['detect_ms']:8.1f}"
                f" {row['recognize_ms']:9.1f} {row['other_ms']:8.1f}")
        if cuda:
            text += f" {row['kernel_ms']:8.1f} {row['host_ms']:8.1f} {row['kernel_ms'] / row['wall_ms']:8.1%}"
        print(text)
    if cuda:
        print(f"  kernels: torch.profiler's self CUDA time of every kernel and copy; host: wall minus kernels;"
              f" peak GPU memory {prof['max_memory_mib']:.0f} MiB")
    else:
        print("  the kernel/host split needs CUDA (torch.profiler's CUDA activity): wall time per stage only")

    print("\n4. accuracy: the batched stack against the unbatched one (same model, device and run)"
          + (f" and against the baseline {args.baseline}" if args.baseline else ""), flush=True)
    acc = accuracy(unbatched, batched, dev, args.baseline)
    for key, label in (("pages", "SROIE pages" if dev else "pages"), ("crops", "line crops")):
        row = acc[key]
        text = (f"  {label:<12} identical to unbatched {share(row['identical'], row['lines'])},"
                f" max quad diff {row['max_quad_px']:.1f} px")
        if "identical_baseline" in row:
            text += f"; identical to the baseline {share(row['identical_baseline'], row['lines_baseline'])}"
        if "cer_batched" in row:
            text += f"; CER-ci batched {row['cer_batched']:.4f}, unbatched {row['cer_unbatched']:.4f}"
        if "cer_baseline" in row:
            text += f", baseline {row['cer_baseline']:.4f}"
        print(text)

    levels = batched["levels"]
    best = max(levels, key=lambda c: levels[c]["pages_per_second"])
    rows = [(f"pages/s (best: concurrency {best})", f">= {GOAL_PAGES_PER_SECOND:g}",
             f"{levels[best]['pages_per_second']:.2f}", levels[best]["pages_per_second"] >= GOAL_PAGES_PER_SECOND)]
    if 1 in levels:
        rows.append(("ms per page at concurrency 1 (p50)", f"<= {GOAL_MS_AT_ONE:g}", f"{levels[1]['p50_ms']:.1f}",
                     levels[1]["p50_ms"] <= GOAL_MS_AT_ONE))
    for suffix, label in (("", "unbatched"), ("_baseline", "the baseline")):
        if all(f"identical{suffix}" in acc[key] for key in acc):
            same = sum(acc[key][f"identical{suffix}"] for key in acc)
            total = sum(acc[key][f"lines{suffix}"] for key in acc)
            rows.append((f"lines identical to {label}", f">= {GOAL_IDENTICAL:.0%}", share(same, total, long=False),
                         same >= GOAL_IDENTICAL * total))
    for key, label in (("pages", "SROIE CER-ci"), ("crops", "line-crop CER-ci")):
        r = acc[key]
        if "cer_batched" in r:
            rows.append((f"{label} batched vs unbatched", "no worse", f"{r['cer_batched']:.4f} vs {r['cer_unbatched']:.4f}",
                         r["cer_batched"] <= r["cer_unbatched"]))
        if "cer_baseline" in r:
            rows.append((f"{label} batched vs baseline", "no worse", f"{r['cer_batched']:.4f} vs {r['cer_baseline']:.4f}",
                         r["cer_batched"] <= r["cer_baseline"]))
    non_200 = sum(row["non_200"] for row in levels.values())
    rows.append(("non-200 answers, all levels", "0", str(non_200), non_200 == 0))
    elapsed = time.perf_counter() - began
    print(f"\nsummary: {prof['device']} ({env}), {args.processes} worker(s), batch_pages {args.batch_pages},"
          f" batch_wait_ms {args.batch_wait_ms:g}, precision {args.precision}, det_bucket {args.det_bucket},"
          f" cudnn {str(args.cudnn).lower()}; ran in {elapsed:.0f} s")
    print(f"  {'':38} {'goal':>10} {'measured':>20}  met")
    for name, goal, measured, met in rows:
        print(f"  {name:<38} {goal:>10} {measured:>20}  {'yes' if met else 'NO'}")
    if not cuda:
        print("  (a CPU run checks the script; the goals are for one GPU)")
    if args.json:
        strip = {k: v for k, v in batched.items() if k not in ("pages", "crops")}
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "environment": env,
                                         "stack": strip, "in_process": prof, "accuracy": acc,
                                         "seconds": elapsed}, indent=2, default=str))


if __name__ == "__main__":
    main()
