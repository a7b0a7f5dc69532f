"""The request guards (service/web/guards.py) through the Flask app in-process: body checks and the deadline.

The model is not loaded: a request the guards let through gets the route's 503 model_loading.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from service.errors import ClientError
from service.web.guards import Deadline
from service.settings import Limits
from tests.support import PASSED, make_client, parse

pytestmark = pytest.mark.unit


def test_empty_body(tmp_path: Path) -> None:
    response = parse(make_client(tmp_path, keys=False), data=b"", content_type="image/png")
    assert response.status_code == 400 and response.json["error"]["code"] == "empty_body"
    assert "image" in response.json["error"]["message"]


def test_body_over_limit(tmp_path: Path) -> None:
    client = make_client(tmp_path, keys=False, limits=Limits(max_body_bytes=1000))
    response = parse(client, data=b"x" * 1001)
    assert response.status_code == 413 and response.json["error"]["code"] == "body_too_large"
    assert "1,000" in response.json["error"]["message"]
    assert parse(client, data=b"x" * 1000).status_code == PASSED


def test_chunked_body_reaching_the_app_directly(tmp_path: Path) -> None:
    """Only a client talking to uWSGI directly gets here (Nginx de-chunks): 411, not an empty read."""
    response = parse(make_client(tmp_path, keys=False), headers={"Transfer-Encoding": "chunked"})
    assert response.status_code == 411 and response.json["error"]["code"] == "length_required"


def test_multipart_without_boundary(tmp_path: Path) -> None:
    response = parse(make_client(tmp_path, keys=False), data=b"--x\r\n\r\n", content_type="multipart/form-data")
    assert response.status_code == 400 and response.json["error"]["code"] == "missing_boundary"


def test_deadline() -> None:
    """Checks between stages: nothing happens before the deadline, a 504 JSON error after it."""
    on_time = Deadline(60.0)
    assert 59.0 < on_time.expires - time.monotonic() <= 60.0  # it counts from its creation
    on_time.check("decoding image 1")  # raises if the comparison were the wrong way round
    late = Deadline(0.001)
    time.sleep(0.002)
    with pytest.raises(ClientError) as info:
        late.check("the model call")
    assert info.value.status == 504 and info.value.code == "deadline_exceeded"
    assert "the model call" in info.value.message


def test_deadline_counts_queue_time() -> None:
    """A request that already waited 9 of its 10 s has 1 s left."""
    assert 0.9 < Deadline(10.0, waited=9.0).remaining() <= 1.0


def test_stale_request_is_504_before_the_route(tmp_path: Path) -> None:
    """Nginx's PARSE_ARRIVED stamp older than the deadline: 504, the route (its 503 model_loading) never runs."""
    client = make_client(tmp_path, keys=False, limits=Limits(deadline_seconds=5))

    def post(arrived: str):
        return client.post("/v1/parse", data=b"\x89PNG....", content_type="image/png",
                           environ_base={"REMOTE_ADDR": "127.0.0.1", "PARSE_ARRIVED": arrived})

    response = post(f"{time.time() - 6:.3f}")
    assert response.status_code == 504 and response.json["error"]["code"] == "deadline_exceeded"
    assert "queue" in response.json["error"]["message"]
    assert post(f"{time.time() - 1:.3f}").status_code == PASSED
    assert post("not-a-time").status_code == PASSED  # a malformed stamp counts as no wait
