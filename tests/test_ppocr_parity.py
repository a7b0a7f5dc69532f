"""PP-OCR's pipeline = "rapidocr" against RapidOCR 3.10.0's own outputs on a few dev images (skipped
without the dev set)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from service import settings as settings_mod
from service.documents.images import decode
from service.settings import Limits
from service.ocr.model import load_model
from tests.devset import REFERENCE

pytestmark = pytest.mark.model


PAGES = ["sroie_001"]  # a small receipt: det input 736x1696, 48 lines
CROPS = ["sroieline_098_0", "sroieline_102_1", "recword_1058892"]


@pytest.fixture(scope="module")
def ppocr():
    cfg = settings_mod.load()
    return load_model(dataclasses.replace(cfg.model, family="ppocr", precision="fp32", pipeline="rapidocr"), "cpu", threads=1)


def _ref(stem: str) -> list[dict]:
    return json.loads((REFERENCE["ppocr"] / f"{stem}.json").read_text())["lines"]


def _image(dev_dir, stem: str):
    path = next(p for p in (dev_dir / f"{stem}.jpg", dev_dir / f"{stem}.png") if p.exists())
    return decode(path.read_bytes(), Limits())


@pytest.mark.parametrize("stem", PAGES)
def test_page_matches_rapidocr(ppocr, dev_dir, stem):
    ref = _ref(stem)
    ours = [line.to_json() for line in ppocr.parse([_image(dev_dir, stem)])[0].lines]
    assert [l["text"] for l in ours] == [l["text"] for l in ref]
    for o, r in zip(ours, ref):
        assert o["quad"] == r["quad"], o["text"]
        assert abs(o["confidence"] - r["confidence"]) <= 2e-5, o["text"]


def test_crops_match_rapidocr(ppocr, dev_dir):
    stems = [s for s in CROPS if (REFERENCE["ppocr"] / f"{s}.json").exists()]
    assert stems, "none of the chosen crops is in the reference"
    pages = ppocr.recognize([_image(dev_dir, s) for s in stems])
    for stem, page in zip(stems, pages):
        (ref,) = _ref(stem)
        assert page.lines[0].text == ref["text"], stem
        assert abs(page.lines[0].confidence - ref["confidence"]) <= 2e-5, stem
