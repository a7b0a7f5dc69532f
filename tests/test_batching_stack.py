"""Batching across requests on the real stack: one instance whose worker runs 4 request threads
and one inference thread (batch_pages = 4), behind Nginx. Concurrent clients each get the reading
of their own page, and the pages met in shared model calls."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.ops import deploy
from tests.stack import Stack, http
from tests.support import png

pytestmark = pytest.mark.stack

BATCH = 4


@pytest.fixture(scope="module")
def stack(stack_factory) -> Stack:
    return stack_factory([{"processes": 1, "batch_pages": BATCH, "batch_wait_ms": 300}])


def test_threads_and_admission_follow_batch_pages(stack: Stack):
    inst = stack.cfg.instances[0]
    stats = stack.stats(inst)
    assert len(stats["workers"][0]["cores"]) == BATCH  # uWSGI's request threads
    models = http(stack.url + "/v1/models").json()
    assert models["instance"]["batch_pages"] == BATCH
    # Each thread is a request in flight: Nginx admits them all beside the listen queue.
    assert deploy.max_conns(stack.cfg, inst) == BATCH + deploy.listen_queue(stack.cfg, inst)


def test_concurrent_requests_each_get_their_own_page(stack: Stack, render):
    texts = [f"Order {n:03d} paid" for n in range(12)]
    bodies = [png(render([t, f"Table {n}"])) for n, t in enumerate(texts)]
    with ThreadPoolExecutor(len(bodies)) as pool:
        replies = list(pool.map(stack.parse, bodies))
    for text, n, reply in zip(texts, range(len(texts)), replies):
        assert reply.status == 200, reply.body[:300]
        got = [line["text"] for line in reply.json()["images"][0]["lines"]]
        assert got == [text, f"Table {n}"]
        assert reply.json()["timing_ms"]["batch_wait"] >= 0
    metrics = http(stack.url + "/metrics").body.decode()
    family = next(f for f in text_string_to_metric_families(metrics) if f.name == "parse_batch_pages")
    samples = {s.name: s.value for s in family.samples if s.labels.get("le") in (None, "1.0")}
    assert samples["parse_batch_pages_count"] >= len(bodies)
    # Some pages shared a model call (le=1 counts the pages read alone).
    assert samples["parse_batch_pages_bucket"] < samples["parse_batch_pages_count"]
