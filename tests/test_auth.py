"""API keys and the /metrics allow-list, through the Flask app in-process.

The model is not loaded (load=False): these checks run before any route, so a request they let
through reaches the route and gets its 503 model_loading, which is how a test tells "passed".
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from service.apikeys import digest, read_keys
from service.web.auth import KeyFile
from service.ops.keys import add, main, revoke
from tests.support import PASSED, make_client, parse

pytestmark = pytest.mark.unit


def test_keys_off_leaves_parse_open(tmp_path: Path) -> None:
    assert parse(make_client(tmp_path, keys=False)).status_code == PASSED


def test_key_required_and_checked(tmp_path: Path) -> None:
    key = add(tmp_path / "keys", "alice")
    client = make_client(tmp_path)
    missing = parse(client)
    assert missing.status_code == 401 and missing.json["error"]["code"] == "missing_api_key"
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = parse(client, key + "x")
    assert wrong.status_code == 401 and wrong.json["error"]["code"] == "invalid_api_key"
    assert 'error="invalid_token"' in wrong.headers["WWW-Authenticate"]
    basic = client.post("/v1/parse", headers={"Authorization": "Basic " + key}, data=b"x", content_type="image/png")
    assert basic.status_code == 401
    assert parse(client, key).status_code == PASSED
    assert client.get("/v1/models").status_code == 401  # every /v1/ route needs the key
    for open_path in ("/healthz", "/readyz"):
        assert client.get(open_path).status_code in (200, 503)  # answered, never 401


def test_add_and_revoke_without_restart(tmp_path: Path) -> None:
    client = make_client(tmp_path)
    assert parse(client, "anything").status_code == 401  # file absent: fail closed
    key = add(tmp_path / "keys", "bob")
    assert parse(client, key).status_code == PASSED
    other = add(tmp_path / "keys", "carol")
    assert parse(client, other).status_code == PASSED
    assert revoke(tmp_path / "keys", "bob") == [digest(key)]
    assert parse(client, key).status_code == 401
    assert parse(client, other).status_code == PASSED
    assert revoke(tmp_path / "keys", digest(other)[:12]) == [digest(other)]
    assert parse(client, other).status_code == 401


def test_keys_file_stores_digests_only(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    key = add(path, "dave")
    text = path.read_text()
    assert key not in text and digest(key) in text
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    path.write_text(text + "not-a-digest label\n# comment\n\n")
    assert read_keys(path) == {digest(key): "dave"}


def test_reload_follows_mtime(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(digest("one") + "\n")
    keys = KeyFile(path)
    assert keys.accepts("one") and not keys.accepts("two")
    path.write_text(digest("two") + "\n")  # same size, in place: the mtime tells
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert keys.accepts("two") and not keys.accepts("one")


def test_keys_cli(tmp_path: Path, monkeypatch, capsys) -> None:
    cfg = tmp_path / "parse.toml"
    cfg.write_text(f'[auth]\nkeys_file = "{tmp_path / "k"}"\n')
    monkeypatch.setenv("PARSE_CONFIG", str(cfg))
    assert main(["add", "--label", "erin"]) == 0
    key = capsys.readouterr().out.strip()
    assert main(["list"]) == 0
    assert f"{digest(key)[:16]}  erin" in capsys.readouterr().out
    assert main(["revoke", "erin"]) == 0
    assert main(["revoke", "erin"]) == 1
    cfg.write_text("[auth]\n")
    assert main(["list"]) == 2


@pytest.mark.parametrize(
    "address,allowed", [("127.0.0.1", True), ("127.8.9.1", True), ("::1", True), ("10.1.2.3", True),
                        ("192.168.1.5", False), ("2001:db8::1", False)]
)
def test_metrics_allow_list(tmp_path: Path, address: str, allowed: bool) -> None:
    client = make_client(tmp_path, keys=False, allow=("10.0.0.0/8",))
    response = client.get("/metrics", environ_base={"REMOTE_ADDR": address})
    if allowed:
        assert response.status_code != 403
    else:
        assert response.status_code == 403 and response.json["error"]["code"] == "forbidden"


def test_bad_metrics_network_fails_at_start(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        make_client(tmp_path, keys=False, allow=("10.0.0.0/33",))


def test_auth_follows_the_settings_file(tmp_path: Path) -> None:
    """[auth] applies from the next request when the settings file changes; an edit that does not
    load, or a file caught half-written (no [[instances]] yet), keeps the settings in force."""
    from service import settings as settings_mod
    from service.web.app import create_app

    path = tmp_path / "parse.toml"
    instances = "[[instances]]\nport = 6001\n"
    path.write_text(instances)
    client = create_app(settings_mod.load(path), load=False).test_client()
    assert parse(client).status_code == PASSED
    key = add(tmp_path / "keys", "frank")
    path.write_text(f'[auth]\nkeys_file = "{tmp_path / "keys"}"\n' + instances)
    assert parse(client).json["error"]["code"] == "missing_api_key"
    assert parse(client, key).status_code == PASSED
    for broken in ("[auth\n", "", '[auth]\nmetrics_allow = ["10.0.0.0/33"]\n' + instances):
        path.write_text(broken)
        assert parse(client).status_code == 401, broken
    path.write_text(instances)
    assert parse(client).status_code == PASSED


def test_a_keys_file_it_cannot_read_refuses_every_key(tmp_path: Path) -> None:
    """Keys on and the file not readable (here a folder): 401 for every key, never a 500."""
    client = make_client(tmp_path, keys=True)
    (tmp_path / "keys").mkdir()
    reply = parse(client, "any-key")
    assert reply.status_code == 401 and reply.json["error"]["code"] == "invalid_api_key"


def test_rewriting_the_keys_file_keeps_its_group_and_mode(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    add(path, "one")
    assert path.stat().st_mode & 0o777 == 0o600  # a new file: its owner's only
    os.chmod(path, 0o640)
    if os.geteuid() == 0:
        os.chown(path, -1, 1)
    add(path, "two")
    revoke(path, "one")
    assert path.stat().st_mode & 0o777 == 0o640
    if os.geteuid() == 0:
        assert path.stat().st_gid == 1
