"""The Flask application: ``GET /ping`` and ``POST /invocations``.

Every answer is JSON except a CSV prediction: errors are ``{"error": ...}`` plus
``record`` and ``field`` (and ``line`` for CSV) when they apply. A request is
checked in this order: content type (415), ``Accept`` (406), body size (413),
model loaded (503), then the body itself (400). A client that stops sending its
body for ``body_timeout_seconds`` gets 408 and the connection is closed.
"""

from __future__ import annotations

import json
import logging
import socket

import numpy as np
from flask import Flask, Response, request
from gunicorn.http.errors import ParseException
from werkzeug.exceptions import HTTPException

from lib.serving import media
from lib.serving.model_slot import ModelSlot
from lib.serving.parsing import RequestError, parse_csv, parse_json
from lib.serving.settings import ServingSettings

logger = logging.getLogger(__name__)

POSITIVE_LABEL = ">50K"
NEGATIVE_LABEL = "<=50K"
READ_BLOCK_BYTES = 64 * 1024
# A body over the limit is still read (and dropped) up to this many times the limit,
# so the client gets its 413 instead of a reset connection; past that we hang up.
DRAIN_FACTOR = 8


def create_app(slot: ModelSlot, settings: ServingSettings) -> Flask:
    """Build the application around a model slot (loaded, or loading meanwhile)."""
    app = Flask(__name__)

    @app.get("/ping")
    def ping():
        if slot.is_ready:
            return json_response({"status": "ready"}, 200)
        return json_response(
            {"error": "the model is still loading; retry shortly"},
            503,
            {"Retry-After": "1"},
        )

    @app.post("/invocations")
    def invocations():
        return invoke(slot, settings)

    @app.get("/execution-parameters")
    def execution_parameters():
        # Read by SageMaker batch transform to size its requests.
        return json_response(
            {
                "MaxConcurrentTransforms": settings.concurrency,
                "BatchStrategy": "MULTI_RECORD",
                "MaxPayloadInMB": max(1, settings.max_body_bytes // 2**20),
            },
            200,
        )

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        answer = error.get_response()
        answer.set_data(json.dumps({"error": f"{error.name}: {error.description}"}))
        answer.content_type = media.JSON
        return answer

    @app.errorhandler(Exception)
    def unexpected_error(error: Exception):
        # Reaching this is a bug: the request is logged with its traceback.
        logger.exception("unexpected error on %s %s", request.method, request.path)
        return json_response(
            {"error": f"internal error ({type(error).__name__}); see the server log"},
            500,
        )

    return app


def invoke(slot: ModelSlot, settings: ServingSettings) -> Response:
    """Answer one ``POST /invocations``."""
    content_type = request.headers.get("Content-Type")
    request_type = media.request_media_type(content_type)
    if request_type is None:
        return error_response(
            415,
            f"unsupported Content-Type {content_type!r}; send "
            f"{' or '.join(media.REQUEST_TYPES)}",
        )
    charset = media.request_charset(request_type)
    if charset is None:
        return error_response(
            415,
            f"unsupported charset {request_type.parameters.get('charset')!r}; "
            "send UTF-8",
        )
    accept = request.headers.get("Accept")
    response_type = media.choose_response_type(accept)
    if response_type is None:
        return error_response(
            406,
            f"cannot answer in any type that Accept {accept!r} allows; the server "
            f"answers in {' or '.join(media.RESPONSE_TYPES)}",
        )
    try:
        body, drained = read_body(
            request.environ, settings.max_body_bytes, settings.body_timeout_seconds
        )
    except TimeoutError:
        answer = error_response(
            408,
            f"no body bytes arrived for {settings.body_timeout_seconds:g} s; "
            "send the whole body without pausing",
        )
        answer.headers["Connection"] = "close"
        return answer
    except (ParseException, OSError) as error:
        # A malformed chunked body, or a client that hung up mid-body.
        answer = error_response(400, f"the request body cannot be read: {error}")
        answer.headers["Connection"] = "close"
        return answer
    if body is None:
        answer = error_response(
            413,
            f"the body is larger than {settings.max_body_bytes} bytes; send fewer "
            "records per request",
        )
        if not drained:
            answer.headers["Connection"] = "close"
        return answer
    if not slot.wait_until_ready(settings.ready_wait_seconds):
        return error_response(503, "the model is still loading; retry shortly")
    try:
        if request_type.essence == media.CSV:
            parsed = parse_csv(body, charset, slot.schema)
        else:
            parsed = parse_json(body, charset, slot.schema)
        probabilities = slot.predict(parsed)
    except RequestError as error:
        logger.debug("refused a request: %s", error.message)
        return json_response(error.as_json(), 400)
    return prediction_response(probabilities, slot.threshold, response_type)


def read_body(
    environ: dict, limit: int, idle_timeout: float = 0.0
) -> tuple[bytes | None, bool]:
    """The request body, or None when it exceeds ``limit`` bytes.

    The second value says whether the whole body was read from the connection, so
    that it can be kept alive. With ``idle_timeout`` > 0, a wait of that many
    seconds for the next bytes raises TimeoutError: a request thread must not wait
    forever on a client that stopped sending.
    """
    connection = environ.get("gunicorn.socket")
    if not isinstance(connection, socket.socket) or idle_timeout <= 0:
        return _read_body(environ, limit)
    previous = connection.gettimeout()
    connection.settimeout(idle_timeout)
    try:
        return _read_body(environ, limit)
    finally:
        connection.settimeout(previous)


def _read_body(environ: dict, limit: int) -> tuple[bytes | None, bool]:
    stream = environ["wsgi.input"]
    declared = environ.get("CONTENT_LENGTH")
    declared_length = int(declared) if declared and declared.isdigit() else None
    if declared_length is not None and declared_length > limit:
        if declared_length > DRAIN_FACTOR * limit:
            return None, False
        return None, _drain(stream, DRAIN_FACTOR * limit)
    blocks, size = [], 0
    while True:
        block = stream.read(READ_BLOCK_BYTES)
        if not block:
            return b"".join(blocks), True
        size += len(block)
        if size > limit:
            return None, _drain(stream, DRAIN_FACTOR * limit - size)
        blocks.append(block)


def _drain(stream, budget: int) -> bool:
    while budget > 0:
        block = stream.read(min(READ_BLOCK_BYTES, budget))
        if not block:
            return True
        budget -= len(block)
    return False


def prediction_response(
    probabilities: np.ndarray, threshold: float, response_type: str
) -> Response:
    """Per record, in order: the probability of >50K and the label at the threshold."""
    values = probabilities.tolist()
    labels = [POSITIVE_LABEL if p >= threshold else NEGATIVE_LABEL for p in values]
    if response_type == media.CSV:
        lines = [f"{p!r},{label}" for p, label in zip(values, labels, strict=True)]
        return Response("\n".join(lines) + "\n", 200, mimetype=media.CSV)
    # Built by hand (finite floats print as JSON numbers): json.dumps of a list of
    # dicts costs several times more on large batches.
    items = ",".join(
        f'{{"probability":{p!r},"label":"{label}"}}'
        for p, label in zip(values, labels, strict=True)
    )
    return Response(f'{{"predictions":[{items}]}}', 200, mimetype=media.JSON)


def json_response(
    payload: dict, status: int, headers: dict[str, str] | None = None
) -> Response:
    return Response(json.dumps(payload), status, headers, mimetype=media.JSON)


def error_response(status: int, message: str) -> Response:
    logger.debug("answered %d: %s", status, message)
    return json_response({"error": message, "record": None, "field": None}, status)
