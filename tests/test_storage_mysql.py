"""Study storage on the real MariaDB/MySQL server at 127.0.0.1:3306.

Each test works in a database of its own (``optuna_test_<random>``), dropped at
the end. Secrets Manager is moto's server on loopback, a LOCAL STAND-IN for AWS.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
import uuid

import boto3
import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState
from optuna_objectives import temporary_mysql_database, temporary_mysql_user
from sqlalchemy.engine import make_url

from lib.config import format_override, load_settings
from lib.storage import StorageError, create_storage, resolve_storage_url

pytestmark = [
    pytest.mark.mysql,
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
]

AWKWARD_PASSWORD = "p@ss/w:rd%7d#?"
# Seconds: the server closes this test's idle connections after IDLE_TIMEOUT.
IDLE_TIMEOUT = 2
PAUSE = IDLE_TIMEOUT + 1.5


def study_settings(**values):
    overrides = [
        format_override(f"study.{key}", value) for key, value in values.items()
    ]
    return load_settings(overrides).study


@pytest.fixture
def database_url(mysql_url):
    with temporary_mysql_database(mysql_url) as url:
        yield url


@pytest.fixture
def database_user(mysql_url, database_url):
    """A user of the test database whose password needs every kind of escaping."""
    database = make_url(database_url).database
    with temporary_mysql_user(mysql_url, database, AWKWARD_PASSWORD) as user:
        yield user, database


def store_secret(fields: dict) -> str:
    client = boto3.client("secretsmanager", region_name="us-east-1")
    name = f"aurora-{uuid.uuid4().hex[:8]}"
    client.create_secret(Name=name, SecretString=json.dumps(fields))
    return name


def quick_objective(trial: optuna.Trial) -> float:
    return trial.suggest_float("x", 0.0, 1.0)


def test_secret_with_an_awkward_password_opens_the_real_database(
    moto_endpoint, database_user, mysql_url, tmp_path, caplog, capfd
):
    user, database = database_user
    secret_id = store_secret(
        {
            "username": user,
            "password": AWKWARD_PASSWORD,
            "host": "127.0.0.1",
            "port": 3306,
            "dbname": database,
            "engine": "mysql",
        }
    )
    caplog.set_level(logging.DEBUG)
    caplog.clear()
    capfd.readouterr()
    settings = study_settings(secret_id=secret_id, secret_region="us-east-1")

    storage = create_storage(settings, tmp_path)
    study = optuna.create_study(
        study_name="from-secret", storage=storage, direction="maximize"
    )
    study.optimize(quick_objective, n_trials=2)

    # The trials are in the secret's database, as the admin sees it.
    admin = sqlalchemy.create_engine(mysql_url)
    with admin.connect() as connection:
        stored = connection.exec_driver_sql(
            f"SELECT COUNT(*) FROM `{database}`.trials WHERE state = 'COMPLETE'"
        ).scalar_one()
    admin.dispose()
    assert stored == 2
    assert storage.engine.url.password == AWKWARD_PASSWORD
    captured = capfd.readouterr()
    printed = [
        str(resolve_storage_url(settings, tmp_path)),
        repr(storage.engine),
        caplog.text,
        captured.out,
        captured.err,
    ]
    for text in printed:
        assert AWKWARD_PASSWORD not in text
        assert "p%40ss" not in text


def test_wrong_password_fails_with_a_masked_url(moto_endpoint, database_user, tmp_path):
    user, database = database_user
    wrong_password = "wr0ng/p@ss"
    secret_id = store_secret(
        {
            "username": user,
            "password": wrong_password,
            "host": "127.0.0.1",
            "port": 3306,
            "dbname": database,
        }
    )
    settings = study_settings(secret_id=secret_id, secret_region="us-east-1")
    with pytest.raises(StorageError, match="Access denied") as caught:
        create_storage(settings, tmp_path)
    assert f"{user}:***@127.0.0.1:3306/{database}" in str(caught.value)
    full_report = "".join(traceback.format_exception(caught.value))
    assert "wr0ng" not in full_report


def test_server_connections_are_pre_pinged_and_recycled(database_url, tmp_path):
    storage = create_storage(
        study_settings(storage=database_url, pool_recycle_seconds=600), tmp_path
    )
    assert storage.engine.pool._pre_ping is True
    assert storage.engine.pool._recycle == 600


def lower_idle_timeout_of_this_engine(engine: sqlalchemy.Engine) -> None:
    """Make the server close this engine's idle connections after IDLE_TIMEOUT.

    SET SESSION touches only these connections, never the server's global value.
    """

    def set_session_timeout(dbapi_connection, _record):
        with dbapi_connection.cursor() as cursor:
            cursor.execute(f"SET SESSION wait_timeout = {IDLE_TIMEOUT}")

    sqlalchemy.event.listen(engine, "connect", set_session_timeout)
    engine.dispose()  # connections opened before the listener are dropped


def sleepy_objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", 0.0, 1.0)
    time.sleep(PAUSE)  # a long epoch: the trial's own connection idles meanwhile
    return x


@pytest.mark.slow
def test_study_goes_on_after_the_server_drops_idle_connections(
    database_url, mysql_url, tmp_path
):
    settings = study_settings(
        storage=database_url, heartbeat_interval_seconds=30, heartbeat_grace_seconds=60
    )
    storage = create_storage(settings, tmp_path)
    lower_idle_timeout_of_this_engine(storage.engine)
    with storage.engine.connect() as connection:
        session_timeout = connection.exec_driver_sql("SELECT @@SESSION.wait_timeout")
        assert session_timeout.scalar_one() == IDLE_TIMEOUT
    study = optuna.create_study(
        study_name="idle", storage=storage, direction="maximize"
    )

    study.optimize(sleepy_objective, n_trials=1)
    time.sleep(PAUSE)  # between trials: every pooled connection is now closed
    study.optimize(quick_objective, n_trials=1)

    assert [trial.state for trial in study.trials] == [TrialState.COMPLETE] * 2
    admin = sqlalchemy.create_engine(mysql_url)
    with admin.connect() as connection:
        global_timeout = connection.exec_driver_sql("SELECT @@GLOBAL.wait_timeout")
        assert global_timeout.scalar_one() > IDLE_TIMEOUT
    admin.dispose()


def test_without_pre_ping_the_dropped_connection_breaks_the_study(database_url):
    """The control: what the pre-ping above protects against really happens."""
    storage = optuna.storages.RDBStorage(
        database_url, engine_kwargs={"pool_pre_ping": False}
    )
    lower_idle_timeout_of_this_engine(storage.engine)
    study = optuna.create_study(
        study_name="control", storage=storage, direction="maximize"
    )
    study.optimize(quick_objective, n_trials=1)
    time.sleep(PAUSE)
    with pytest.raises(
        (optuna.exceptions.StorageInternalError, sqlalchemy.exc.OperationalError),
    ):
        study.optimize(quick_objective, n_trials=1)
