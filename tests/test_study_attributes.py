"""Large study and trial attributes go to files; the database keeps a reference.

Uses real Optuna studies: SQLite in a temporary folder, and the real MariaDB
server on 127.0.0.1:3306, whose TEXT column refuses a value over 65,535 bytes.
"""

from __future__ import annotations

import hashlib
import json
import math

import optuna
import pytest
import sqlalchemy
from optuna_objectives import temporary_mysql_database

from lib.study_attributes import (
    ATTRIBUTES_DIR,
    DEFAULT_LIMIT_CHARS,
    StudyAttributeError,
    is_reference,
    resolve_attribute,
    resolve_user_attrs,
    set_user_attr,
)

# JSON text of this value is 80,008 characters: more than MySQL's TEXT column.
HUGE_CURVE = [0.123456] * 10_000


def sqlite_study(tmp_path, name="attributes"):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    return optuna.create_study(study_name=name, storage=storage)


def reload_study(tmp_path, name="attributes"):
    return optuna.load_study(
        study_name=name, storage=f"sqlite:///{tmp_path / 'study.db'}"
    )


def test_a_small_value_is_stored_as_it_is(tmp_path):
    study = sqlite_study(tmp_path)
    stored = set_user_attr(study, "objective", "validation roc_auc", tmp_path)
    assert stored == "validation roc_auc"
    assert reload_study(tmp_path).user_attrs == {"objective": "validation roc_auc"}
    assert not (tmp_path / ATTRIBUTES_DIR).exists()


def test_a_value_at_the_limit_stays_inline_one_above_goes_to_a_file(tmp_path):
    study = sqlite_study(tmp_path)
    at_limit = "x" * (DEFAULT_LIMIT_CHARS - 2)  # two quotes make it the limit
    above = "x" * (DEFAULT_LIMIT_CHARS - 1)
    set_user_attr(study, "at", at_limit, tmp_path)
    set_user_attr(study, "above", above, tmp_path)
    stored = reload_study(tmp_path).user_attrs
    assert stored["at"] == at_limit
    assert is_reference(stored["above"])
    assert len(json.dumps(stored["above"])) < 200


