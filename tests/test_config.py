"""Settings composition and the checks on notebook parameters."""

import pytest

from lib.config import SettingsError, format_override, load_settings
from lib.notebook import collect_parameters, settings_from_parameters

DECLARED = {
    "MODE": "local",
    "RUN_DIR": "",
    "BUDGET": "small",
    "STUDY_NAME": "adult-tabtransformer",
    "OVERRIDES": [],
    "DRY_RUN": False,
}


def test_groups_compose_and_overrides_apply():
    settings = load_settings(["budget=small", "tf_keras.batch_size=128", "seed=3"])
    assert settings.budget.n_trials == 2
    assert settings.tf_keras.batch_size == 128
    assert settings.study.sampler_seed == 3  # interpolated from seed


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["budget=huge"], "cannot apply overrides"),
        (["no_such_key=1"], "cannot apply overrides"),
        (["mode=cloud"], "mode must be one of"),
        (["data.fnlwgt=maybe"], "data.fnlwgt must be"),
        (["threshold.policy=coin"], "threshold.policy must be"),
    ],
)
def test_bad_settings_are_refused_with_their_name(overrides, message):
    with pytest.raises(SettingsError, match=message):
        load_settings(overrides)


def test_a_numeric_study_name_stays_text():
    parameters = collect_parameters({**DECLARED, "STUDY_NAME": 2024})
    assert parameters["STUDY_NAME"] == "2024"
    assert settings_from_parameters(parameters).study.name == "2024"


def test_overrides_may_arrive_as_yaml_text():
    parameters = collect_parameters(
        {**DECLARED, "OVERRIDES": "['tf_keras.batch_size=64', 'seed=5']"}
    )
    settings = settings_from_parameters(parameters)
    assert settings.tf_keras.batch_size == 64 and settings.seed == 5


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"N_TRAILS": 5}, r"unknown notebook parameter\(s\) \['N_TRAILS'\]"),
        ({"DRY_RUN": "yes"}, "DRY_RUN .* must be True or False"),
        ({"OVERRIDES": [1, 2]}, "OVERRIDES .* must be a list of strings"),
        ({"MODE": ["local"]}, "MODE .* must be text"),
    ],
)
def test_bad_notebook_parameters_name_the_parameter(change, message):
    with pytest.raises(SettingsError, match=message):
        collect_parameters({**DECLARED, **change})


@pytest.mark.parametrize(
    "value", ["2024", "it's", "a=b", [1, "x"], {"a": [1, 2]}, True, None, 0.5]
)
def test_format_override_round_trips_through_hydra(value):
    settings = load_settings([format_override("+probe", value)])
    from omegaconf import OmegaConf

    assert OmegaConf.to_container(settings)["probe"] == value


def test_a_password_in_a_refused_override_is_not_repeated():
    with pytest.raises(SettingsError) as caught:
        load_settings(["study.storag=mysql+pymysql://user:hunter2@db:3306/optuna"])
    assert "hunter2" not in str(caught.value)
    assert "user:***@db" in str(caught.value)
    assert caught.value.__cause__ is None
