"""optuna-dashboard on the study storage, seen through headless Chromium.

The browser is Debian's ``chromium`` package (CI installs it when missing); the
screenshot is kept in test-artifacts/ (git-ignored) for a person to look at.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import uuid
from html import unescape
from pathlib import Path

import boto3
import optuna
import pytest
import requests
from conftest import find_free_port, wait_for_port
from optuna.trial import TrialState
from optuna_objectives import quadratic, temporary_mysql_database
from sqlalchemy.engine import make_url

from lib.config import format_override, load_settings
from lib.dashboard import DashboardError, check_loopback, create_dashboard_server, main
from lib.storage import create_storage

REPO_ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO_ROOT / "test-artifacts"
STUDY_NAME = "dashboard-demo-study"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def chromium_path() -> str:
    path = shutil.which("chromium")
    if path is None:
        message = "Debian's chromium is missing: apt-get install -y chromium"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def run_headless_chromium(url: str, profile: Path, *mode: str) -> str:
    """Load ``url`` in headless Chromium; return its standard output."""
    command = [
        chromium_path(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        # Virtual time lets the JavaScript app fetch the study and draw it.
        "--virtual-time-budget=15000",
        "--window-size=1400,1000",
        "--hide-scrollbars",
        *mode,
        url,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def visible_text(dom: str) -> str:
    without_code = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", without_code)))


def make_study(run_dir: Path, n_trials: int) -> optuna.Study:
    settings = load_settings(["study.storage=journal"])
    study = optuna.create_study(
        study_name=STUDY_NAME,
        storage=create_storage(settings.study, run_dir),
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=3),
    )
    study.optimize(quadratic, n_trials=n_trials)
    return study


@pytest.fixture
def dashboard_process(tmp_path):
    """``python -m lib.dashboard`` on a journal study, in its own process."""
    run_dir = tmp_path / "run"
    study = make_study(run_dir, n_trials=6)
    port = find_free_port()
    log_path = tmp_path / "dashboard.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "lib.dashboard", "--run-dir", str(run_dir)]
            + ["--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
        )
    try:
        wait_for_port(port, process)
        yield port, study, process, log_path
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.mark.slow
def test_dashboard_shows_the_study_and_its_trials_in_a_browser(
    dashboard_process, tmp_path
):
    port, study, process, log_path = dashboard_process
    base = f"http://127.0.0.1:{port}"
    summaries = requests.get(f"{base}/api/studies", timeout=10).json()
    assert [s["study_name"] for s in summaries["study_summaries"]] == [STUDY_NAME]
    study_id = summaries["study_summaries"][0]["study_id"]

    dom = run_headless_chromium(
        f"{base}/dashboard/studies/{study_id}/trials",
        tmp_path / "profile",
        "--dump-dom",
    )

    text = visible_text(dom)
    assert STUDY_NAME in text
    trials = study.get_trials()
    assert f"{len(trials)} Trials" in text
    for trial in trials:
        state = {TrialState.COMPLETE: "Complete", TrialState.PRUNED: "Pruned"}
        assert f"Trial {trial.number} {state[trial.state]}" in text

    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "dashboard_study.png"
    screenshot.unlink(missing_ok=True)
    run_headless_chromium(
        f"{base}/dashboard/studies/{study_id}",
        tmp_path / "profile",
        f"--screenshot={screenshot}",
    )
    assert screenshot.read_bytes()[:8] == PNG_SIGNATURE
    assert screenshot.stat().st_size > 20_000  # a drawn page, not a blank one

    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=10) == 0
    assert "http://127.0.0.1:" in log_path.read_text()


@pytest.mark.mysql
def test_dashboard_resolves_the_secret_to_the_same_mysql_study(
    moto_endpoint, mysql_url, tmp_path
):
    with temporary_mysql_database(mysql_url) as url:
        parsed = make_url(url)
        secret_id = f"dashboard-{uuid.uuid4().hex[:8]}"
        boto3.client("secretsmanager", region_name="us-east-1").create_secret(
            Name=secret_id,
            SecretString=json.dumps(
                {
                    "username": parsed.username,
                    "password": parsed.password or "",
                    "host": parsed.host,
                    "port": parsed.port,
                    "dbname": parsed.database,
                }
            ),
        )
        with_url = load_settings([format_override("study.storage", url)])
        optuna.create_study(
            study_name=STUDY_NAME, storage=create_storage(with_url.study, tmp_path)
        ).optimize(quadratic, n_trials=2)
        settings = load_settings(
            [f"study.secret_id={secret_id}", "study.secret_region=us-east-1"]
        )
        server = create_dashboard_server(settings, None, "127.0.0.1", 0)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            port = server.server_port
            summaries = requests.get(
                f"http://127.0.0.1:{port}/api/studies", timeout=10
            ).json()["study_summaries"]
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)
    assert [s["study_name"] for s in summaries] == [STUDY_NAME]


def test_default_address_is_loopback_port_8081():
    settings = load_settings([])
    assert (settings.dashboard.host, settings.dashboard.port) == ("127.0.0.1", 8081)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_hosts_are_accepted(host):
    check_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::", "dashboard.example"])
def test_other_hosts_are_refused(host):
    with pytest.raises(DashboardError, match="not a loopback address"):
        check_loopback(host)


def test_local_study_needs_a_run_folder():
    with pytest.raises(DashboardError, match="--run-dir"):
        create_dashboard_server(load_settings([]), None, "127.0.0.1", 0)


def test_busy_port_is_reported_with_exit_code_2(tmp_path, caplog):
    make_study(tmp_path, n_trials=1)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        exit_code = main(["--run-dir", str(tmp_path), "--port", str(port)])
    assert exit_code == 2
    assert f"cannot listen on 127.0.0.1:{port}" in caplog.text
