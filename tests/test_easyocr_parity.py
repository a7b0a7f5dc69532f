"""A few dev images against the original EasyOCR's outputs (tests/devset.py: REFERENCE).

Full fp32: every line's text identical, quads within 1 px, confidences within 1e-3. The receipt
page is given the grey the reference used (the JPEG's luma, cv2.imread grayscale); the PNGs are
grey-exact through the plain RGB path.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import pytest

from service import settings as settings_mod
from service.documents.images import decode
from service.settings import Limits
from service.ocr.model import OcrModel, load_model
from tests.devset import REFERENCE, compare

pytestmark = pytest.mark.model


PAGES = ["tess_phototest.png", "sroie_001.jpg"]
CROPS = ["sroieline_180_0.png", "sroieline_577_1.png"]


@pytest.fixture(scope="module")
def reference(dev_dir) -> Path:
    ref = REFERENCE["easyocr"]
    if not ref.is_dir():
        pytest.skip(f"the EasyOCR reference outputs are absent: {ref}")
    return ref


@pytest.fixture(scope="module")
def easyocr() -> OcrModel:
    cfg = settings_mod.load()
    return load_model(dataclasses.replace(cfg.model, family="easyocr", precision="fp32"), "cpu", threads=2)


def _check(lines: list, ref_path: Path) -> None:
    ref = json.loads(ref_path.read_text())["lines"]
    got = [line.to_json() for line in lines]
    same, quad_diff, conf_diff = compare(got, ref)
    assert (same, len(got)) == (len(ref), len(ref)), [(g["text"], r["text"]) for g, r in zip(got, ref)]
    assert quad_diff <= 1.0 and conf_diff <= 1e-3


@pytest.mark.parametrize("name", PAGES)
def test_page_matches_reference(easyocr, dev_dir, reference, name):
    path = dev_dir / name
    grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    [page] = easyocr.parse([decode(path.read_bytes(), Limits())], greys=[grey])
    _check(page.lines, reference / f"{path.stem}.json")


def test_crops_match_reference(easyocr, dev_dir, reference):
    pages = easyocr.recognize([decode((dev_dir / name).read_bytes(), Limits()) for name in CROPS])
    for name, page in zip(CROPS, pages):
        _check(page.lines, reference / f"{Path(name).stem}.json")


def test_rgb_path_finds_the_same_boxes(easyocr, dev_dir, reference):
    """Without the luma, texts may differ on a few lines, but the detector sees the same RGB."""
    [page] = easyocr.parse([decode((dev_dir / "sroie_001.jpg").read_bytes(), Limits())])
    ref = json.loads((reference / "sroie_001.json").read_text())["lines"]
    assert [line.quad for line in page.lines] == [line["quad"] for line in ref]
