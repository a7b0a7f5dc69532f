"""Prometheus metrics, summed over every worker of every instance of one host.

Each uWSGI worker is its own process, so prometheus_client runs in multiprocess mode: every worker
writes its values into files in one folder, $PROMETHEUS_MULTIPROC_DIR, shared by all instances of
the host (uWSGI's ini points every instance at the same folder), and GET /metrics, answered by
whichever worker Nginx picks, merges the files of all of them. In a fleet each host has its own
folder: /metrics/hosts/NAME on the front Nginx is host NAME's (service/ops/fleet.py), and the job
gauges, read from the shared store, are the fleet's and the same on every host. The variable must be set before
prometheus_client is imported, which is why the uWSGI ini sets it, not this module.

Folder lifecycle: `make run` empties it before the first instance starts; under systemd it is
/run/parse/metrics, kept across instance restarts and emptied by reboot. Counters of workers that
exited stay in it, so the sums never go backwards; live gauges (worker readiness) of a dead worker
are removed by `sweep_dead()`, which runs at every scrape and readiness check so that a worker
killed with SIGKILL stops counting as ready.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
from pathlib import Path

from flask import Blueprint, Response
from prometheus_client.core import GaugeMetricFamily
from prometheus_client import (CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest,
                               multiprocess)

from ..jobs.metrics import JobsCollector
from ..store.db import Unavailable
from . import state

bp = Blueprint("metrics", __name__)
log = logging.getLogger(__name__)


# Per-stage seconds: from a few ms (decode of a small PNG) up to the request deadline.
STAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

REQUESTS = Counter("parse_requests_total", "HTTP requests answered, by route and status", ["route", "status"])
STAGE_SECONDS = Histogram("parse_stage_seconds", "Seconds per request spent in each pipeline stage",
                          ["stage"], buckets=STAGE_BUCKETS)
IMAGES = Counter("parse_images_total", "Images parsed")
LINES = Counter("parse_lines_total", "Text lines found")
MODEL_LOAD_SECONDS = Histogram("parse_model_load_seconds", "Seconds a worker took to load and warm its model",
                               buckets=(1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0))
# From a few ms on an idle stack up to past the deadline (stale requests, answered 504).
QUEUE_BUCKETS = (0.001, 0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 60.0, 120.0)
QUEUE_SECONDS = Histogram("parse_queue_seconds", "Seconds a request waited between Nginx and a worker "
                          "(listen queue, and a retry's first attempt)", buckets=QUEUE_BUCKETS)
# Per page read by the model with batching across requests on: how many pages its model call read.
BATCH_PAGES = Histogram("parse_batch_pages", "Pages read in the same model call as each page (batching across requests)",
                        buckets=(1, 2, 4, 8, 16, 32, 64, 128))
# livesum: uploads a worker of the instance is handling now (waiting for its model included).
IN_FLIGHT = Gauge("parse_requests_in_flight", "API uploads being handled by the instance's workers", ["instance"],
                  multiprocess_mode="livesum")
# livesum: the number of ready workers right now, per instance; a dead worker's file is removed.
WORKER_READY = Gauge("parse_worker_ready", "Workers whose model is loaded and warmed", ["instance"],
                     multiprocess_mode="livesum")

# Requests whose Nginx stamp disagrees with this host's clock (service/web/guards.py: queue_seconds).
CLOCK_SKEW = Counter("parse_clock_skew_total", "Requests whose queue time was negative or implausible: the "
                     "front host's clock and this one's disagree (run NTP)", ["side"])

# liveall: one value per worker (a pid label), each worker's own, gone when the worker is.
HEAP_BYTES = Gauge("parse_worker_heap_bytes", "Bytes in live malloc blocks after the worker's last page; resident "
                   "memory above it is freed memory kept for the next page, growth of this is a leak",
                   multiprocess_mode="liveall")

_LIVE_FILE = re.compile(r"^gauge_live\w*_(\d+)\.db$")


def multiproc_dir() -> Path | None:
    value = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return Path(value) if value else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_dead() -> None:
    """Drop the live gauges of workers that are gone (SIGKILL, harakiri, OOM) so they stop counting."""
    folder = multiproc_dir()
    if folder is None:
        return
    for name in os.listdir(folder):
        match = _LIVE_FILE.match(name)
        if match and not _alive(int(match.group(1))):
            multiprocess.mark_process_dead(int(match.group(1)), str(folder))


def mark_exit() -> None:
    """Called as this worker exits: its live gauges go at once."""
    if multiproc_dir() is not None:
        multiprocess.mark_process_dead(os.getpid())


def ready_workers(instance: str) -> int | None:
    """Ready workers of one instance, read from the shared folder; None outside multiprocess mode."""
    folder = multiproc_dir()
    if folder is None:
        return None
    sweep_dead()
    files = [str(p) for p in folder.glob("gauge_livesum_*.db")]
    for metric in multiprocess.MultiProcessCollector.merge(files, accumulate=False):
        if metric.name == WORKER_READY._name:
            return int(sum(s.value for s in metric.samples if s.labels.get("instance") == instance))
    return 0


class ListenQueueCollector:
    """parse_requests_waiting{instance}: connections in each instance's listen queue, not yet taken
    by a worker. Only the kernel knows them; uWSGI's stats server reports the count (TCP_INFO)."""

    def __init__(self, instances: list[tuple[str, str]]):
        self.instances = instances  # (instance label, stats address)

    def collect(self):
        family = GaugeMetricFamily("parse_requests_waiting",
                                   "Connections waiting in the instance's listen queue for a worker", labels=["instance"])
        for label, address in self.instances:
            host, port = address.rsplit(":", 1)
            try:
                with socket.create_connection((host, int(port)), timeout=1) as sock:
                    stats = json.loads(b"".join(iter(lambda: sock.recv(65536), b"")))
            except (OSError, ValueError):
                continue  # an instance that is down has no queue to report
            family.add_metric([label], sum(s.get("queue", 0) for s in stats.get("sockets", [])))
        yield family


def registry(instances: list[tuple[str, str]] = ()) -> CollectorRegistry:
    """Every worker's values merged in multiprocess mode, with the listen queues of `instances`;
    this process's own registry otherwise (tests)."""
    if multiproc_dir() is None:
        return REGISTRY
    reg = CollectorRegistry()
    multiprocess.MultiProcessCollector(reg)
    if instances:
        reg.register(ListenQueueCollector(list(instances)))
    return reg


@bp.get("/metrics")
def metrics() -> Response:
    sweep_dead()
    worker = state.current()
    # This host's instances only: another host's instance on the same port is not on this loopback.
    instances = [(str(i.port), i.stats_address) for i in worker.cfg.instances if i.host == worker.instance.host]
    body = generate_latest(registry(instances))
    # Job states come from the job store at each scrape (service/jobs/metrics.py), not from files;
    # while the store is unreachable the scrape still has every worker's own metrics.
    try:
        jobs = CollectorRegistry()
        jobs.register(JobsCollector(worker.jobs))
        body += generate_latest(jobs)
    except Unavailable as err:
        log.warning("job gauges left out of this scrape: %s", err)
    return Response(body, content_type=CONTENT_TYPE_LATEST)
