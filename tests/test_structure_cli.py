"""The CLI's structure flags on the report page (tests/structure_page.py) as a born-digital PDF:
--structure adds the API's regions and tables to <stem>.json, --format markdown writes <stem>.md."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.ops import cli
from tests import structure_page as report

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def pdf(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "report.pdf"
    path.write_bytes(report.pdf())
    return path


def run(*argv: str) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main([*argv, "--threads", "2", "--dpi", str(report.DPI)])
    assert done.value.code == 0


def test_structure_json_and_markdown(pdf: Path, tmp_path: Path) -> None:
    run(str(pdf), "--out", str(tmp_path / "json"), "--structure")
    record = json.loads((tmp_path / "json" / "report.json").read_text())
    (page,) = record["images"]  # the API's answer for the file, one entry per page
    types = [r["type"] for r in page["regions"]]
    assert types.count("table") == 1 and "figure" in types and "caption" in types, types
    assert 'colspan="2"' in page["tables"][0]["html"]
    run(str(pdf), "--out", str(tmp_path / "md"), "--format", "markdown")
    md = (tmp_path / "md" / "report.md").read_text()
    assert f"# {report.TITLE}\n" in md and report.paragraph_text(1) in md and "<table>" in md
    assert not (tmp_path / "md" / "report.json").exists()


def test_text_formats_print_without_out(pdf: Path, tmp_path: Path, capsys) -> None:
    """Without --out a text format is printed, the same bytes --out writes; only pdf needs --out."""
    capsys.readouterr()
    run(str(pdf), "--format", "markdown")
    printed = capsys.readouterr().out
    run(str(pdf), "--out", str(tmp_path), "--format", "markdown")
    assert printed.encode() == (tmp_path / "report.md").read_bytes()
    assert f"# {report.TITLE}\n" in printed
    with pytest.raises(SystemExit) as refused:
        cli.main([str(pdf), "--format", "pdf"])
    assert refused.value.code == 2 and "--out" in capsys.readouterr().err