def test_a_large_trial_value_goes_to_a_file_and_resolves_back(tmp_path):
    study = sqlite_study(tmp_path, name="big/curves é")

    def objective(trial):
        set_user_attr(trial, "validation_curve", HUGE_CURVE, tmp_path)
        set_user_attr(trial, "best_epoch", 3, tmp_path)
        return 0.5

    study.optimize(objective, n_trials=1)
    trial = reload_study(tmp_path, name="big/curves é").trials[0]
    reference = trial.user_attrs["validation_curve"]
    assert set(reference) == {"file", "sha256"}
    path = tmp_path / reference["file"]
    assert path.is_file()
    assert reference["file"].startswith(f"{ATTRIBUTES_DIR}/")
    assert "/trial-0/" in reference["file"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == reference["sha256"]
    assert resolve_user_attrs(trial.user_attrs, tmp_path) == {
        "validation_curve": HUGE_CURVE,
        "best_epoch": 3,
    }


def test_non_finite_numbers_survive_the_file_like_the_database(tmp_path):
    study = sqlite_study(tmp_path)
    value = {"scores": [float("nan"), float("inf")] * 600}
    reference = set_user_attr(study, "scores", value, tmp_path)
    back = resolve_attribute(reference, tmp_path)["scores"]
    assert math.isnan(back[0]) and back[1] == math.inf and len(back) == 1200


def test_study_names_that_differ_in_unsafe_characters_get_separate_files(tmp_path):
    first = sqlite_study(tmp_path, name="a/b")
    second = sqlite_study(tmp_path, name="a?b")
    one = set_user_attr(first, "curve", ["first"] * 500, tmp_path)
    two = set_user_attr(second, "curve", ["second"] * 500, tmp_path)
    assert one["file"] != two["file"]
    assert resolve_attribute(one, tmp_path)[0] == "first"
    assert resolve_attribute(two, tmp_path)[0] == "second"


def test_a_small_value_shaped_like_a_reference_is_not_mistaken_for_one(tmp_path):
    study = sqlite_study(tmp_path)
    lookalike = {"file": "../../etc/passwd", "sha256": "0" * 64}
    stored = set_user_attr(study, "note", lookalike, tmp_path)
    assert stored != lookalike
    assert resolve_attribute(stored, tmp_path) == lookalike


def test_a_changed_file_is_refused_naming_the_attribute(tmp_path):
    study = sqlite_study(tmp_path)
    reference = set_user_attr(study, "curve", HUGE_CURVE, tmp_path)
    (tmp_path / reference["file"]).write_text(json.dumps([0.0] * 10))
    with pytest.raises(StudyAttributeError, match=r"'curve'.*SHA-256"):
        resolve_attribute(reference, tmp_path, "curve")


def test_a_missing_file_names_its_path(tmp_path):
    study = sqlite_study(tmp_path)
    reference = set_user_attr(study, "curve", HUGE_CURVE, tmp_path)
    (tmp_path / reference["file"]).unlink()
    with pytest.raises(StudyAttributeError, match=r"curve.json, which does not exist"):
        resolve_attribute(reference, tmp_path, "curve")


@pytest.mark.parametrize(
    "relative", ["../outside.json", "/etc/passwd", "study_attributes/../../x.json"]
)
def test_a_reference_outside_the_run_folder_is_refused(tmp_path, relative):
    reference = {"file": relative, "sha256": "0" * 64}
    with pytest.raises(StudyAttributeError, match="outside the run folder"):
        resolve_attribute(reference, tmp_path / "run", "curve")


def test_a_symbolic_link_out_of_the_run_folder_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / ATTRIBUTES_DIR).mkdir(parents=True)
    secret = tmp_path / "elsewhere.json"
    secret.write_text("[1]")
    (run_dir / ATTRIBUTES_DIR / "link.json").symlink_to(secret)
    reference = {
        "file": f"{ATTRIBUTES_DIR}/link.json",
        "sha256": hashlib.sha256(b"[1]").hexdigest(),
    }
    with pytest.raises(StudyAttributeError, match="symbolic link"):
        resolve_attribute(reference, run_dir, "curve")


def test_a_value_that_is_not_json_is_refused_before_anything_is_written(tmp_path):
    study = sqlite_study(tmp_path)
    with pytest.raises(StudyAttributeError, match=r"'model'.*JSON values only"):
        set_user_attr(study, "model", object(), tmp_path)
    assert reload_study(tmp_path).user_attrs == {}


@pytest.mark.mysql
def test_mariadb_refuses_the_huge_value_inline_but_takes_the_reference(
    mysql_url, tmp_path
):
    with temporary_mysql_database(mysql_url, prefix="attributes_test") as url:
        storage = optuna.storages.RDBStorage(url)
        study = optuna.create_study(study_name="huge", storage=storage)
        trial = study.ask()
        # Without this module: the column limit makes the trial's own call fail.
        with pytest.raises(optuna.exceptions.StorageInternalError) as refused:
            trial.set_user_attr("validation_curve", HUGE_CURVE)
        assert isinstance(refused.value.__cause__, sqlalchemy.exc.DataError)
        assert "Data too long for column 'value_json'" in str(refused.value.__cause__)

        reference = set_user_attr(trial, "validation_curve", HUGE_CURVE, tmp_path)
        study.tell(trial, 0.5)
        stored = optuna.load_study(study_name="huge", storage=url).trials[0]
        assert stored.state == optuna.trial.TrialState.COMPLETE
        assert stored.user_attrs["validation_curve"] == reference
        resolved = resolve_user_attrs(stored.user_attrs, tmp_path)
        assert resolved["validation_curve"] == HUGE_CURVE
        storage.engine.dispose()
