"""What a new user meets first, on a real stack, as the README tells it.

API keys turned on in parse.toml and a key added with `service.keys` lock /v1/* from the next
request (the bound the README states), with no reload; turned off, the API is open again at once.
`make run` (service.deploy up) on a running stack applies edits by a rolling reload and exits 0,
and names the command for what a reload cannot apply. The command line writes the API's JSON for
the same file, key for key, and its other formats through the same renderer. A PDF's text layer
gives words with their boxes. PDF is named wherever the accepted types are.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.settings import ROOT
from service.ops import cli
from tests import pdfs
from tests.stack import Stack, http
from tests.support import png

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def stack(stack_factory) -> Stack:
    return stack_factory([{}], deadline_seconds=60)


@pytest.fixture(scope="module")
def page(render) -> bytes:
    return png(render(["Keys 42"], size=24, margin=12))


def command(stack: Stack, *args: str) -> subprocess.CompletedProcess:
    """A documented command, run as a user runs it, against this stack's settings file."""
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PARSE_CONFIG": str(stack.cfg.path)})


def parse(stack: Stack, page: bytes, key: str | None = None):
    return http(stack.url + "/v1/parse", page, "image/png", headers={"Authorization": f"Bearer {key}"} if key else {})


def test_keys_on_and_off_take_effect_at_the_next_request(stack: Stack, page: bytes):
    original = stack.cfg.path.read_text()
    assert parse(stack, page).status == 200
    refused = command(stack, "service.keys", "add", "--label", "alice")
    assert refused.returncode == 2 and 'keys_file = "run/api-keys"' in refused.stderr, refused.stderr
    keys_file = stack.cfg.path.parent / "api-keys"
    try:
        stack.cfg.path.write_text(original + f'\n[auth]\nkeys_file = "{keys_file}"\n')
        added = command(stack, "service.keys", "add", "--label", "alice")
        assert added.returncode == 0, added.stderr
        key = added.stdout.strip()
        # The very next request, without a reload: the bound the README states.
        reply = parse(stack, page)
        assert reply.status == 401 and reply.json()["error"]["code"] == "missing_api_key", reply.body
        assert parse(stack, page, "not-a-key").json()["error"]["code"] == "invalid_api_key"
        assert parse(stack, page, key).status == 200
    finally:
        stack.cfg.path.write_text(original)
    assert parse(stack, page).status == 200
    log = (stack.layout.logs / f"uwsgi-{stack.cfg.instances[0].port}.log").read_text()
    assert "[auth] now requires API keys" in log and "[auth] now lets requests in without keys" in log


def test_broken_edit_keeps_keys_on(stack: Stack, page: bytes):
    """An edit that does not load (a typo) never opens a locked API: the settings in force stay."""
    original = stack.cfg.path.read_text()
    keys_file = stack.cfg.path.parent / "api-keys"
    try:
        stack.cfg.path.write_text(original + f'\n[auth]\nkeys_file = "{keys_file}"\n')
        assert parse(stack, page).status == 401
        stack.cfg.path.write_text(original + "\n[auth\n")
        assert parse(stack, page).status == 401
    finally:
        stack.cfg.path.write_text(original)
    assert parse(stack, page).status == 200


def test_make_run_on_a_running_stack_reloads(stack: Stack, page: bytes):
    inst = stack.cfg.instances[0]
    before = stack.worker_pids(inst)
    done = command(stack, "service.deploy", "up", "--run-dir", str(stack.run))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "rolling reload" in done.stdout and f"instance {inst.port}: 1 worker(s) replaced" in done.stdout
    assert not set(stack.worker_pids(inst)) & set(before)
    assert parse(stack, page).status == 200


def test_make_run_names_what_needs_a_restart(stack: Stack, page: bytes):
    original = stack.cfg.path.read_text()
    try:
        stack.cfg.path.write_text(original.replace("processes = 1", "processes = 2"))
        done = command(stack, "service.deploy", "up", "--run-dir", str(stack.run))
        assert done.returncode == 0 and "make stop && make run" in done.stdout, done.stdout + done.stderr
        stack.cfg.path.write_text(original.replace(f"port = {stack.cfg.instances[0].port}", "port = 1"))
        done = command(stack, "service.deploy", "up", "--run-dir", str(stack.run))
        assert done.returncode == 0 and "`make stop && make run` starts what is declared" in done.stdout, done.stdout
    finally:
        stack.cfg.path.write_text(original)
    assert parse(stack, page).status == 200


