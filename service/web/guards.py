"""Request-level guards for the API's uploads: the body's shape and size, and the processing deadline.

`check_upload` is the API blueprint's before_request: it runs before a route reads the body, so a malformed request costs no decoding and its answer
says what to fix. Nginx enforces the same body limit first (client_max_body_size, rendered from
the same [limits] value); the app checks again for requests that reach uWSGI directly.

The deadline is cooperative. A worker's model runs on one thread (the request's, or the inference
thread of service/ocr/batching.py): a signal or a watchdog thread cannot stop a torch call safely
(the exception would land between arbitrary C++ ops, or not at all until the op returns, leaving
metrics locks and model state half-updated). So the route checks the deadline between stages
(before each image's decode, before and after the model call) and answers 504 JSON; the worker
lives on. A single stage that hangs is uWSGI's `harakiri` backstop, set above the deadline (with
request threads, the batching's own watchdog at the same limit): the worker is killed and
respawned, and Nginx answers JSON.

The deadline runs from the moment Nginx handed the request on (its PARSE_ARRIVED stamp), not from
the moment a worker took it: a client's deadline includes the time it waited in the listen queue.
A request that has already waited past it is answered 504 before the body is read or the model
is touched, so a backlog never costs model time for answers nobody will wait for.
"""

from __future__ import annotations

import logging
import time

from flask import g, request

from ..errors import ClientError
from . import metrics, state

log = logging.getLogger(__name__)


class Deadline:
    """The moment a request's processing must be over; `check` between stages turns lateness into 504.

    `waited` is how long the request had already waited when the worker took it (queue time).
    """

    def __init__(self, seconds: float, waited: float = 0.0):
        self.seconds = seconds
        self.expires = time.monotonic() + seconds - waited

    def remaining(self) -> float:
        return self.expires - time.monotonic()

    def check(self, stage: str) -> None:
        if time.monotonic() > self.expires:
            raise ClientError(
                504,
                "deadline_exceeded",
                f"processing passed the {self.seconds:g} s deadline at {stage}; "
                "send fewer or smaller images per request",
            )


# A queue time below this is a front host's clock ahead of this host's (Nginx stamps PARSE_ARRIVED
# with its own clock); one above the deadline times this factor is this host's clock ahead: no
# request waits that long, Nginx gives up first. Either way the deadline is wrong by the skew.
SKEW_AHEAD_S = -0.5
SKEW_IMPLAUSIBLE_FACTOR = 5
# One log line per worker per this many seconds at most, however many requests show the skew.
SKEW_LOG_EVERY_S = 60.0
_last_skew_log = [0.0]


def queue_seconds() -> float:
    """Seconds since Nginx stamped the request (PARSE_ARRIVED, Unix time); 0 without a stamp
    (a request that reached uWSGI directly) or with one from a clock that is ahead. A negative or
    implausible time means the front host's clock and this one disagree (NTP is a requirement,
    README): counted in parse_clock_skew_total and logged."""
    stamp = request.environ.get("PARSE_ARRIVED")
    try:
        waited = time.time() - float(stamp) if stamp else 0.0
    except ValueError:
        return 0.0
    limit = state.current().cfg.limits.deadline_seconds * SKEW_IMPLAUSIBLE_FACTOR
    if waited < SKEW_AHEAD_S or waited > limit:
        side = "front_ahead" if waited < 0 else "instance_ahead"
        metrics.CLOCK_SKEW.labels(side).inc()
        if time.monotonic() - _last_skew_log[0] > SKEW_LOG_EVERY_S:
            _last_skew_log[0] = time.monotonic()
            log.warning("clock skew: Nginx stamped this request %.2f s %s this host's clock (%s); deadlines "
                        "are off by as much: run NTP on every host", abs(waited),
                        "ahead of" if waited < 0 else "behind", side)
        return 0.0 if waited < 0 else waited
    return max(0.0, waited)


def deadline() -> Deadline:
    """This request's deadline (started by `check_upload` when the request arrived)."""
    return g.deadline


def check_upload() -> None:
    """Refuse an empty, oversized or boundary-less body before the route parses it; start the deadline.

    Every POST to the API carries an upload; its other methods read nothing and pass.
    """
    if request.method != "POST":
        return
    worker = state.current()
    limits = worker.cfg.limits
    metrics.IN_FLIGHT.labels(str(worker.instance.port)).inc()
    g.in_flight = str(worker.instance.port)
    waited = queue_seconds()
    metrics.QUEUE_SECONDS.observe(waited)
    g.deadline = Deadline(limits.deadline_seconds, waited)
    if waited > limits.deadline_seconds:
        raise ClientError(504, "deadline_exceeded",
                          f"the request waited {waited:.1f} s in the queue, past the {limits.deadline_seconds:g} s "
                          "deadline, so it was not processed; the service is overloaded: retry later")
    check_body(limits.max_body_bytes, "send fewer or smaller (recompressed) images")


def check_body(limit: int, past_limit: str) -> None:
    """Refuse an empty, chunked, oversized or boundary-less body before a route parses it: the
    checks of every upload, /v1/parse's and a job's, each with its own byte limit. `past_limit`
    says what to do about a body over it."""
    length = request.content_length
    if "chunked" in request.headers.get("Transfer-Encoding", "").lower():
        # Nginx de-chunks bodies and passes their length; uWSGI alone cannot read a chunked body.
        raise ClientError(411, "length_required", "send the body with a Content-Length header, not chunked")
    if not length:
        raise ClientError(
            400,
            "empty_body",
            "the request body is empty: send the image or PDF as a multipart/form-data field 'image' "
            "(curl -F image=@page.jpg), or as the raw body with Content-Type image/* or application/pdf",
        )
    if length > limit:
        raise ClientError(413, "body_too_large", f"the body is {length:,} bytes; the limit is {limit:,}: {past_limit}")
    if request.mimetype == "multipart/form-data" and not request.mimetype_params.get("boundary"):
        raise ClientError(
            400,
            "missing_boundary",
            "Content-Type multipart/form-data has no boundary parameter: let the HTTP client build the "
            "form and its header (curl -F image=@page.jpg) instead of setting Content-Type by hand",
        )


def leave(_exc: BaseException | None = None) -> None:
    """The API blueprint's teardown: the request no longer counts as in flight, however it ended."""
    port = g.pop("in_flight", None)
    if port is not None:
        metrics.IN_FLIGHT.labels(port).dec()
