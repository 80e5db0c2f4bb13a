"""The artifact carries everything to score a raw record, in a fresh process too."""

import json
import subprocess
import sys

import numpy as np
import pytest

from lib.artifact import ArtifactError, load_artifact
from lib.data import read_prepared

SCORE_IN_FRESH_PROCESS = """
import sys, numpy as np, polars as pl
from lib.artifact import load_artifact
artifact = load_artifact(sys.argv[1])
frame = pl.read_parquet(sys.argv[2])
np.save(sys.argv[3], artifact.predict_frame(frame))
"""


def test_fresh_process_gives_the_same_probabilities(
    trained_artifact_dir, prepared_run_dir, tmp_path
):
    artifact = load_artifact(trained_artifact_dir)
    test = read_prepared(prepared_run_dir).test.head(2000)
    before = artifact.predict_frame(test)
    frame_path, output = tmp_path / "rows.parquet", tmp_path / "scores.npy"
    test.write_parquet(frame_path)
    subprocess.run(
        [
            sys.executable,
            "-c",
            SCORE_IN_FRESH_PROCESS,
            str(trained_artifact_dir),
            str(frame_path),
            str(output),
        ],
        check=True,
        capture_output=True,
    )
    after = np.load(output)
    assert after.shape == (2000,)
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-6)
    # Keras' own predict agrees too, though not to the last bits: it batches rows
    # differently, and float32 kernels round differently for other batch shapes.
    keras_scores = artifact.model.predict(
        artifact.encoder.encode_frame(test), verbose=0
    ).reshape(-1)
    np.testing.assert_allclose(keras_scores, before, rtol=0, atol=1e-4)


def test_manifest_records_what_scoring_needs(trained_artifact_dir):
    artifact = load_artifact(trained_artifact_dir)
    assert artifact.threshold == 0.4
    assert artifact.feature_columns[0] == "age" and len(artifact.feature_columns) == 14
    versions = artifact.metadata["library_versions"]
    assert {"tensorflow", "keras", "python"} <= versions.keys()
    preprocessing = json.loads(
        (trained_artifact_dir / "preprocessing.json").read_text()
    )
    assert "Private" in preprocessing["vocabularies"]["workclass"]
    assert set(preprocessing["numeric_means"]) == set(artifact.numeric_columns)


def test_raw_records_with_spaces_and_unseen_values_are_scored(trained_artifact_dir):
    artifact = load_artifact(trained_artifact_dir)
    record = {
        "age": [39.0],
        "workclass": [" State-gov "],
        "fnlwgt": [77516.0],
        "education": ["Bachelors"],
        "education_num": [13.0],
        "marital_status": ["Never-married"],
        "occupation": ["Adm-clerical"],
        "relationship": ["Not-in-family"],
        "race": ["White"],
        "sex": ["Male"],
        "capital_gain": [2174.0],
        "capital_loss": [0.0],
        "hours_per_week": [40.0],
        "native_country": ["Atlantis"],
    }
    probability = artifact.predict_proba(record)
    assert probability.shape == (1,) and 0.0 < probability[0] < 1.0


def copy_artifact(source, destination):
    import shutil

    shutil.copytree(source, destination)
    return destination


def test_a_corrupt_model_file_is_refused(trained_artifact_dir, tmp_path):
    broken = copy_artifact(trained_artifact_dir, tmp_path / "model")
    (broken / "model.keras").write_bytes(b"not a model")
    with pytest.raises(ArtifactError, match="model.keras: checksum mismatch"):
        load_artifact(broken)


def test_a_folder_without_manifest_is_refused(trained_artifact_dir, tmp_path):
    broken = copy_artifact(trained_artifact_dir, tmp_path / "model")
    (broken / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match="not a complete model artifact"):
        load_artifact(broken)


def test_preprocessing_that_does_not_fit_the_model_is_refused(
    trained_artifact_dir, tmp_path
):
    import hashlib

    broken = copy_artifact(trained_artifact_dir, tmp_path / "model")
    preprocessing = json.loads((broken / "preprocessing.json").read_text())
    preprocessing["numeric_columns"].append("fnlwgt")
    preprocessing["numeric_means"]["fnlwgt"] = 0.0
    preprocessing["numeric_stds"]["fnlwgt"] = 1.0
    content = json.dumps(preprocessing).encode()
    (broken / "preprocessing.json").write_bytes(content)
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["checksums"]["preprocessing.json"] = hashlib.sha256(content).hexdigest()
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="the model expects inputs"):
        load_artifact(broken)
