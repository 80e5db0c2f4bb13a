"""optuna-dashboard on the study storage that the settings name, on loopback only.

    python -m lib.dashboard --run-dir runs/<run>            # http://127.0.0.1:8081/
    python -m lib.dashboard study.secret_id=<secret arn> --port 8082

The storage is resolved exactly as tuning resolves it (``lib.storage``), Secrets
Manager secret included. The default port 8081 keeps clear of the model server's
8080. To look at a remote machine's dashboard, forward the port over SSH rather
than binding to a public address.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from lib.config import SettingsError, load_settings
from lib.secrets_manager import SecretError
from lib.storage import JOURNAL, StorageError, create_storage, resolve_storage_url

logger = logging.getLogger(__name__)


class DashboardError(RuntimeError):
    """The dashboard cannot start with these settings."""


class _ThreadedWSGIServer(ThreadingMixIn, WSGIServer):
    # The dashboard page fetches several API routes at once; one thread each.
    daemon_threads = True


class _QuietRequestHandler(WSGIRequestHandler):
    def log_message(self, log_format: str, *args) -> None:
        logger.debug("%s %s", self.address_string(), log_format % args)


def check_loopback(host: str) -> None:
    """Refuse a non-loopback address: the dashboard has no login of its own."""
    if host == "localhost":
        return
    try:
        is_loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        is_loopback = False
    if not is_loopback:
        raise DashboardError(
            f"dashboard host {host!r} is not a loopback address; optuna-dashboard has "
            "no authentication, so keep 127.0.0.1 and forward the port instead "
            "(ssh -L 8081:127.0.0.1:8081 <machine>)"
        )


def create_dashboard_server(
    settings, run_dir: str | Path | None, host: str, port: int
) -> WSGIServer:
    """Open the study storage and bind optuna-dashboard to ``host:port``."""
    import optuna_dashboard

    check_loopback(host)
    folder = run_dir or settings.run_dir
    if folder is None:
        if not settings.study.secret_id and settings.study.storage in (None, JOURNAL):
            raise DashboardError(
                "the study lives in a run folder: pass --run-dir runs/<run>"
            )
        folder = Path.cwd()  # not read: the storage is named by URL or secret
    storage = create_storage(settings.study, folder)
    application = optuna_dashboard.wsgi(storage)
    server = make_server(
        host,
        port,
        application,
        server_class=_ThreadedWSGIServer,
        handler_class=_QuietRequestHandler,
    )
    logger.info(
        "optuna-dashboard for %s at http://%s:%d/ (Ctrl-C stops it)",
        resolve_storage_url(settings.study, folder),
        host,
        server.server_port,
    )
    return server


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m lib.dashboard",
        description="Serve optuna-dashboard for the study named by the settings.",
    )
    parser.add_argument("--run-dir", help="run folder holding a local study")
    parser.add_argument("--host", help="loopback address (default: dashboard.host)")
    parser.add_argument("--port", type=int, help="port (default: dashboard.port)")
    parser.add_argument(
        "overrides", nargs="*", help="Hydra overrides such as study.secret_id=..."
    )
    return parser.parse_intermixed_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = load_settings(arguments.overrides)
        host = arguments.host or settings.dashboard.host
        port = arguments.port if arguments.port is not None else settings.dashboard.port
        server = create_dashboard_server(settings, arguments.run_dir, host, port)
    except (DashboardError, StorageError, SecretError, SettingsError) as error:
        logger.error("%s", error)
        return 2
    except OSError as error:
        logger.error(
            "cannot listen on %s:%s (%s): pick another --port", host, port, error
        )
        return 2
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        logger.info("dashboard stopped")
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
