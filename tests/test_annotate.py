"""Results as files (service/web/annotate.py): ids, the PNG with its boxes, expiry and the size cap."""

from __future__ import annotations

import pytest

import os
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from service.web import annotate
from service.settings import ResultsSettings

pytestmark = pytest.mark.unit


QUAD = [[10.0, 10.0], [90.0, 10.0], [90.0, 40.0], [10.0, 40.0]]


def _results(tmp_path: Path, ttl: int = 3600, max_bytes: int = 10_000_000) -> ResultsSettings:
    return ResultsSettings(dir=tmp_path / "results", ttl_seconds=ttl, max_bytes=max_bytes)


def _file(folder: Path, name: str, size: int, age: float) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(b"x" * size)
    t = time.time() - age
    os.utime(path, (t, t))
    return path


def test_ids_are_url_safe_and_unguessable():
    ids = {annotate.new_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(annotate.ID_PATTERN.match(i) for i in ids)
    # 128 random bits: every one of the 64 URL-safe characters turns up across 2000 ids.
    assert len(set("".join(ids))) == 64


def test_png_is_written_with_the_boxes(tmp_path):
    results = _results(tmp_path)
    white = np.full((60, 120, 3), 255, np.uint8)
    url = annotate.annotate(white, [QUAD], results)
    assert url is not None and url.startswith("/results/") and url.endswith(".png")
    assert annotate.ID_PATTERN.match(url.removeprefix("/results/").removesuffix(".png"))
    path = results.dir / url.removeprefix("/results/")
    # Readable beyond its owner as far as the umask allows (the unit's UMask keeps it to the group).
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644 & ~umask
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size == (120, 60)
        px = np.asarray(img.convert("RGB")).astype(int)
    outline = annotate.COLORS[0]
    # The quad's edge is drawn in the first colour, its inside is tinted, outside stays white.
    assert np.abs(px[10, 50] - outline).max() < 10
    assert (px[25, 50] < 255).any() and (px[25, 50] > 200).all()
    assert (px[55, 110] == 255).all()
    # Nothing is left behind but the result itself.
    assert [p.name for p in results.dir.iterdir()] == [path.name]


def test_expired_files_are_deleted_on_write(tmp_path):
    results = _results(tmp_path, ttl=600)
    old = _file(results.dir, "old.png", 100, age=601)
    stale_tmp = _file(results.dir, annotate.TMP_PREFIX + "crashed", 100, age=900)
    fresh = _file(results.dir, "fresh.png", 100, age=599)
    url = annotate.write_png(b"png", results)
    assert not old.exists() and not stale_tmp.exists()
    assert fresh.exists() and (results.dir / url.removeprefix("/results/")).exists()


def test_oldest_files_go_first_to_stay_under_the_cap(tmp_path):
    results = _results(tmp_path, max_bytes=1000)
    oldest = _file(results.dir, "a.png", 400, age=30)
    middle = _file(results.dir, "b.png", 400, age=20)
    newest = _file(results.dir, "c.png", 100, age=10)
    url = annotate.write_png(b"n" * 300, results)
    # 400 + 400 + 100 + 300 > 1000: only the oldest has to go.
    assert not oldest.exists()
    assert middle.exists() and newest.exists()
    assert sum(p.stat().st_size for p in results.dir.iterdir()) <= 1000
    assert (results.dir / url.removeprefix("/results/")).read_bytes() == b"n" * 300


def test_a_result_bigger_than_the_cap_is_not_kept(tmp_path):
    results = _results(tmp_path, max_bytes=100)
    keep = _file(results.dir, "keep.png", 50, age=1)
    assert annotate.write_png(b"z" * 101, results) is None
    assert [p.name for p in results.dir.iterdir()] == [keep.name]


def test_sweep_tolerates_a_missing_folder_and_files_deleted_meanwhile(tmp_path):
    assert annotate.sweep(tmp_path / "absent", 60, 100) == 0
    folder = tmp_path / "r"
    _file(folder, "a.png", 10, age=0)
    (folder / "sub").mkdir()
    assert annotate.sweep(folder, 60, 100) == 10
    assert (folder / "sub").is_dir()


def test_many_writes_keep_the_folder_under_the_cap(tmp_path):
    results = _results(tmp_path, max_bytes=250)
    urls = []
    for i in range(3):
        urls.append(annotate.write_png(bytes([i]) * 100, results))
        time.sleep(0.02)  # file times tick per jiffy: keep the three writes apart in age
    names = sorted(p.name for p in results.dir.iterdir())
    # Each write makes room for itself: the two newest of three 100-byte files fit in 250.
    assert names == sorted(u.removeprefix("/results/") for u in urls[-2:])


def test_background_sweeper_expires_files_without_writes(tmp_path):
    results = _results(tmp_path, ttl=60)
    old = _file(results.dir, "old.png", 10, age=61)
    fresh = _file(results.dir, "fresh.png", 10, age=1)
    stop = threading.Event()
    thread = annotate.start_sweeper(results, interval=0.05, stop=stop)
    try:
        deadline = time.monotonic() + 5
        while old.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not old.exists() and fresh.exists()
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive()


def test_sweep_interval_follows_the_ttl():
    assert annotate.sweep_interval(3600) == 60
    assert annotate.sweep_interval(120) == 12
    assert annotate.sweep_interval(10) == 5
