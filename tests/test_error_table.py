"""The README's error table lists every code the service can answer, at its status, and no other:
the codes in the app's code (every ClientError and error_response), the ones Werkzeug's own errors
get through the app's handler, and the ones Nginx answers itself (conf/nginx/parse.conf)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from service.settings import ROOT
from tests.support import make_client

pytestmark = pytest.mark.unit

CALLS = ("ClientError", "error_response")


def app_codes() -> dict[str, set[int]]:
    """code -> statuses, from every call whose status and code are written out."""
    codes: dict[str, set[int]] = {}
    for path in (ROOT / "service").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or getattr(node.func, "id", getattr(node.func, "attr", None)) not in CALLS:
                continue
            status, code = (node.args + [None, None])[:2]
            if isinstance(code, ast.Constant) and isinstance(status, ast.Constant):
                codes.setdefault(code.value, set()).add(status.value)
    return codes


def nginx_codes() -> dict[str, set[int]]:
    text = (ROOT / "conf" / "nginx" / "parse.conf").read_text()
    codes: dict[str, set[int]] = {}
    for status, code in re.findall(r"return (\d{3}) '\{\"error\":\{\"code\":\"([a-z_]+)\"", text):
        codes.setdefault(code, set()).add(int(status))
    return codes


def werkzeug_codes(tmp_path: Path) -> dict[str, set[int]]:
    """What the app's handler names Werkzeug's errors that a client can reach (a path or a method
    no route has), asked of the app itself."""
    client = make_client(tmp_path, keys=False)
    codes: dict[str, set[int]] = {}
    for reply in (client.get("/v1/parse"), client.get("/v1/no-such-route")):
        codes.setdefault(reply.get_json()["error"]["code"], set()).add(reply.status_code)
    return codes


def readme_table() -> dict[str, set[int]]:
    """code -> the statuses of its row, from README.md's table under the API section."""
    text = (ROOT / "README.md").read_text()
    table = text[text.index("| status | code | when |"):]
    table = table[:table.index("\n\n")]
    codes: dict[str, set[int]] = {}
    for row in table.splitlines()[2:]:
        status, code, _ = row.strip("|").split("|", 2)
        for name in re.findall(r"`([a-z_]+)`", code):
            codes.setdefault(name, set()).update(int(s) for s in re.findall(r"\d{3}", status))
    return codes


def test_the_table_lists_every_code_at_its_status(tmp_path: Path):
    served: dict[str, set[int]] = {}
    for source in (app_codes(), nginx_codes(), werkzeug_codes(tmp_path)):
        for code, statuses in source.items():
            served.setdefault(code, set()).update(statuses)
    table = readme_table()
    assert {"pdf_encrypted", "too_many_jobs", "job_not_done", "job_not_found", "not_found"} <= set(served)
    assert sorted(set(served) - set(table)) == [], "served but not in the README's table"
    assert sorted(set(table) - set(served)) == [], "in the README's table but never served"
    wrong = {code: (sorted(statuses), sorted(table[code])) for code, statuses in served.items()
             if not statuses <= table[code]}
    assert wrong == {}, "code: (statuses served, statuses in its README row)"
