"""Keys in the store (service/web/keysets.py, service/ops/keys.py) and the clock-skew signal, without a stack."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

from service import settings as settings_mod
from service.ops import keys as keys_cli
from service.settings import AuthSettings, JobsSettings, StoreSettings
from service.store.db import Sqlite, Unavailable
from service.web import keysets, metrics
from service.web.app import create_app
from tests.support import parse

pytestmark = pytest.mark.unit


def test_store_keys_revocation_bound_new_keys_and_outage(tmp_path: Path, monkeypatch) -> None:
    db = Sqlite(tmp_path / "store.sqlite3")
    admin = keys_cli.StoreKeys(db)
    alice = admin.add("alice")
    reachable = [True]

    def open_db() -> Sqlite:
        if not reachable[0]:
            raise Unavailable("the store is away")
        return db

    monkeypatch.setattr(keysets, "MISS_REFRESH_S", 0.2)
    ring = keysets.StoreKeys(open_db, refresh_seconds=0.5)
    assert ring.accepts(alice) and not ring.accepts("mistyped")
    time.sleep(0.25)
    bob = admin.add("bob")
    assert ring.accepts(bob)  # a key it did not know: read again at once
    assert admin.revoke("alice") and ring.accepts(alice)  # still within the bound ...
    time.sleep(0.6)
    assert not ring.accepts(alice)  # ... refused after [store] refresh_seconds
    reachable[0] = False
    time.sleep(0.6)
    assert ring.accepts(bob)  # the store away: the set read last still holds
    assert ring.internal(internal_key_of(db)) and not ring.internal(bob)


def internal_key_of(db: Sqlite) -> str:
    from service.jobs import internal_key

    return internal_key.read_or_create(db)


def test_keys_command_on_the_store(tmp_path: Path, monkeypatch, capsys) -> None:
    cfg = tmp_path / "parse.toml"
    cfg.write_text(f'[auth]\nkeys_in_store = true\n\n[jobs]\ndir = "{tmp_path / "jobs"}"\n')
    monkeypatch.setenv("PARSE_CONFIG", str(cfg))
    assert keys_cli.main(["add", "--label", "carol"]) == 0
    key = capsys.readouterr().out.strip()
    assert keys_cli.main(["list"]) == 0 and "carol" in capsys.readouterr().out
    store = keys_cli.StoreKeys(Sqlite(tmp_path / "jobs" / "jobs.sqlite3"))
    assert list(store.read().values()) == ["carol"] and key not in str(store.read())  # digests only
    assert keys_cli.main(["revoke", "carol"]) == 0 and store.read() == {}


def test_app_takes_keys_from_the_store(tmp_path: Path) -> None:
    cfg = dataclasses.replace(settings_mod.load(), auth=AuthSettings(keys_in_store=True),
                              jobs=JobsSettings(dir=tmp_path / "jobs"), store=StoreSettings(refresh_seconds=60))
    key = keys_cli.StoreKeys(Sqlite(cfg.jobs.db)).add("dave")
    client = create_app(cfg, load=False).test_client()
    assert parse(client, key=key).status_code == 503  # past auth: the route's model_loading
    assert parse(client, key="not-a-key").status_code == 401
    assert parse(client).status_code == 401


def test_clock_skew_is_counted(tmp_path: Path) -> None:
    cfg = dataclasses.replace(settings_mod.load(), auth=AuthSettings(), jobs=JobsSettings(dir=tmp_path / "jobs"))
    client = create_app(cfg, load=False).test_client()

    def skewed() -> float:
        return metrics.CLOCK_SKEW.labels("front_ahead")._value.get()

    before = skewed()
    ahead = f"{time.time() + 30:.3f}"  # the front host's clock 30 s ahead of this one
    response = client.post("/v1/parse", data=b"\x89PNG....", content_type="image/png",
                           environ_base={"REMOTE_ADDR": "127.0.0.1", "PARSE_ARRIVED": ahead})
    assert response.status_code == 503  # served, with a queue time of 0, not refused
    assert skewed() == before + 1
