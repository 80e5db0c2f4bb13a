"""A database password must not leak: not into files, the study, or errors.

A real, short tuning run (the main job's notebooks 00-02, tiny model, one trial
of one epoch) keeps its study in a MariaDB database of its own on 127.0.0.1,
reached by a user of its own whose password is a canary. The password reaches
the run in the two ways the project supports: in the ``study.storage`` URL, and
through a Secrets Manager secret (``study.secret_id``; moto's server on
loopback, a LOCAL STAND-IN for AWS). Afterwards the canary must appear nowhere:
not in any file of the run folder (logs, executed notebooks, metrics.json,
settings.yaml, run_status.json, the model), not in what the main job printed, not
in any table of the study's database (its user and system attributes included),
and not in the error of a call that fails on purpose.
"""

from __future__ import annotations

import json
import os
import subprocess
import traceback
import uuid
from pathlib import Path

import boto3
import pytest
import sqlalchemy
from optuna_objectives import temporary_mysql_database, temporary_mysql_user
from pipeline_runs import main_job_command
from sqlalchemy.engine import URL, make_url

from lib.config import format_override, load_settings
from lib.notebook import PROJECT_ROOT
from lib.storage import StorageError, create_storage

pytestmark = [pytest.mark.mysql, pytest.mark.slow]

CANARY_PASSWORD = "Leak-Canary-7f3!"
# Found in the raw password and in its URL-encoded form ("...7f3%21").
CANARY = "Leak-Canary-7f3"
# The smallest real run: one trial of one epoch of a one-block model, then the
# final retrain and the test metrics.
TINY_RUN = [
    "budget.n_trials=1",
    "budget.max_epochs=1",
    "tf_keras.hyperparameters.n_blocks=1",
    "tf_keras.hyperparameters.embedding_dim=16",
    "tf_keras.hyperparameters.mlp_layers=1",
    "tf_keras.hyperparameters.mlp_units=32",
    "tf_keras.search_space.n_blocks.high=1",
    "tf_keras.search_space.embedding_dim.choices=[16]",
    "tf_keras.search_space.mlp_layers.high=1",
    "tf_keras.search_space.mlp_units.choices=[32]",
]


class PasswordLeaked(AssertionError):
    """The canary was found; the message lists where."""


@pytest.fixture
def canary_database(mysql_url):
    """A database and a user of its own whose password is the canary; dropped after."""
    with temporary_mysql_database(mysql_url, prefix="leak_test") as database_url:
        database = make_url(database_url).database
        with temporary_mysql_user(
            mysql_url, database, CANARY_PASSWORD, prefix="leak"
        ) as user:
            yield user, database


def canary_url(user: str, database: str) -> str:
    return URL.create(
        "mysql+pymysql",
        username=user,
        password=CANARY_PASSWORD,
        host="127.0.0.1",
        port=3306,
        database=database,
        query={"charset": "utf8mb4"},
    ).render_as_string(hide_password=False)


def run_tuning(run_dir: Path, overrides: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        main_job_command(
            run_dir,
            "--study-name",
            "leak-check",
            *TINY_RUN,
            *overrides,
            "--notebooks",
            "00",
            "01",
            "02",
        ),
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
        env=dict(os.environ),
    )


def files_holding(folder: Path, needle: str) -> dict[str, str]:
    """Every file under ``folder`` whose bytes hold ``needle``, with some context."""
    found = {}
    encoded = needle.encode()
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        content = path.read_bytes()
        where = content.find(encoded)
        if where >= 0:
            context = content[max(0, where - 60) : where + 40]
            found[str(path.relative_to(folder))] = context.decode("utf-8", "replace")
    return found


def database_rows_holding(admin_url: str, database: str, needle: str) -> list[str]:
    """Rows of every table of ``database`` whose text holds ``needle``."""
    engine = sqlalchemy.create_engine(admin_url)
    found = []
    try:
        with engine.connect() as connection:
            tables = connection.execute(
                sqlalchemy.text(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = :database"
                ),
                {"database": database},
            ).scalars()
            for table in list(tables):
                rows = connection.exec_driver_sql(
                    f"SELECT * FROM `{database}`.`{table}`"
                )
                found += [f"{table}: {row}" for row in rows if needle in str(row)]
    finally:
        engine.dispose()
    return found


def study_attributes(admin_url: str, database: str) -> dict[str, list]:
    engine = sqlalchemy.create_engine(admin_url)
    tables = (
        "study_user_attributes",
        "study_system_attributes",
        "trial_user_attributes",
        "trial_system_attributes",
    )
    try:
        with engine.connect() as connection:
            return {
                table: connection.exec_driver_sql(
                    f"SELECT `key`, value_json FROM `{database}`.`{table}`"
                ).all()
                for table in tables
            }
    finally:
        engine.dispose()


def check_no_leak(result, run_dir: Path, mysql_url: str, database: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert json.loads((run_dir / "metrics.json").read_text())["n_records"] == 16_281
    attributes = study_attributes(mysql_url, database)
    # The check looked where it should: the study's own attributes are there.
    assert attributes["trial_user_attributes"], attributes
    assert any(key == "objective" for key, _ in attributes["study_user_attributes"])

    leaks = {
        "printed by the main job": [output[max(0, output.find(CANARY) - 60) :][:120]]
        if CANARY in output
        else [],
        "files of the run folder": files_holding(run_dir, CANARY),
        "rows of the study database": database_rows_holding(
            mysql_url, database, CANARY
        ),
    }
    if any(leaks.values()):
        raise PasswordLeaked(json.dumps(leaks, indent=2, default=str))


def check_failing_call_hides_the_password(user: str, tmp_path: Path) -> None:
    # The same user and password, a database it may not use: access is denied.
    url = canary_url(user, "no_such_database_for_leak_check")
    settings = load_settings([format_override("study.storage", url)])
    with pytest.raises(StorageError) as caught:
        create_storage(settings.study, tmp_path)
    report = "".join(traceback.format_exception(caught.value))
    assert "denied" in report.lower()
    assert CANARY not in report


def test_password_in_the_storage_url_appears_nowhere(
    mysql_url, canary_database, tmp_path
):
    user, database = canary_database
    run_dir = tmp_path / "run"
    url = canary_url(user, database)
    assert make_url(url).password == CANARY_PASSWORD
    result = run_tuning(run_dir, [format_override("study.storage", url)])
    check_failing_call_hides_the_password(user, tmp_path / "failing")
    check_no_leak(result, run_dir, mysql_url, database)


def test_password_from_the_secret_appears_nowhere(
    moto_endpoint, mysql_url, canary_database, tmp_path
):
    user, database = canary_database
    secret_id = f"leak-check-{uuid.uuid4().hex[:8]}"
    boto3.client("secretsmanager", region_name="us-east-1").create_secret(
        Name=secret_id,
        SecretString=json.dumps(
            {
                "username": user,
                "password": CANARY_PASSWORD,
                "host": "127.0.0.1",
                "port": 3306,
                "dbname": database,
                "engine": "mysql",
            }
        ),
    )
    run_dir = tmp_path / "run"
    result = run_tuning(
        run_dir,
        [f"study.secret_id={secret_id}", "study.secret_region=us-east-1"],
    )
    check_failing_call_hides_the_password(user, tmp_path / "failing")
    check_no_leak(result, run_dir, mysql_url, database)
    # The study really lived in the canary user's database.
    engine = sqlalchemy.create_engine(mysql_url)
    with engine.connect() as connection:
        names = connection.exec_driver_sql(
            f"SELECT study_name FROM `{database}`.studies"
        ).scalars()
        assert list(names) == ["leak-check"]
    engine.dispose()
