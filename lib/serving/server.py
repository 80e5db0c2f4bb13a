"""Run the model server: gunicorn in this process, the model in each worker.

The gunicorn master only reads settings, checks that the model folder exists and
forks workers; it never imports TensorFlow, so forking is safe and cheap. Right
after the fork each worker starts loading the model in a background thread and
serves ``/ping`` with 503 until the model is loaded and a warm-up prediction
passed. A worker that cannot load the model exits with gunicorn's "worker failed
to boot" status, which stops the master with a non-zero exit code: the server
never answers 200 to ``/ping`` without a working model.

``main`` is what the ``serve`` executable (docker/serve) and ``python -m
lib.serving`` run.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter

from lib.serving.settings import ServingSettings, ServingSettingsError

logger = logging.getLogger(__name__)

# Heartbeat files of the workers; memory-backed where it exists (as in Docker,
# where /tmp may sit on a slow overlay filesystem).
SHARED_MEMORY_DIR = Path("/dev/shm")


class ModelServer(BaseApplication):
    """gunicorn configured from ``ServingSettings``; the app is built in each worker."""

    def __init__(self, settings: ServingSettings):
        self.settings = settings
        self.slot = None  # the worker's ModelSlot, set right after the fork
        super().__init__()

    def load_config(self) -> None:
        for name, value in gunicorn_options(
            self.settings, self._post_fork_hook()
        ).items():
            self.cfg.set(name, value)

    def load(self):
        # Runs in the worker (preload_app is off), after the post-fork hook.
        from lib.serving.app import create_app

        return close_when_asked(create_app(self.slot, self.settings))

    def _post_fork_hook(self):
        def post_fork(server, worker) -> None:
            from lib.serving.model_slot import ModelSlot

            install_json_error_pages()
            self.slot = ModelSlot(
                self.settings.model_dir,
                tf_threads=self.settings.tf_threads,
                predict_batch_size=self.settings.predict_batch_size,
                on_failure=stop_worker_for_good,
            )
            self.slot.start_loading()

        return post_fork


def close_when_asked(app):
    """Honour an application's ``Connection: close`` under gunicorn.

    gunicorn drops hop-by-hop headers from the application's answer and decides
    keep-alive itself, so an answer given before the body was read whole (413, 408,
    an unreadable body) would leave the rest of that body on a kept-alive
    connection. gunicorn's ``start_response`` is a method of its response object,
    whose ``force_close`` makes it close after the answer instead.
    """

    def application(environ, start_response):
        def start(status, headers, exc_info=None):
            asks_to_close = any(
                name.lower() == "connection" and value.lower() == "close"
                for name, value in headers
            )
            gunicorn_response = getattr(start_response, "__self__", None)
            if asks_to_close and hasattr(gunicorn_response, "force_close"):
                gunicorn_response.force_close()
            return start_response(status, headers, exc_info)

        return app(environ, start)

    return application


def gunicorn_options(settings: ServingSettings, post_fork) -> dict:
    """gunicorn settings for the model server."""
    options = {
        "bind": [settings.bind],
        "workers": settings.workers,
        # gthread: request threads overlap requests while TensorFlow runs (it
        # releases the GIL), so /ping is answered while a large batch is scored
        # and a slow client holds one thread, not the worker. sync: a little less
        # overhead per request. Either answers /ping while the model loads.
        "worker_class": settings.worker_class,
        "threads": settings.threads if settings.worker_class == "gthread" else 1,
        "timeout": settings.timeout_seconds,
        "graceful_timeout": 30,
        "keepalive": settings.keepalive_seconds,
        "preload_app": False,
        "post_fork": post_fork,
        "proc_name": "adult-model-server",
        "loglevel": settings.log_level.lower(),
        "accesslog": None,
        # Several servers may run on one machine (tests, notebooks): no shared
        # control socket in the home folder.
        "control_socket_disable": True,
    }
    if SHARED_MEMORY_DIR.is_dir() and os.access(SHARED_MEMORY_DIR, os.W_OK):
        options["worker_tmp_dir"] = str(SHARED_MEMORY_DIR)
    return options


def install_json_error_pages() -> None:
    """Make gunicorn's own answers to malformed HTTP JSON, and never a 501.

    gunicorn answers a request it cannot parse (a bad header, a broken chunk, an
    unknown transfer coding) itself, before the application sees it, with an HTML
    page written by ``gunicorn.util.write_error``. That function is replaced in
    this worker process by one that writes the same status as JSON, like every
    other error of the server; 501 (unsupported transfer coding) becomes 400.

    TODO(serving): drop when gunicorn lets an application render these errors.
    """
    import gunicorn.util

    gunicorn.util.write_error = write_json_error


def write_json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    """Write an error answer as gunicorn.util.write_error does, but as JSON."""
    from gunicorn.util import write_nonblock

    if status_int == 501:
        status_int, reason = 400, "Bad Request"
    body = json.dumps(
        {"error": f"{reason}: {mesg}", "record": None, "field": None}
    ).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    write_nonblock(sock, head.encode("latin-1") + body)


def stop_worker_for_good(reason: str) -> None:
    """End this worker so that gunicorn stops the whole server with an error.

    Exiting with gunicorn's boot-error status makes the master halt with that
    status instead of starting another worker that would fail the same way.
    """
    logger.critical("%s", reason)
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stderr.flush()
    os._exit(Arbiter.WORKER_BOOT_ERROR)


def check_model_dir(model_dir: Path) -> str | None:
    """Say what is wrong with the model folder, before any worker starts."""
    if not model_dir.exists():
        return (
            f"the model folder {model_dir} does not exist: mount the artifact there "
            "or point SM_MODEL_DIR at it"
        )
    if not model_dir.is_dir():
        return f"{model_dir} is a file, not a model folder; point SM_MODEL_DIR at one"
    if not any(model_dir.iterdir()):
        return f"the model folder {model_dir} is empty: no artifact was provided"
    return None


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def main(argv: list[str] | None = None) -> int:
    """Start the server; returns (or exits with) a non-zero status on failure."""
    arguments = sys.argv[1:] if argv is None else argv
    # SageMaker runs `docker run IMAGE serve`; anything else is a mistake.
    if arguments not in ([], ["serve"]):
        configure_logging("INFO")
        logger.error("usage: serve (no arguments; got %s)", " ".join(arguments))
        return 2
    # TensorFlow's C++ start-up chatter, once per worker, says nothing useful here.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    from lib.serving.settings import load_serving_settings

    try:
        settings = load_serving_settings()
    except (ServingSettingsError, ValueError) as error:
        configure_logging("INFO")
        logger.error("cannot start the model server: %s", error)
        return 2
    configure_logging(settings.log_level)
    problem = check_model_dir(settings.model_dir)
    if problem:
        logger.error("cannot start the model server: %s", problem)
        return 1
    logger.info(
        "serving %s on %s: %d %s workers, %d requests at once, %d TensorFlow "
        "threads per worker",
        settings.model_dir,
        settings.bind,
        settings.workers,
        settings.worker_class,
        settings.concurrency,
        settings.tf_threads,
    )
    ModelServer(settings).run()  # exits the process with gunicorn's status
    return 0
