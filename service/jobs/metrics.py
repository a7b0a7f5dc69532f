"""Job metrics: durations and pages counted where they happen (the mules), states read at scrape.

The counts by status and the pages waiting are the store's own numbers, read when /metrics is
scraped, so every instance reports the same fleet-wide truth and nothing can drift; durations and
pages read are observed by the coordinator that ran them, in prometheus multiprocess files like
every worker's metrics (service/web/metrics.py).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .store import Store

# From a one-page job on a GPU to hundreds of CPU pages.
JOB_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0)

JOB_SECONDS = Histogram("parse_job_seconds", "Seconds from a job's submission to its end, by final status",
                        ["status"], buckets=JOB_BUCKETS)
FINISHED = Counter("parse_jobs_finished_total", "Jobs that ended, by final status", ["status"])
PAGES = Counter("parse_job_pages_total", "Job pages read and kept")


class JobsCollector(Collector):
    def __init__(self, store: Store):
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        by_status, waiting = self.store.counts()
        jobs = GaugeMetricFamily("parse_jobs", "Jobs in the store, by status", labels=["status"])
        for status, n in by_status.items():
            jobs.add_metric([status], n)
        yield jobs
        yield GaugeMetricFamily("parse_job_pages_waiting", "Pages of queued and running jobs not read yet",
                                value=waiting)
