"""The jobs API: POST /v1/jobs, GET /v1/jobs/<id>, GET /v1/jobs/<id>/result, DELETE /v1/jobs/<id>.

A job takes the body and query of /v1/parse, with larger limits of its own ([jobs] in
conf/parse.toml). Submitting only counts the pages (headers, no pixels) and stores the upload;
the uWSGI mules read it page by page (service/jobs/coordinator.py). With API keys on, a job is
visible only to the key that made it: to any other key it does not exist (404, like an unknown id).
"""

from __future__ import annotations

import logging
import re
import urllib.parse
from typing import Any

from flask import Blueprint, Response, g, jsonify, request

from .. import formats
from ..apikeys import digest
from ..documents import count_pages
from ..errors import ClientError
from ..jobs.plan import plan
from ..jobs.store import FINISHED, Job
from . import api, auth, guards, state

log = logging.getLogger(__name__)

bp = Blueprint("jobs", __name__, url_prefix="/v1/jobs")
_ID = re.compile(r"^[A-Za-z0-9_-]{22}$")


def _owner() -> str:
    """Who a job belongs to: the key's digest (keys are never stored), else the client address."""
    key = auth.bearer_key()
    if state.current().live.auth().keys_on and key:
        return f"key:{digest(key)}"
    return f"addr:{request.remote_addr}"


def _job(job_id: str) -> Job:
    """The job, if it exists and this client may see it; else the same 404 either way."""
    job = state.current().jobs.get(job_id) if _ID.match(job_id) else None
    keys_on = state.current().live.auth().keys_on
    if job is None or (keys_on and job.owner != _owner()):
        raise ClientError(404, "job_not_found", f"no job {job_id!r}: it never existed, expired, was deleted, "
                                                "or belongs to another API key")
    g.job_id = job.id
    return job


@bp.post("")
def submit():
    worker = state.current()
    cfg = worker.cfg
    guards.check_body(cfg.jobs.max_bytes, "split the document into several jobs")
    # A bad parameter is refused now, not at the first page.
    api.read_structure(formats.check(request.args.get("format", "json")), api.read_mode())
    api.read_words()
    api.read_annotate()
    files = api.uploads(max_files=cfg.jobs.max_pages)
    counts = [count_pages(data, cfg.limits) for data in files]
    pages = plan(counts, request.args.get("pages"))
    if len(pages) > cfg.jobs.max_pages:
        raise ClientError(413, "too_many_pages", f"the upload has {len(pages)} pages; a job takes at most "
                                                 f"{cfg.jobs.max_pages}: split it")
    owner = _owner()
    store = worker.jobs
    if store.waiting(owner) >= cfg.jobs.max_waiting:
        raise ClientError(429, "too_many_jobs", f"{cfg.jobs.max_waiting} jobs of yours are queued or running; "
                                                "wait for one to finish", {"Retry-After": "10"})
    size = sum(len(f) for f in files)
    if not store.make_room(size):
        raise ClientError(503, "jobs_storage_full", "the job store is full of unfinished jobs; retry later",
                          {"Retry-After": "60"})
    # Every other query parameter (mode, dpi, ocr, format, words) is kept with the job: each page
    # goes to /v1/parse with it, less the output ones, which apply to the assembled result
    # (service/jobs/plan.py: page_query).
    query = urllib.parse.urlencode([(k, v) for k, v in request.args.items(multi=True) if k != "pages"])
    job = store.create(owner, query, files, counts, pages)
    g.job_id = job.id
    log.info("job=%s submitted: %d pages from %d files, %d bytes, query %r", job.id, len(pages), len(files),
             size, query)
    response = jsonify({"id": job.id, "status": job.status, "pages_total": job.pages_total})
    response.status_code = 202
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return response


@bp.get("/<job_id>")
def status(job_id: str):
    return jsonify(_job(job_id).to_json())


@bp.get("/<job_id>/result")
def result(job_id: str):
    job = _job(job_id)
    if job.status != "done":
        detail = f": {job.error.get('message')}" if job.error else ""
        raise ClientError(409, "job_not_done", f"job {job.id} is {job.status} ({job.pages_done} of "
                                               f"{job.pages_total} pages read){detail}; the result exists once "
                                               "its status is done", {"Retry-After": "2"} if job.status not in FINISHED else None)
    store = state.current().jobs
    kept = dict(urllib.parse.parse_qsl(job.query))
    fmt = formats.check(request.args.get("format", kept.get("format", "json")))
    words = api.read_words(kept.get("words"))
    body = assemble(store.results(job.id), words)
    if fmt == "json":
        return jsonify(body)
    # The searchable PDF is drawn over the job's upload, which is kept with its results.
    files = [store.upload(job.id, f) for f in range(1 + max(e.get("file", 0) for e in body["images"]))] \
        if fmt == "pdf" else None
    document, media_type = formats.render(body["images"], fmt, files)
    return Response(document, content_type=media_type,
                    headers={"Content-Disposition": f'attachment; filename="parse-{job.id}.{formats.FORMATS[fmt][1]}"'})


def assemble(answers: list[dict[str, Any]], words: bool) -> dict[str, Any]:
    """The body /v1/parse gives for the whole upload, from its pages' answers in page order.

    Pages are read with their words (page_query); they stay only where the client asked for them."""
    if not words:
        for answer in answers:
            for image in answer.get("images", []):
                for line in image.get("lines", []):
                    line.pop("words", None)
    timing: dict[str, float] = {}
    for answer in answers:
        for stage, ms in answer.get("timing_ms", {}).items():
            timing[stage] = round(timing.get(stage, 0.0) + ms, 3)
    return {"request_id": g.request_id, "model": answers[0]["model"],
            "images": [image for answer in answers for image in answer["images"]], "timing_ms": timing}


@bp.delete("/<job_id>")
def delete(job_id: str):
    """An unfinished job is cancelled (its status stays visible until it expires); a finished one
    is forgotten. Either way its upload and results are deleted now."""
    job = _job(job_id)
    store = state.current().jobs
    store.cancel(job.id)
    if job.status in FINISHED:
        store.forget(job.id)
        log.info("job=%s deleted", job.id)
        return jsonify({**job.to_json(), "status": "deleted"})
    log.info("job=%s cancelled by its client after %d of %d pages", job.id, job.pages_done, job.pages_total)
    return jsonify(store.get(job.id).to_json())  # type: ignore[union-attr]
