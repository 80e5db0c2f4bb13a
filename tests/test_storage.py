"""Study storage: resolving settings, masking passwords, secrets, heartbeats.

Secrets Manager is moto's server on loopback (a LOCAL STAND-IN for AWS). The tests
against the real MariaDB server are in test_storage_mysql.py.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
import uuid
from pathlib import Path

import boto3
import optuna
import pytest
from optuna.storages import (
    RDBStorage,
    RetryHeartbeatStaleTrialCallback,
    fail_stale_trials,
)
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from lib.config import format_override, load_settings
from lib.secrets_manager import (
    DatabaseSecret,
    SecretError,
    parse_database_secret,
    resolve_region,
)
from lib.storage import (
    HEARTBEAT_ATTRIBUTE,
    HeartbeatJournalStorage,
    StorageError,
    StorageUrl,
    _escape_format_braces,
    create_storage,
    rdb_engine_options,
    resolve_storage_url,
    storage_kind,
)

# Optuna flags heartbeats experimental, and warns when ask() meets a heartbeat
# storage: both are what these tests exercise on purpose.
pytestmark = pytest.mark.filterwarnings(
    "ignore::optuna.exceptions.ExperimentalWarning",
    "ignore:Heartbeat of storage is supposed to be used with Study.optimize",
)

AWKWARD_PASSWORD = "p@ss/w:rd%7d#?"
PASSWORDS = [AWKWARD_PASSWORD, "a{b}c{{SCHEMA_VERSION}}", 'it\'s "quoted"', "ünï cødé"]


def study_settings(**values):
    """The real `study:` block of lib/conf/config.yaml with ``values`` overridden."""
    overrides = [
        format_override(f"study.{key}", value) for key, value in values.items()
    ]
    return load_settings(overrides).study


def create_moto_secret(fields: dict) -> str:
    client = boto3.client("secretsmanager", region_name="us-east-1")
    name = f"study-db-{uuid.uuid4().hex[:8]}"
    client.create_secret(Name=name, SecretString=json.dumps(fields))
    return name


# --- where the study lives -------------------------------------------------------


def test_default_is_an_absolute_sqlite_file_in_the_run_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = resolve_storage_url(study_settings(), "runs/first")
    database = Path(make_url(url).database)
    assert url.startswith("sqlite:///")
    assert database.is_absolute()
    assert database == tmp_path / "runs" / "first" / "study.db"
    assert storage_kind(url) == "sqlite"


def test_journal_keyword_and_a_journal_left_by_a_parallel_run(tmp_path):
    journal = tmp_path / "study.journal"
    assert resolve_storage_url(study_settings(storage="journal"), tmp_path) == str(
        journal
    )
    assert storage_kind(str(journal)) == "journal"
    journal.touch()
    assert resolve_storage_url(study_settings(), tmp_path) == str(journal)
    (tmp_path / "study.db").touch()
    with pytest.raises(StorageError, match="both study.db and study.journal"):
        resolve_storage_url(study_settings(), tmp_path)


def test_explicit_absolute_sqlite_url_is_kept(tmp_path):
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    assert resolve_storage_url(study_settings(storage=url), tmp_path) == url


def test_relative_sqlite_path_is_refused(tmp_path):
    with pytest.raises(StorageError, match="relative SQLite path"):
        resolve_storage_url(study_settings(storage="sqlite:///study.db"), tmp_path)


def test_unparseable_url_is_not_repeated_in_the_error(tmp_path):
    with pytest.raises(StorageError, match="neither null") as caught:
        resolve_storage_url(study_settings(storage="user:hunter2@db"), tmp_path)
    assert "hunter2" not in str(caught.value)
    assert caught.value.__cause__ is None


# --- passwords stay masked -----------------------------------------------------


def test_storage_url_masks_the_password_in_every_printed_form(caplog):
    secret = DatabaseSecret("optuna", AWKWARD_PASSWORD, "db", 3306, "s")
    url = StorageUrl(secret.to_url().render_as_string(hide_password=False))
    logging.getLogger("test").warning("storage %s and %r", url, url)
    printed = [str(url), repr(url), f"{url}", f"{url:>80}", str([url])]
    for text in [*printed, caplog.text]:
        assert "p%40ss" not in text and "***" in text
    # Still the full URL for the code that connects, also when wrapped again.
    assert make_url(url).password == AWKWARD_PASSWORD
    assert url.reveal().startswith("mysql+pymysql://optuna:p%40ss")
    assert StorageUrl(url).reveal() == url.reveal()


@pytest.mark.parametrize("password", PASSWORDS)
def test_password_round_trips_through_the_url(password):
    secret = DatabaseSecret("optuna", password, "db.example", 3306, "studies")
    url = secret.to_url()
    rendered = url.render_as_string(hide_password=False)
    assert make_url(rendered).password == password
    assert make_url(rendered).database == "studies"
    # RDBStorage calls str.format() on the URL; braces must come through unchanged.
    assert _escape_format_braces(rendered).format(SCHEMA_VERSION=12) == rendered
    assert password not in str(url) and password not in repr(secret)


def test_secret_fields_are_checked_without_showing_values():
    with pytest.raises(SecretError, match="lacks password, host") as caught:
        parse_database_secret(json.dumps({"username": "u", "dbname": "d"}), "s1")
    assert "'u'" not in str(caught.value)

    broken_json = json.dumps({"password": AWKWARD_PASSWORD})[:-1] + ", oops}"
    with pytest.raises(SecretError, match="not valid JSON") as caught:
        parse_database_secret(broken_json, "s2")
    assert AWKWARD_PASSWORD not in "".join(traceback.format_exception(caught.value))

    with pytest.raises(SecretError, match="port that is not a number"):
        parse_database_secret(
            json.dumps(
                {
                    "username": "u",
                    "password": "p",
                    "host": "h",
                    "dbname": "d",
                    "port": "x",
                }
            ),
            "s3",
        )

    secret = parse_database_secret(
        json.dumps({"username": "u", "password": "p", "host": "h", "dbname": "d"}),
        "s4",
    )
    assert secret.port == 3306


def test_region_comes_from_settings_then_environment(monkeypatch):
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    with pytest.raises(SecretError, match="study.secret_region"):
        resolve_region(None)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-central-1")
    assert resolve_region(None) == "eu-central-1"
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    assert resolve_region(None) == "eu-west-1"
    assert resolve_region("ap-south-1") == "ap-south-1"


def test_secret_becomes_a_masked_mysql_url(moto_endpoint, tmp_path, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    fields = {
        "username": "optuna",
        "password": AWKWARD_PASSWORD,
        "host": "127.0.0.1",
        "port": 3306,
        "dbname": "studies",
        "engine": "mysql",
    }
    secret_id = create_moto_secret(fields)
    settings = study_settings(secret_id=secret_id, secret_region="us-east-1")
    caplog.clear()  # creating the secret logged its body; reading it must not
    capfd.readouterr()

    url = resolve_storage_url(settings, tmp_path)

    parsed = make_url(url)
    assert (parsed.drivername, parsed.username, parsed.password) == (
        "mysql+pymysql",
        "optuna",
        AWKWARD_PASSWORD,
    )
    assert (parsed.host, parsed.port, parsed.database) == ("127.0.0.1", 3306, "studies")
    assert storage_kind(url) == "mysql"
    captured = capfd.readouterr()
    for text in (str(url), repr(url), caplog.text, captured.out, captured.err):
        assert AWKWARD_PASSWORD not in text
        assert "p%40ss" not in text
    assert secret_id in caplog.text  # the log says which secret was read


def test_missing_secret_names_the_secret_and_the_fix(moto_endpoint, tmp_path):
    settings = study_settings(secret_id="no-such-secret", secret_region="us-east-1")
    with pytest.raises(SecretError, match="no-such-secret.*ResourceNotFound"):
        resolve_storage_url(settings, tmp_path)


def test_unreachable_server_error_hides_the_password(tmp_path):
    # Port 1 on loopback refuses at once: no server, a real connection error.
    url = "mysql+pymysql://optuna:s3cr3t-pw@127.0.0.1:1/studies"
    with pytest.raises(StorageError, match="cannot open the study storage") as caught:
        create_storage(study_settings(storage=url), tmp_path)
    assert "optuna:***@127.0.0.1:1" in str(caught.value)
    assert "s3cr3t-pw" not in "".join(traceback.format_exception(caught.value))


# --- heartbeats and retries ------------------------------------------------------


def test_sqlite_storage_has_heartbeats_and_a_retry_callback(tmp_path):
    settings = study_settings(
        heartbeat_interval_seconds=5, heartbeat_grace_seconds=20, max_retries=3
    )
    storage = create_storage(settings, tmp_path)
    assert isinstance(storage, RDBStorage)
    assert (storage.heartbeat_interval, storage.grace_period) == (5, 20)
    callback = storage.get_heartbeat_stale_trial_callback()
    assert isinstance(callback, RetryHeartbeatStaleTrialCallback)
    assert callback._max_retry == 3
    assert (tmp_path / "study.db").is_file()


def test_journal_storage_has_heartbeats(tmp_path):
    storage = create_storage(study_settings(storage="journal"), tmp_path)
    assert isinstance(storage, HeartbeatJournalStorage)
    assert storage.get_heartbeat_interval() == 30
    assert storage.grace_period == 120
    assert isinstance(
        storage.get_heartbeat_stale_trial_callback(), RetryHeartbeatStaleTrialCallback
    )
    assert (tmp_path / "study.journal").is_file()


@pytest.mark.parametrize("storage_setting", [None, "journal"])
def test_heartbeats_can_be_switched_off(tmp_path, storage_setting):
    settings = study_settings(storage=storage_setting, heartbeat_interval_seconds=None)
    storage = create_storage(settings, tmp_path)
    assert storage.get_heartbeat_interval() is None
    assert storage.get_heartbeat_stale_trial_callback() is None


@pytest.mark.parametrize(
    ("interval", "grace", "message"),
    [
        (30, 30, "must exceed"),
        (0, 120, "positive whole number"),
        (30, -1, "positive whole number"),
    ],
)
def test_bad_heartbeat_settings_are_refused(tmp_path, interval, grace, message):
    settings = study_settings(
        heartbeat_interval_seconds=interval, heartbeat_grace_seconds=grace
    )
    with pytest.raises(StorageError, match=message):
        create_storage(settings, tmp_path)


def test_server_connections_are_pre_pinged_and_recycled():
    settings = study_settings(pool_recycle_seconds=900)
    assert rdb_engine_options("mysql", settings) == {
        "pool_pre_ping": True,
        "pool_recycle": 900,
    }
    assert rdb_engine_options("sqlite", settings) == {}


def journal_study(tmp_path, **values):
    settings = study_settings(
        storage="journal",
        heartbeat_interval_seconds=1,
        heartbeat_grace_seconds=2,
        **values,
    )
    storage = create_storage(settings, tmp_path)
    study = optuna.create_study(
        study_name="heartbeat", storage=storage, direction="maximize"
    )
    return storage, study


def test_silent_journal_trial_is_failed_and_queued_again(tmp_path):
    storage, study = journal_study(tmp_path)
    trial = study.ask()
    x = trial.suggest_float("x", 0.0, 1.0)
    storage.record_heartbeat(trial._trial_id)
    assert storage._get_stale_trial_ids(study._study_id) == []

    storage.clock = lambda: time.time() + 10  # ten seconds without a heartbeat
    fail_stale_trials(study)

    original, retry = study.get_trials()
    assert original.state == TrialState.FAIL
    assert retry.state == TrialState.WAITING
    assert retry.params == {"x": x}
    assert RetryHeartbeatStaleTrialCallback.retried_trial_number(retry) == 0


def test_retried_trial_is_not_stale_before_its_first_heartbeat(tmp_path):
    storage, study = journal_study(tmp_path)
    # A queued retry carries its predecessor's last heartbeat from long ago.
    study.add_trial(
        optuna.create_trial(
            state=TrialState.WAITING,
            params={"x": 0.5},
            distributions={"x": optuna.distributions.FloatDistribution(0.0, 1.0)},
            system_attrs={HEARTBEAT_ATTRIBUTE: time.time() - 3600, "failed_trial": 0},
        )
    )
    trial = study.ask()  # pops the queued trial: RUNNING from now on
    assert trial.params == {"x": 0.5}
    assert storage._get_stale_trial_ids(study._study_id) == []


def test_heartbeat_of_a_trial_finished_elsewhere_is_dropped(tmp_path, caplog):
    storage, study = journal_study(tmp_path)
    trial = study.ask()
    study.tell(trial, 1.0)
    storage.record_heartbeat(trial._trial_id)  # must not raise in the beat thread
    assert "already finished by another worker" in caplog.text


def test_study_runs_end_to_end_on_both_local_storages(tmp_path):
    for storage_setting in (None, "journal"):
        run_dir = tmp_path / str(storage_setting)
        settings = study_settings(storage=storage_setting)
        study = optuna.create_study(
            study_name="local",
            storage=create_storage(settings, run_dir),
            direction="maximize",
        )
        study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=3)
        reopened = optuna.load_study(
            study_name="local", storage=create_storage(settings, run_dir)
        )
        states = [trial.state for trial in reopened.trials]
        assert states == [TrialState.COMPLETE] * 3
        # Each trial beat at least once while it ran.
        if storage_setting == "journal":
            assert all(HEARTBEAT_ATTRIBUTE in t.system_attrs for t in reopened.trials)
