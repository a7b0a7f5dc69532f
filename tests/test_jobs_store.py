"""The job store, the page plan and page counting, without a stack: claims, leases, resumption, expiry."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
from PIL import Image

from service.documents import count_pages
from service.errors import ClientError
from service.jobs.plan import plan
from service.jobs.store import Store
from service.settings import JobsSettings, Limits

pytestmark = pytest.mark.unit


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(JobsSettings(dir=tmp_path / "jobs", lease_seconds=30, ttl_seconds=100, dir_max_bytes=1000))


def tiff(pages: int) -> bytes:
    frames = [Image.new("RGB", (40, 20), (i * 40, 255, 255)) for i in range(pages)]
    buf = io.BytesIO()
    frames[0].save(buf, format="TIFF", save_all=True, append_images=frames[1:])
    return buf.getvalue()


def test_count_pages():
    assert count_pages(tiff(3), Limits()) == 3
    buf = io.BytesIO()
    Image.new("RGB", (10, 10)).save(buf, format="PNG")
    assert count_pages(buf.getvalue(), Limits()) == 1
    with pytest.raises(ClientError) as err:
        count_pages(b"not an image", Limits())
    assert err.value.status == 415
    with pytest.raises(ClientError) as err:
        count_pages(tiff(2)[:40], Limits())
    assert err.value.status == 400


def test_plan():
    assert plan([2, 1], None) == [(0, 1), (0, 2), (1, 1)]
    assert plan([3, 3], "2-3") == [(0, 2), (0, 3), (1, 2), (1, 3)]
    with pytest.raises(ClientError, match="file 2 has 2 pages"):
        plan([3, 2], "2-3")
    for bad in ("0", "3-1", "x", "1,,2"):
        with pytest.raises(ClientError):
            plan([3], bad)
    with pytest.raises(ClientError):
        plan([1], "5")


def test_pages_done_once_and_resumed_by_next_holder(store: Store):
    job = store.create("addr:x", "", [b"a", b"b"], [1, 1], [(0, 1), (1, 1)])
    assert store.claim("host:1").id == job.id
    assert store.claim("host:2") is None  # max_running = 1, held by a live lease
    first = store.pending(job.id)[0]
    assert store.page_done(job.id, "host:1", first.idx, b'{"images": [1]}')
    assert store.page_done(job.id, "host:1", first.idx, b'{"images": [1]}')  # a re-read page replaces, never adds
    assert store.get(job.id).pages_done == 1
    # The holder's lease runs out: another coordinator takes the job and reads only what is left.
    with store._tx() as db:
        db.execute("UPDATE jobs SET lease_until = 0")
    assert store.claim("host:2").id == job.id
    assert not store.page_done(job.id, "host:1", 1, b"{}")  # the old holder can no longer write
    assert [t.idx for t in store.pending(job.id)] == [1]
    assert store.page_done(job.id, "host:2", 1, b'{"images": [2]}')
    assert store.finish(job.id, "host:2", "done")
    assert [a["images"] for a in store.results(job.id)] == [[1], [2]]
    assert store.get(job.id).pages_done == 2


def test_dead_holder_on_this_host_is_taken_over_at_once(store: Store):
    job = store.create("addr:x", "", [b"a"], [1], [(0, 1)])
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    me = f"{os.uname().nodename}:{gone.pid}"
    assert store.claim(me).id == job.id
    assert store.claim("other:1").id == job.id  # the lease is long, but its holder's PID is gone


def test_cancel_expire_and_room(store: Store):
    a = store.create("addr:x", "", [b"x" * 400], [1], [(0, 1)])
    b = store.create("addr:x", "", [b"y" * 400], [1], [(0, 1)])
    assert store.waiting("addr:x") == 2
    assert not store.make_room(400)  # both unfinished: nothing may go
    store.cancel(a.id)
    assert store.get(a.id).status == "cancelled" and not store.folder(a.id).exists()
    assert store.make_room(400)
    assert store.claim("h:1").id == b.id
    assert store.finish(b.id, "h:1", "done")
    job = store.get(b.id)
    assert store.expire(now=job.finished + 50) == []  # within the TTL: kept
    assert b.id in store.expire(now=job.finished + 101)
    assert store.get(b.id) is None and not store.folder(b.id).exists()
    by_status, waiting = store.counts()
    assert by_status["done"] == 0 and waiting == 0
