"""Hand-computed checks of the PP-OCR post-processing: DB boxes, reading order, CTC text and score."""

from __future__ import annotations

import pytest

import numpy as np

from service.ocr import ctc
from service.ocr.ppocr import db, geometry, orient, recognize

pytestmark = pytest.mark.unit


def _map_with(rect: tuple[int, int, int, int], value: float, shape=(64, 128)) -> np.ndarray:
    prob = np.zeros(shape, np.float32)
    y0, y1, x0, x1 = rect
    prob[y0:y1, x0:x1] = value
    return prob


def test_db_box_of_one_rectangle():
    # Text pixels: rows 10-19, cols 20-59. The 2x2 dilation grows the mask to rows 10-20, cols 20-60,
    # so the contour's box is (20,10)-(60,20): short side 10, score 0.9 * 400/451 = 0.80 > 0.5.
    # Unclip distance = area * 1.6 / perimeter = 400 * 1.6 / 100 = 6.4: edges move to
    # x 13.6 / 66.4 and y 3.6 / 26.4, which Clipper rounds to 14 / 66 and 4 / 26.
    quads = db.detect_quads(_map_with((10, 20, 20, 60), 0.9), 128, 64)
    assert len(quads) == 1
    assert quads[0].tolist() == [[14, 4], [66, 4], [66, 26], [14, 26]]


def test_db_box_scaled_to_the_image():
    # Same map, image twice as large: corners double (x = round(x / 128 * 256)).
    quads = db.detect_quads(_map_with((10, 20, 20, 60), 0.9), 256, 128)
    assert quads[0].tolist() == [[28, 8], [132, 8], [132, 52], [28, 52]]


def test_db_drops_weak_and_tiny_regions():
    assert db.detect_quads(_map_with((10, 20, 20, 60), 0.45), 128, 64) == []  # above 0.3, score < 0.5
    # A 2x2 blob dilates to 3x3 pixels, whose contour box is 2 px wide: under the 3 px minimum.
    assert db.detect_quads(_map_with((10, 12, 20, 22), 0.9), 128, 64) == []


def _quad(x: float, y: float, w: float = 30, h: float = 10) -> np.ndarray:
    return np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], np.float32)


def test_reading_order_chains_lines_by_top_left_y():
    a, b, c, d = _quad(50, 100), _quad(10, 105), _quad(5, 130), _quad(90, 112)
    # y steps 100 -> 105 -> 112 are < 10: one line, read by x (b, a, d); 130 starts the next line.
    order = db.reading_order([a, b, c, d])
    assert [q[0].tolist() for q in order] == [[10, 105], [50, 100], [90, 112], [5, 130]]


def test_ctc_text_and_confidence():
    alphabet = ["blank", "a", "b", "c"]
    steps = [(1, 0.9), (1, 0.8), (0, 0.95), (1, 0.7), (3, 0.523456)]
    probs = np.zeros((1, len(steps), 4), np.float32)
    for t, (k, p) in enumerate(steps):
        probs[0, t] = (1 - p) / 3
        probs[0, t, k] = p
    decoded = ctc.greedy(probs)
    assert ctc.texts(decoded, alphabet) == ["aac"]  # the repeat collapses; the blank separates the two a's
    # kept: 0.9, 0.7, 0.52346 (rounded to 5 places) -> mean 2.12346 / 3 = 0.707820 -> 0.70782
    assert recognize.confidence(decoded.prob[0][decoded.keep[0]]) == 0.70782


def test_confidence_of_nothing_is_zero():
    assert recognize.confidence(np.array([], np.float32)) == 0.0


def test_big_pages_are_reduced_and_quads_mapped_back():
    # 3000 x 1500 (h x w): ratio 2000/3000 -> h int(2000) / 32 = 62.5 -> 62 (half to even) * 32 = 1984,
    # w int(1000) / 32 = 31.25 -> 31 * 32 = 992.
    img, frame = geometry.within_bounds(np.zeros((3000, 1500, 3), np.uint8))
    assert img.shape[:2] == (1984, 992)
    quad = np.array([[0, 0], [992, 0], [992, 1984], [0, 1984]], np.float32)
    assert geometry.to_original(quad, frame, 1500, 3000).tolist() == [[0, 0], [1500, 0], [1500, 3000], [0, 3000]]


