"""Data contracts on the real UCI files, and the errors bad files must raise."""

import gzip
import json
from pathlib import Path

import polars as pl
import pytest
from omegaconf import OmegaConf

from lib import data

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "adult"


def packaged_bytes(name: str) -> bytes:
    from importlib import resources

    return gzip.decompress(
        resources.files("lib.data_files").joinpath(f"{name}.gz").read_bytes()
    )


def path_settings(folder: Path):
    return OmegaConf.create({"source": "path", "path": str(folder), "url": None})


@pytest.fixture(scope="module")
def parsed():
    frames, ledgers = data.load_adult(OmegaConf.create({"source": "packaged"}))
    return frames, ledgers


def test_record_counts_match_the_published_files(parsed):
    frames, ledgers = parsed
    assert frames["adult.data"].height == 32_561
    assert frames["adult.test"].height == 16_281
    assert ledgers["adult.data"].as_dict() == {
        "file": "adult.data",
        "lines_read": 32_562,
        "records_kept": 32_561,
        "dropped": {"blank line": 1},
    }
    assert ledgers["adult.test"].dropped == {"test file banner": 1, "blank line": 1}
    assert ledgers["adult.test"].lines_read == 16_283


def test_columns_have_the_declared_types(parsed):
    frame = parsed[0]["adult.data"]
    for column in data.INTEGER_COLUMNS:
        assert frame.schema[column] == pl.Int64
    for column in data.CATEGORICAL_COLUMNS:
        assert frame.schema[column] == pl.String
    assert frame.schema[data.LABEL_COLUMN] == pl.Int8
    assert frame["age"].min() == 17 and frame["age"].max() == 90


def test_no_vocabulary_entry_has_surrounding_whitespace(parsed):
    for frame in parsed[0].values():
        for column in data.CATEGORICAL_COLUMNS:
            values = frame[column].drop_nulls().unique().to_list()
            assert values, column
            assert all(v == v.strip() and v for v in values), column


def test_labels_are_exactly_the_two_classes_with_the_known_balance(parsed):
    train, test = parsed[0]["adult.data"], parsed[0]["adult.test"]
    # 7,841 of 32,561 training and 3,846 of 16,281 test records earn >50K.
    assert train[data.LABEL_COLUMN].sum() == 7_841
    assert test[data.LABEL_COLUMN].sum() == 3_846
    assert set(train[data.LABEL_COLUMN].unique()) == {0, 1}


def test_question_mark_is_a_missing_category_not_a_value(parsed):
    train = parsed[0]["adult.data"]
    assert train["workclass"].null_count() == 1_836
    assert train["occupation"].null_count() == 1_843
    assert train["native_country"].null_count() == 583
    for column in data.CATEGORICAL_COLUMNS:
        assert "?" not in train[column].drop_nulls().to_list()


def test_split_is_stratified_seeded_and_loses_no_row(prepared_run_dir):
    prepared = data.read_prepared(prepared_run_dir)
    assert prepared.train.height + prepared.validation.height == 32_561
    assert prepared.test.height == 16_281
    lines = pl.concat([prepared.train, prepared.validation])["source_line"]
    assert lines.n_unique() == 32_561
    shares = [
        f[data.LABEL_COLUMN].mean() for f in (prepared.train, prepared.validation)
    ]
    assert abs(shares[0] - shares[1]) < 0.001
    again_train, again_val = data.stratified_split(
        pl.concat([prepared.train, prepared.validation]).sort("source_line"), 0.2, 42
    )
    assert sorted(again_val["source_line"].to_list()) == sorted(
        prepared.validation["source_line"].to_list()
    )
    ledger = json.loads((prepared_run_dir / "data" / "row_ledger.json").read_text())
    assert ledger["split"] == {"train": 26_049, "validation": 6_512, "test": 16_281}


def test_packaged_files_equal_the_shared_originals():
    if not SHARED_DATA.is_dir():
        pytest.skip("the shared copy of the UCI files is not beside the repository")
    for name in data.DATA_FILES:
        assert packaged_bytes(name) == (SHARED_DATA / name).read_bytes(), name


def test_a_configured_path_is_verified_the_same_way(tmp_path):
    for name in ("adult.data", "adult.test"):
        (tmp_path / name).write_bytes(packaged_bytes(name))
    frames, _ = data.load_adult(path_settings(tmp_path))
    assert frames["adult.test"].height == 16_281


def test_a_corrupted_file_is_rejected_by_its_checksum(tmp_path):
    content = bytearray(packaged_bytes("adult.data"))
    content[100:103] = b"999"
    (tmp_path / "adult.data").write_bytes(bytes(content))
    with pytest.raises(data.DataError, match=r"adult\.data: SHA-256 .* does not match"):
        data.read_raw_file("adult.data", path_settings(tmp_path))


def test_a_missing_file_names_its_path(tmp_path):
    with pytest.raises(data.DataError, match=r"adult\.test: file not found"):
        data.read_raw_file("adult.test", path_settings(tmp_path))


GOOD_LINE = (
    "39, State-gov, 77516, Bachelors, 13, Never-married, Adm-clerical, "
    "Not-in-family, White, Male, 2174, 0, 40, United-States, <=50K"
)


@pytest.mark.parametrize(
    ("text", "name", "message"),
    [
        (
            GOOD_LINE + "\n" + GOOD_LINE.replace("39,", "thirty,", 1) + "\n",
            "adult.data",
            r"adult\.data, line 2, column 'age': 'thirty' is not an integer",
        ),
        (
            GOOD_LINE + "\n" + GOOD_LINE.rsplit(",", 2)[0] + "\n",
            "adult.data",
            r"adult\.data, line 2: 13 fields, expected 15",
        ),
        (GOOD_LINE + ", extra\n", "adult.data", r"line 1: 16 fields, expected 15"),
        (
            GOOD_LINE.replace("<=50K", "maybe") + "\n",
            "adult.data",
            r"line 1, column 'income': label 'maybe' is not one of",
        ),
        ("", "adult.data", r"adult\.data: the file is empty"),
        ("\n\n", "adult.data", r"adult\.data: the file is empty"),
        (GOOD_LINE + ".\n", "adult.test", r"adult\.test, line 1: expected the banner"),
    ],
    ids=[
        "non-numeric age",
        "too few fields",
        "too many fields",
        "unexpected label",
        "empty file",
        "only blank lines",
        "test file without banner",
    ],
)
def test_malformed_content_stops_with_file_line_and_column(text, name, message):
    with pytest.raises(data.DataError, match=message):
        data.parse_adult(text.encode(), name)


def test_test_file_labels_lose_their_trailing_dot():
    text = "|1x3 Cross validator\n" + GOOD_LINE.replace("<=50K", ">50K.") + "\n\n"
    frame, ledger = data.parse_adult(text.encode(), "adult.test")
    assert frame[data.LABEL_COLUMN].to_list() == [1]
    assert ledger.as_dict()["dropped"] == {"test file banner": 1, "blank line": 1}


def test_read_prepared_refuses_a_folder_without_a_ledger(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.parquet").write_bytes(b"")
    with pytest.raises(data.DataError, match="row_ledger.json is missing"):
        data.read_prepared(tmp_path)
