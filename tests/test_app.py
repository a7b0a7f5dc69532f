"""The Flask app in-process (test client): routes, readiness, errors, OpenAPI. No uWSGI, no Nginx."""

from __future__ import annotations

import dataclasses
import io
import logging
import re

import pytest
from PIL import Image

from service import settings as settings_mod
from service.web import metrics
from service.web.app import create_app
from service.web.state import WorkerState
from tests.formats_check import check_alto, check_hocr, check_pdf, check_words
from tests.stack import default_family
from tests.support import loaded_app, multipart, sha256sums

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def cfg():
    base = settings_mod.load(settings_mod.DEFAULT_CONFIG)
    return dataclasses.replace(base, model=dataclasses.replace(base.model, family=default_family()))


@pytest.fixture(scope="module")
def ready_app(cfg):
    return loaded_app(cfg)


@pytest.fixture(scope="module")
def client(ready_app):
    return ready_app.test_client()


@pytest.fixture(scope="module")
def page(render) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(render(["Hello world", "Paid 12.00"])).save(buf, format="PNG")
    return buf.getvalue()


def test_parse_gives_memory_back_past_the_allowance(ready_app, client, page, caplog, monkeypatch):
    """After the model call the route hands freed memory back once the worker holds more than
    [limits] worker_memory_mib (here 0), so uWSGI's reload-on-rss sees only live memory."""
    worker = ready_app.extensions[WorkerState.KEY]
    monkeypatch.setattr(worker, "cfg", dataclasses.replace(worker.cfg, limits=dataclasses.replace(worker.cfg.limits, worker_memory_mib=0)))
    with caplog.at_level(logging.INFO, logger="service.ocr.allocator"):
        r = client.post("/v1/parse", data=page, content_type="image/png")
    assert r.status_code == 200, r.get_json()
    assert any("given back" in m for m in caplog.messages), caplog.messages


def test_not_ready_answers_503_json(cfg):
    client = create_app(cfg, load=False).test_client()
    assert client.get("/healthz").status_code == 200
    for r in (client.get("/readyz"), client.post("/v1/parse", data=b"x", content_type="image/png"),
              client.get("/v1/models")):
        assert r.status_code == 503
        assert r.get_json() == {"error": {"code": "model_loading", "message": "the model is still loading; retry shortly"}}
        assert int(r.headers["Retry-After"]) > 0


def test_failed_load_says_why(cfg):
    app = create_app(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, family="nosuch")), load=False)
    app.extensions[WorkerState.KEY].load()
    r = app.test_client().get("/readyz")
    assert r.status_code == 503
    assert r.get_json()["error"]["code"] == "model_load_failed" and "nosuch" in r.get_json()["error"]["message"]


def test_ready(client):
    r = client.get("/readyz")
    assert r.status_code == 200 and r.get_json()["instance"]["workers_ready"] == 1


def test_parse_multipart_raw_and_file_field(client, page):
    for kwargs in ({"data": {"image": (io.BytesIO(page), "a.png")}, "content_type": "multipart/form-data"},
                   {"data": {"file": (io.BytesIO(page), "a.png")}, "content_type": "multipart/form-data"},
                   {"data": page, "content_type": "image/png"}):
        r = client.post("/v1/parse", **kwargs)
        assert r.status_code == 200, r.get_json()
        body = r.get_json()
        assert list(body) == ["request_id", "model", "images", "timing_ms"]
        [image] = body["images"]
        assert (image["width"], image["height"]) == Image.open(io.BytesIO(page)).size
        assert image["angle"] == 0  # an upright page is read as it came
        assert "hello" in image["text"].lower() and "12.00" in image["text"]
        assert sorted(i for block in image["blocks"] for i in block) == list(range(len(image["lines"])))
        assert image["text"].split() == [w for block in image["blocks"] for i in block
                                         for w in image["lines"][i]["text"].split()]
        assert all("words" not in line for line in image["lines"])  # only with ?words=1


def test_several_images_keep_their_order(client, page, render):
    buf = io.BytesIO()
    Image.fromarray(render(["Second"])).save(buf, format="PNG")
    body, ctype = multipart([("image", "a.png", page, "image/png"), ("image", "b.png", buf.getvalue(), "image/png")])
    images = client.post("/v1/parse", data=body, content_type=ctype).get_json()["images"]
    assert len(images) == 2 and "hello" in images[0]["text"].lower() and "second" in images[1]["text"].lower()


def test_line_mode_reads_each_image_whole(client, render):
    buf = io.BytesIO()
    Image.fromarray(render(["Total 42.50"], margin=6)).save(buf, format="PNG")
    r = client.post("/v1/parse?mode=line", data=buf.getvalue(), content_type="image/png")
    assert r.status_code == 200, r.get_json()
    [image] = r.get_json()["images"]
    w, h = image["width"], image["height"]
    assert [(line["text"], line["quad"]) for line in image["lines"]] == [("Total 42.50", [[0, 0], [w, 0], [w, h], [0, h]])]
    assert r.get_json()["timing_ms"]["detect"] == 0