def test_flat_images_get_black_bands():
    # 40 x 400: w/h = 10 > 8, so bands of int(|max(400 // 8, 30) * 2 - 40| / 2) = 30 px top and bottom.
    img, frame = geometry.within_bounds(np.full((40, 400, 3), 255, np.uint8))
    padded = geometry.letterbox(img, frame)
    assert padded.shape[:2] == (100, 400) and frame.top == 30
    assert padded[:30].max() == 0 and padded[70:].max() == 0
    quad = np.array([[10, 35], [50, 35], [50, 45], [10, 45]], np.float32)
    assert geometry.to_original(quad, frame, 400, 40).tolist() == [[10, 5], [50, 5], [50, 15], [10, 15]]


def test_det_input_short_side_736_in_multiples_of_32():
    assert geometry.det_size(1004, 439) == (1696, 736)  # sroie_001: 736/439 upscales, sides rounded to 32
    assert geometry.det_size(1528, 1080) == (1536, 1088)  # no scaling, only rounding
    assert geometry.det_size(2000, 30) == (4000, 64)  # a thin strip: enlargement stops at DET_MAX_SIDE


def test_det_input_of_the_parse_pipeline_enlarges_at_most_twice():
    assert geometry.det_size(1004, 439, max_upscale=2.0) == (1696, 736)  # receipts: as before
    assert geometry.det_size(40, 300, max_upscale=2.0) == (64, 608)  # one line: 2x (80 rounds to 64), not 18x
    assert geometry.det_size(3000, 2000, max_upscale=2.0) == (3008, 1984)  # only rounds to 32, never shrinks


def test_points_turn_with_the_image_and_back():
    img = np.zeros((30, 50), np.uint8)
    img[5, 40] = 1  # pixel at x=40, y=5
    pts = np.array([[40.5, 5.5]], np.float32)  # its centre
    for k in range(4):
        turned = np.rot90(img, k)
        (x, y), = orient.rotate_points(pts, k, 50, 30)
        assert turned[int(y), int(x)] == 1
        back = orient.unrotate_points(orient.rotate_points(pts, k, 50, 30), k, 50, 30)
        assert np.allclose(back, pts)


def test_sideways_from_box_shapes():
    lying = np.array([[0, 0], [100, 0], [100, 20], [0, 20]], np.float32)
    standing = np.array([[0, 0], [20, 0], [20, 100], [0, 100]], np.float32)
    square = np.array([[0, 0], [30, 0], [30, 30], [0, 30]], np.float32)
    assert not orient.sideways([lying, lying, standing])
    assert orient.sideways([standing, standing, lying, square, square])
    assert not orient.sideways([])


def test_upside_down_by_summed_votes():
    assert orient.upside_down(np.array([[0.05, 0.95], [0.6, 0.4], [0.55, 0.45]]))  # one sure vote outweighs two unsure
    assert not orient.upside_down(np.array([[0.9, 0.1], [0.3, 0.7]]))
    assert not orient.upside_down(np.zeros((0, 2)))


def test_corner_order_after_a_turn():
    quad = np.array([[10, 0], [20, 0], [20, 80], [10, 80]], np.float32)  # standing box, TL TR BR BL
    turned = orient.corner_order(orient.rotate_points(quad, 1, 100, 100))
    assert turned.tolist() == [[0, 80], [80, 80], [80, 90], [0, 90]]


def test_reading_order_levels_skewed_lines():
    """Two lines tilted 8 degrees, two boxes each: the tilt would split each line's boxes without levelling."""
    import math
    t = math.tan(math.radians(8))
    def box(x, y):
        return np.array([[x, y + x * t], [x + 100, y + (x + 100) * t], [x + 100, y + 20 + (x + 100) * t],
                         [x, y + 20 + x * t]], np.float32)
    a1, a2, b1, b2 = box(0, 0), box(300, 0), box(0, 30), box(300, 30)
    order = db.reading_order([b2, a2, b1, a1], skew=orient.skew([a1, a2, b1, b2]))
    assert [id(q) for q in order] == [id(a1), id(a2), id(b1), id(b2)]


