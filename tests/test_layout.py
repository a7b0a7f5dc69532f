"""Reading order from quads alone (service/layout): rows of a receipt, columns of a page, blocks."""

from __future__ import annotations

import pytest

from service.layout import arrange

pytestmark = pytest.mark.unit


def box(x0: float, y0: float, x1: float, y1: float) -> list[list[float]]:
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def test_receipt_row_parts_join_on_one_line_left_to_right():
    # Found price first, as a detector may: the row still reads label, quantity, price.
    quads = [box(300, 102, 360, 122), box(20, 100, 140, 120), box(200, 101, 230, 121),
             box(20, 130, 150, 150), box(300, 131, 360, 151), box(200, 130, 230, 150)]
    texts = ["2.20", "Kopi (B)", "1x", "Teh tarik", "1.80", "1x"]
    layout = arrange(quads)
    assert layout.text(texts) == "Kopi (B) 1x 2.20\nTeh tarik 1x 1.80"
    assert layout.block_lines() == [[1, 2, 0, 3, 5, 4]]


def test_two_prose_columns_read_one_after_the_other():
    left = [box(50, 100 + 30 * i, 450, 120 + 30 * i) for i in range(5)]
    right = [box(500, 100 + 30 * i, 900, 120 + 30 * i) for i in range(5)]  # same baselines, narrow gutter
    texts = [f"L{i}" for i in range(5)] + [f"R{i}" for i in range(5)]
    # Interleaved as a row-by-row detector would find them.
    quads = [q for pair in zip(left, right) for q in pair]
    texts = [t for pair in zip(texts[:5], texts[5:]) for t in pair]
    assert arrange(quads).text(texts) == "L0\nL1\nL2\nL3\nL4\n\nR0\nR1\nR2\nR3\nR4"


def test_a_wide_vertical_gap_starts_a_block():
    quads = [box(10, 10, 200, 30), box(10, 35, 180, 55), box(10, 150, 200, 170)]
    layout = arrange(quads)
    assert layout.blocks == [[[0], [1]], [[2]]]
    assert layout.text(["Title", "Subtitle", "Body"]) == "Title\nSubtitle\n\nBody"


def test_a_tilted_photo_keeps_rows_together():
    # Rotated 4 degrees: the price's centre is lower than its label's by more than half a line.
    import math

    def turned(x0, y0, x1, y1, deg=4.0):
        t = math.radians(deg)
        return [[x * math.cos(t) - y * math.sin(t), x * math.sin(t) + y * math.cos(t)] for x, y in box(x0, y0, x1, y1)]

    quads = [turned(20, 100, 140, 120), turned(400, 100, 460, 120), turned(20, 130, 140, 150), turned(400, 130, 460, 150)]
    assert arrange(quads).text(["Kopi", "2.20", "Teh", "1.80"]) == "Kopi 2.20\nTeh 1.80"


def test_empty_page():
    assert arrange([]).text([]) == "" and arrange([]).blocks == []