def test_request_id_from_nginx_is_used(client, page):
    r = client.post("/v1/parse", data=page, content_type="image/png", headers={"X-Request-ID": "abc123"})
    assert r.get_json()["request_id"] == "abc123" and r.headers["X-Request-ID"] == "abc123"


def test_client_errors(client, page, cfg):
    too_many = multipart([("image", "a.png", page, "image/png")] * (cfg.limits.max_images + 1))
    cases = [
        (client.post("/v1/parse", data=b"x", content_type="text/plain"), 415, "unsupported_media_type"),
        (client.post("/v1/parse", data={"other": (io.BytesIO(page), "a.png")}, content_type="multipart/form-data"),
         400, "missing_image"),
        (client.post("/v1/parse", data={"image": (io.BytesIO(b""), "a.png")}, content_type="multipart/form-data"),
         400, "empty_image"),
        (client.post("/v1/parse", data=too_many[0], content_type=too_many[1]), 413, "too_many_images"),
        (client.post("/v1/parse?mode=lines", data=page, content_type="image/png"), 400, "invalid_mode"),
        (client.post("/v1/parse?format=docx", data=page, content_type="image/png"), 400, "invalid_format"),
        (client.post("/v1/parse?words=true", data=page, content_type="image/png"), 400, "invalid_words"),
        (client.post("/v1/parse?annotate=yes", data=page, content_type="image/png"), 400, "invalid_annotate"),
        (client.post("/v1/parse?structure=2", data=page, content_type="image/png"), 400, "invalid_structure"),
        (client.get("/v1/parse"), 405, "method_not_allowed"),
        (client.get("/nowhere"), 404, "not_found"),
    ]
    for r, status, code in cases:
        assert (r.status_code, r.get_json()["error"]["code"]) == (status, code)


def test_models(client, cfg):
    body = client.get("/v1/models").get_json()
    assert body["family"] == cfg.model.family and body["device"] == "cpu"
    assert body["instance"]["port"] == cfg.instances[0].port
    assert len(body["model"]["weights_sha256"]) >= 2  # at least a detector and a recognizer
    assert body["model"]["weights_sha256"].items() <= sha256sums().items()  # the pinned files, as loaded


def test_metrics_count_requests_and_stages(client, page):
    def sample(name, labels=None):
        return metrics.registry().get_sample_value(name, labels) or 0.0

    before = (sample("parse_requests_total", {"route": "/v1/parse", "status": "200"}),
              sample("parse_stage_seconds_count", {"stage": "detect"}), sample("parse_images_total"))
    client.post("/v1/parse", data=page, content_type="image/png")
    after = (sample("parse_requests_total", {"route": "/v1/parse", "status": "200"}),
             sample("parse_stage_seconds_count", {"stage": "detect"}), sample("parse_images_total"))
    assert [b - a for a, b in zip(before, after)] == [1, 1, 1]
    text = client.get("/metrics").get_data(as_text=True)
    assert "parse_worker_ready" in text and "parse_model_load_seconds" in text


def test_openapi_matches_the_routes(client, ready_app):
    doc = client.get("/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    routes = {(re.sub(r"<(\w+)>", r"{\1}", rule.rule), method.lower()) for rule in ready_app.url_map.iter_rules()
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert routes == documented
    for path, ops in doc["paths"].items():
        for op in ops.values():
            for status, response in op["responses"].items():
                if not status.startswith("2"):  # every error is the one Error schema
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, (path, status)
    # Every /v1/ route takes the key and the rate limit; the job's result takes /v1/parse's output
    # parameters; /v1/parse lists the statuses Nginx answers for it itself.
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if path.startswith("/v1/"):
                assert {"401", "429"} <= set(op["responses"]), (path, method)
    result = doc["paths"]["/v1/jobs/{job_id}/result"]["get"]
    assert {"format", "words"} <= {p["name"] for p in result["parameters"]}
    assert {"application/json", "application/pdf", "text/plain"} <= set(result["responses"]["200"]["content"])
    assert {"405", "408", "413", "414", "421", "431"} <= set(doc["paths"]["/v1/parse"]["post"]["responses"])


def test_words_and_every_format_from_the_model(client, page, render, tmp_path):
    """?words=1 gives each line's words; each format carries them, one document for two images."""
    buf = io.BytesIO()
    Image.fromarray(render(["Second page"])).save(buf, format="PNG")
    body, ctype = multipart([("image", "a.png", page, "image/png"), ("image", "b.png", buf.getvalue(), "image/png")])
    r = client.post("/v1/parse?words=1", data=body, content_type=ctype)
    assert r.status_code == 200, r.get_json()
    images = r.get_json()["images"]
    check_words(images)
    documents = {}
    for fmt in ("text", "hocr", "alto", "pdf"):
        r = client.post(f"/v1/parse?format={fmt}", data=body, content_type=ctype)
        assert r.status_code == 200, r.data[:300]
        assert "attachment" in r.headers["Content-Disposition"]
        documents[fmt] = r.data
    assert documents["text"].decode().split("\f")[0].split() == images[0]["text"].split()
    check_hocr(documents["hocr"], images)
    check_alto(documents["alto"], images)
    check_pdf(documents["pdf"], images, tmp_path)