def test_width_buckets_bound_padding_and_size():
    crops = [np.zeros((48, w, 3), np.uint8) for w in (100, 330, 2000, 340, 1000, 300, 161)]
    batches = recognize.width_buckets(crops, max_pixels=700)
    assert sorted(int(i) for _, idx in batches for i in idx) == list(range(len(crops)))
    for padded, idx in batches:
        for i in idx:
            width = max(recognize.GROUP_MIN_WIDTH, crops[i].shape[1])
            # Each crop's padding is its bucket's, whatever else is in the batch.
            assert padded == recognize.bucket_width(crops[i].shape[1])
            assert width <= padded <= recognize.GROUP_SPREAD * width + 16
        assert padded * len(idx) <= max(700, padded)
    assert recognize.bucket_width(1) == recognize.GROUP_MIN_WIDTH
    assert all(b % 16 == 0 for b in map(recognize.bucket_width, range(161, 5000, 37)))


def test_device_ctc_path_matches_numpy():
    import torch

    rng = np.random.default_rng(3)
    probs = rng.random((3, 7, 11)).astype(np.float32)
    probs[0, 2, [4, 9]] = 2.0  # a tie: the first class wins in both
    a, b = ctc.greedy(probs), ctc.greedy_tensor(torch.from_numpy(probs))
    assert (a.index == b.index).all() and (a.prob == b.prob).all() and (a.keep == b.keep).all()
    assert a.index[0, 2] == 4



@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
def test_ctc_argmax_on_bit_patterns_picks_the_float_argmax_ties_included(dtype):
    import torch

    probs = torch.softmax(torch.randn(4, 9, 300, generator=torch.Generator().manual_seed(5)) * 4, 2)
    probs = probs.to(getattr(torch, dtype))
    probs[1, 3, [7, 250]] = probs[1, 3].max() * 2  # a tie: the first class wins
    probs[2, 0] = 0  # an all-zero step: class 0
    assert torch.equal(ctc.argmax(probs), probs.float().argmax(dim=2))
    assert ctc.argmax(probs)[1, 3] == 7 and ctc.argmax(probs)[2, 0] == 0

def test_ctc_prior_lets_a_near_class_win_and_keeps_its_own_probability():
    import torch

    probs = np.zeros((1, 4, 5), np.float32)
    probs[0, :, 0] = [0.6, 0.5, 0.9, 0.1]  # blank
    probs[0, :, 4] = [0.3, 0.1, 0.05, 0.0]  # the boosted class
    probs[0, 3, 2] = 0.9
    plain = ctc.greedy_tensor(torch.from_numpy(probs))
    boosted = ctc.greedy_tensor(torch.from_numpy(probs), prior=(4, 4.0))
    assert plain.index.tolist() == [[0, 0, 0, 2]]
    # 0.3 * 4 > 0.6 wins; 0.1 * 4 < 0.5 and 0.05 * 4 < 0.9 do not; class 2 is untouched.
    assert boosted.index.tolist() == [[4, 0, 0, 2]]
    assert boosted.prob[0, 0] == np.float32(0.3) and boosted.prob[0, 1] == np.float32(0.5)