@pytest.fixture(scope="module")
def files(tmp_path_factory, render) -> dict[str, Path]:
    """A scanned-looking image and a born-digital PDF, as a user's files."""
    folder = tmp_path_factory.mktemp("files")
    (folder / "receipt.png").write_bytes(png(render(["NO 10256", "TABLE 12", "Total 42.50"], size=24)))
    (folder / "contract.pdf").write_bytes(pdfs.born_digital_pdf([["Clause 1: terms apply", "Signed, 2024"],
                                                                 ["Page two text"]]))
    return folder


def api(stack: Stack, path: Path, query: str = "") -> bytes:
    kind = "application/pdf" if path.suffix == ".pdf" else "image/png"
    reply = http(stack.url + "/v1/parse" + query, path.read_bytes(), kind, timeout=120)
    assert reply.status == 200, reply.body
    return reply.body


def pdftotext(data: bytes) -> str:
    return subprocess.run(["pdftotext", "-", "-"], input=data, capture_output=True, check=True).stdout.decode()


def test_cli_writes_the_apis_json_and_formats(stack: Stack, files: Path, tmp_path: Path, capsys):
    out = tmp_path / "out"
    paths = [files / "receipt.png", files / "contract.pdf"]
    # The stack's worker computes with one thread: so does the command line, for the same floats.
    with pytest.raises(SystemExit) as done:
        cli.main([*map(str, paths), "--out", str(out), "--words", "--threads", "1"])
    assert done.value.code == 0
    for path in paths:
        ours = json.loads((out / f"{path.stem}.json").read_text())
        theirs = json.loads(api(stack, path, "?words=1"))
        assert set(theirs) - set(ours) == {"request_id"} and set(ours) <= set(theirs)
        assert ours["model"] == theirs["model"] and set(ours["timing_ms"]) == set(theirs["timing_ms"])
        assert ours["images"] == theirs["images"], path.name
    assert all(line["words"] for line in ours["images"][0]["lines"])  # the PDF's text layer has words
    # Without --out: each file's reading-order text, as format=text.
    capsys.readouterr()
    with pytest.raises(SystemExit):
        cli.main([str(paths[0]), "--threads", "1"])
    printed = capsys.readouterr().out
    assert printed.encode() == api(stack, paths[0], "?format=text")
    assert "NO 10256\nTABLE 12" in printed
    for fmt, ext in (("text", "txt"), ("hocr", "hocr.html"), ("alto", "alto.xml"), ("pdf", "pdf")):
        with pytest.raises(SystemExit):
            cli.main([str(paths[1]), "--out", str(out), "--format", fmt, "--threads", "1"])
        written = (out / f"contract.{ext}").read_bytes()
        if fmt == "pdf":
            assert written.startswith(b"%PDF") and "Clause 1: terms apply" in pdftotext(written)
        else:
            assert written == api(stack, paths[1], f"?format={fmt}"), fmt


def test_words_on_text_layer_pages(stack: Stack, files: Path):
    image = json.loads(api(stack, files / "contract.pdf", "?pages=2&words=1"))["images"][0]
    assert image["source"] == "text-layer" and image["page"] == 2
    (line,) = image["lines"]
    assert [w["text"] for w in line["words"]] == ["Page", "two", "text"]
    assert all(len(str(v).split(".")[-1]) <= 1 for w in line["words"] for p in w["quad"] for v in p)


def test_pdf_is_named_where_types_are_listed(stack: Stack):
    refused = http(stack.url + "/v1/parse", b"hello", "text/plain")
    assert refused.status == 415 and "application/pdf" in refused.json()["error"]["message"]
    empty = http(stack.url + "/v1/parse", b"", "application/pdf")
    assert empty.status == 400 and "PDF" in empty.json()["error"]["message"], empty.body
    spec = http(stack.url + "/openapi.json").json()
    assert "application/pdf" in spec["paths"]["/v1/parse"]["post"]["requestBody"]["content"]
    page = http(stack.url + "/").body.decode()
    assert "Drop images or PDFs here" in page and "PDF, JPEG, PNG" in page
