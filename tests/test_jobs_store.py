"""The job store, the page plan and page counting, without a stack: claims, leases, resumption, expiry.

The store's tests run on both engines: SQLite, and a PostgreSQL server this module starts
(tests/pg.py; skipped, saying why, where its binaries are missing)."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import threading

import pytest
from PIL import Image

from service.documents import count_pages
from service.errors import ClientError
from service.jobs import internal_key
from service.jobs.plan import plan
from service.jobs.store import Store
from service.settings import JobsSettings, Limits
from service.store.db import Postgres, Sqlite, Unavailable
from tests import pg

pytestmark = pytest.mark.unit
JOBS = dict(lease_seconds=30, ttl_seconds=100, dir_max_bytes=1000, workers=1, max_running=1)


@pytest.fixture(scope="module")
def cluster():
    why = pg.usable()
    if why:
        pytest.skip(why)
    server = pg.Cluster(port=pg.free_port()).init()
    try:
        server.start()
        server.create_database()
        yield server
    finally:
        server.remove()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.stack)])
def db(request, tmp_path):
    if request.param == "sqlite":
        return Sqlite(tmp_path / "jobs" / "jobs.sqlite3")
    server = request.getfixturevalue("cluster")
    database = Postgres(server.url, server.password_file, 5)
    with database.tx() as tx:  # every test starts from an empty schema
        tx.run("DROP SCHEMA public CASCADE")
        tx.run("CREATE SCHEMA public")
    return database


@pytest.fixture
def store(db, tmp_path) -> Store:
    return Store(JobsSettings(dir=tmp_path / "jobs", **JOBS), db)


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
    first = store.claim("host:1")
    assert (first.job_id, first.idx) == (job.id, 0) and store.get(job.id).status == "running"
    assert store.claim("host:2") is None  # workers = 1: one page of the job in flight, fleet-wide
    assert store.page_done(first, "host:1", b'{"images": [1]}') is None
    assert store.page_done(first, "host:2", b'{"images": [9]}') is None  # a page read twice is kept once
    assert store.get(job.id).pages_done == 1
    second = store.claim("host:1")
    # The holder's lease runs out (its host is gone): another coordinator reads the page again.
    with store.db.tx() as tx:
        tx.run("UPDATE job_page SET lease_until = 0")
    again = store.claim("host:2")
    assert (again.job_id, again.idx) == (job.id, 1)
    finished = store.page_done(again, "host:2", b'{"images": [2]}')
    assert finished is not None and finished.status == "done" and finished.pages_done == 2
    assert store.page_done(second, "host:1", b'{"images": [3]}') is None  # the slow reader is too late
    assert [a["images"] for a in store.results(job.id)] == [[1], [2]]


def test_max_running_and_workers_hold_over_every_coordinator(store: Store):
    a = store.create("addr:x", "", [b"a"], [2], [(0, 1), (0, 2)])
    b = store.create("addr:y", "", [b"b"], [1], [(0, 1)])
    assert store.claim("h1:1").job_id == a.id
    assert store.claim("h2:1") is None  # a has its one page in flight; b waits: max_running = 1
    assert store.get(b.id).status == "queued"


def test_concurrent_claims_take_each_page_once(db, tmp_path):
    """Eight coordinators claim at once, three pages of each job in flight, two jobs at once."""
    store = Store(JobsSettings(dir=tmp_path / "jobs", **{**JOBS, "workers": 3, "max_running": 2}), db)
    jobs = [store.create("addr:x", "", [b"a"], [10], [(0, p) for p in range(1, 11)]) for _ in range(3)]
    claimed: list = []
    barrier = threading.Barrier(8)

    def coordinator(n: int) -> None:
        barrier.wait()
        for _ in range(3):
            task = store.claim(f"h:{n}")
            if task is not None:
                claimed.append(task)

    threads = [threading.Thread(target=coordinator, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    keys = [(t.job_id, t.idx) for t in claimed]
    assert len(keys) == len(set(keys)) == 6  # 2 jobs x 3 pages, never one page twice
    assert {t.job_id for t in claimed} == {jobs[0].id, jobs[1].id}


def test_dead_holder_on_this_host_is_released_at_once(store: Store):
    store.create("addr:x", "", [b"a"], [1], [(0, 1)])
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    me = f"{os.uname().nodename}:{gone.pid}"
    assert store.claim(me) is not None
    assert store.claim("other:1") is None  # the lease is long ...
    assert store.release_dead() == 1  # ... but its holder's PID is gone on this host
    assert store.claim("other:1") is not None


def test_cancel_fail_expire_and_room(store: Store):
    a = store.create("addr:x", "", [b"x" * 400], [1], [(0, 1)])
    b = store.create("addr:x", "", [b"y" * 400], [1], [(0, 1)])
    assert store.waiting("addr:x") == 2
    assert not store.make_room(400)  # both unfinished: nothing may go
    task = store.claim("h:1")
    store.cancel(a.id)
    assert store.get(a.id).status == "cancelled" and store.get(a.id).bytes == 0
    with pytest.raises(KeyError):
        store.upload(a.id, 0)
    assert not store.is_running(a.id) and store.page_done(task, "h:1", b"{}") is None
    assert store.make_room(400)
    task = store.claim("h:1")
    assert task.job_id == b.id and store.upload(b.id, 0) == b"y" * 400
    job = store.fail(b.id, {"code": "x", "message": "refused"})
    assert job.status == "failed" and job.error["code"] == "x"
    assert store.expire(now=job.finished + 50) == []  # within the TTL: kept
    assert b.id in store.expire(now=job.finished + 101)
    assert store.get(b.id) is None
    by_status, waiting = store.counts()
    assert by_status["failed"] == 0 and waiting == 0


def test_internal_key_is_one_for_the_store(db):
    Store(JobsSettings(**JOBS), db)
    assert internal_key.read_or_create(db) == internal_key.read_or_create(db)


def test_an_unreachable_store_is_unavailable_not_an_error(tmp_path):
    nobody = Postgres("postgresql://parse@127.0.0.1:1/parse", None, 2)
    with pytest.raises(Unavailable):
        with nobody.tx() as tx:
            tx.one("SELECT 1")


def test_a_job_says_when_it_started_and_the_next_starts_after_it_ends(store: Store):
    """max_running = 1: the second job is let in by the first's end, and its stamps say so."""
    a = store.create("addr:x", "", [b"a"], [1], [(0, 1)])
    b = store.create("addr:y", "", [b"b"], [1], [(0, 1)])
    assert store.get(a.id).to_json()["started"] is None
    first = store.claim("h1:1")
    store.page_done(first, "h1:1", b'{"images": [1]}')
    second = store.claim("h2:1")
    store.page_done(second, "h2:1", b'{"images": [2]}')
    done = [store.get(j.id).to_json() for j in (a, b)]
    stamp = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
    assert all(stamp.match(d[k]) for d in done for k in ("created", "started", "finished")), done
    assert done[0]["started"] <= done[0]["finished"] <= done[1]["started"] <= done[1]["finished"]