@pytest.mark.parametrize("flags, device, pipeline_name, expected", [
    ("fpu avx512f avx512_bf16 avx512_vnni", "cpu", "parse", "bf16"),
    ("fpu avx512f amx_bf16 amx_tile", "cpu", "parse", "bf16"),
    ("fpu avx2 avx512f avx512_vnni", "cpu", "parse", "fp32"),  # bf16 would be emulated: far slower
    ("fpu avx512f avx512_bf16", "cpu", "rapidocr", "fp32"),  # exact parity
    ("fpu avx512f avx512_bf16", "cuda", "parse", "fp32"),
    (None, "cpu", "parse", "fp32"),  # no /proc/cpuinfo to read
])
def test_auto_precision_is_bf16_only_where_the_cpu_computes_it(tmp_path, monkeypatch, flags, device,
                                                               pipeline_name, expected):
    import torch

    from service.ocr.ppocr import pipeline

    cpuinfo = tmp_path / "cpuinfo"
    if flags is not None:
        cpuinfo.write_text(f"processor\t: 0\nmodel name\t: test\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    monkeypatch.setattr(pipeline, "CPUINFO", cpuinfo)
    assert pipeline.auto_precision(torch.device(device), pipeline_name) == expected


def test_bf16_reads_the_page_turning_vote_in_fp32():
    from service.ocr.ppocr import pipeline

    assert pipeline.PRECISIONS["bf16"].cls is None  # the vote turns whole pages: kept exact
    assert pipeline.PRECISIONS["bf16"].det is not None and pipeline.PRECISIONS["bf16"].rec is not None


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_fused_stem_gives_the_bits_of_the_unfused_layers(precision):
    """conv_act's ReLU and the stem's one padded copy and separable max pool change no bit, so
    the rapidocr pipeline's parity and the bf16 default's readings stay as they were."""
    import torch
    import torch.nn.functional as F

    from service.ocr.ppocr.nets import Stem, conv_act

    torch.manual_seed(0)
    stem = Stem(8).eval()
    x = torch.randn(2, 3, 64, 96).contiguous(memory_format=torch.channels_last)
    stem = stem.to(memory_format=torch.channels_last)

    def unfused(x):
        x = F.relu(stem.stem1(x))
        branch = F.relu(stem.stem2b(F.pad(F.relu(stem.stem2a(F.pad(x, (0, 1, 0, 1)))), (0, 1, 0, 1))))
        p = F.pad(x, (0, 1, 0, 1))
        pooled = torch.maximum(torch.maximum(p[:, :, :-1, :-1], p[:, :, 1:, :-1]),
                               torch.maximum(p[:, :, :-1, 1:], p[:, :, 1:, 1:]))
        return F.relu(stem.stem4(F.relu(stem.stem3(torch.cat((pooled, branch), 1)))))

    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        assert torch.equal(stem(x), unfused(x))
        conv = stem.stem4
        y = torch.randn(2, 8, 16, 24).contiguous(memory_format=torch.channels_last)
        gelu = conv_act(conv, y, "gelu")
        assert gelu.dtype == (torch.bfloat16 if precision == "bf16" else torch.float32)
        assert torch.allclose(gelu.float(), F.gelu(conv(y)).float(), atol=1e-5 if precision == "fp32" else 0.05)


def test_streams_run_batches_at_one_thread_and_leave_the_workers_count():
    """Pool threads compute at one intra-op thread; the loading thread and threads started later
    keep the worker's count, which PyTorch hands to new threads from a process-wide value."""
    import threading

    import torch

    from service.ocr.ppocr import streams

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert streams.single_threaded_pool(1) is None
        pool = streams.single_threaded_pool(2)
        try:
            assert list(pool.map(lambda _: torch.get_num_threads(), range(4))) == [1] * 4
            assert torch.get_num_threads() == 2
            later: list[int] = []
            thread = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
            thread.start()
            thread.join()
            assert later == [2]
        finally:
            pool.shutdown()
    finally:
        torch.set_num_threads(before)


def test_read_on_streams_gives_the_readings_of_one_stream():
    """The recognizer's batches on a pool: each line reads as in one stream at one thread, bit
    for bit, and in input order."""
    import torch

    from service.ocr.ppocr import streams
    from service.ocr.ppocr.nets import RecNet

    torch.manual_seed(0)
    net = RecNet().eval()
    alphabet = ["blank", *(chr(0x4E00 + i) for i in range(net.head.out_features - 2)), " "]
    rng = np.random.default_rng(5)
    crops = [rng.integers(0, 255, (int(h), int(w), 3), np.uint8)
             for h, w in zip(rng.integers(20, 60, 14), rng.integers(30, 900, 14))]

    def run(batch: np.ndarray) -> ctc.Greedy:
        with torch.inference_mode():
            return ctc.greedy_tensor(net(torch.from_numpy(batch)))

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    pool = streams.single_threaded_pool(2)
    try:
        torch.set_num_threads(1)  # fp32 sums may round otherwise at two threads (1e-9)
        one = recognize.read(crops, run, alphabet, grouped=True, max_pixels=700)
        torch.set_num_threads(2)
        both = recognize.read(crops, run, alphabet, grouped=True, max_pixels=700, pool=pool)
        assert len(recognize.width_buckets(crops, 700)) > 2
        assert [(r.text, r.confidence) for r in both] == [(r.text, r.confidence) for r in one]
        def places(readings: list[recognize.Reading]) -> list[list[tuple]]:
            return [[(c.text, c.u0, c.u1, c.probs.tolist()) for c in r.chars] for r in readings]

        assert places(both) == places(one)

        def mean_per_row(batch: np.ndarray) -> np.ndarray:
            return np.repeat(batch.mean((1, 2, 3))[:, None], 2, 1)

        assert np.array_equal(recognize.cls_probs(crops, mean_per_row, pool), recognize.cls_probs(crops, mean_per_row))
    finally:
        pool.shutdown()
        torch.set_num_threads(before)
