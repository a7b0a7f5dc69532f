"""Rules and leaders are not text (service/ocr/rules.py): what a rule is read as, dropped; what
only looks like one, kept."""

from __future__ import annotations

import pytest

from service.ocr import rules
from service.ocr.types import Line, Word

pytestmark = pytest.mark.unit


def line(text: str, width: float = 200, height: float = 20, words: list[Word] | None = None) -> Line:
    return Line(text, 0.9, [[10, 10], [10 + width, 10], [10 + width, 10 + height], [10, 10 + height]], words or [])


LATIN = [line("ACME STORES SDN BHD"), line("TOTAL 12.50"), line("Thank you, come again")]


@pytest.mark.parametrize("text", ["------------", "*********", "= = = = =", ". . . . . . . .", "_____", "━━━━"])
def test_dashed_dotted_and_solid_rules_are_dropped(text):
    assert [l.text for l in rules.drop([*LATIN, line(text)])] == [l.text for l in LATIN]


@pytest.mark.parametrize("text", ["一", "*一", "*一 一米", "ー ー", "一一一"])
def test_rule_glyphs_read_as_cjk_are_dropped_on_a_latin_page(text):
    assert [l.text for l in rules.drop([*LATIN, line(text, width=60)])] == [l.text for l in LATIN]


def test_a_long_thin_box_of_one_dash_is_a_rule_a_short_one_is_not():
    assert rules.drop([*LATIN, line("-", width=300, height=12)]) == LATIN
    assert [l.text for l in rules.drop([*LATIN, line("-", width=12, height=12)])][-1] == "-"


@pytest.mark.parametrize("text", ["***", ":", "...", "-", "12.50", "A-B", "Total ........ 12.50", "---- END ----"])
def test_what_only_looks_like_a_rule_stays(text):
    assert rules.drop([*LATIN, line(text, width=40)])[-1].text == text


def test_a_stray_glyph_leaves_its_line_and_its_word():
    quad = [[0, 0], [1, 0], [1, 1], [0, 1]]
    words = [Word("TOTAL", 0.9, quad), Word("一", 0.5, quad), Word("12.50", 0.9, quad)]
    (*_, kept) = rules.drop([*LATIN, line("TOTAL 一 12.50", words=words)])
    assert kept.text == "TOTAL 12.50" and [w.text for w in kept.words] == ["TOTAL", "12.50"]


def test_on_a_chinese_page_one_is_a_word():
    page = [line("发票代码 一二三"), line("合计 一百元"), line("一"), line("------------")]
    assert [l.text for l in rules.drop(page)] == ["发票代码 一二三", "合计 一百元", "一"]


@pytest.mark.model
def test_the_parse_pipeline_leaves_a_receipts_rules_out(load_family, render, monkeypatch):
    """A rendered receipt with rules between its lines: the rules are read as rule characters (so
    without the filter they would be lines), and the parse pipeline drops them."""
    model = load_family("ppocr", 2)
    page = render(["ACME STORES SDN BHD", "*" * 30, "TOTAL 12.50", "=" * 30, "Thank you"], size=24)
    read = [line.text for line in model.parse([page])[0].lines]
    assert read == ["ACME STORES SDN BHD", "TOTAL 12.50", "Thank you"], read
    monkeypatch.setattr(rules, "drop", lambda lines: lines)
    unfiltered = [line.text for line in model.parse([page])[0].lines]
    assert any(set(text) <= rules.RULE for text in unfiltered), unfiltered
