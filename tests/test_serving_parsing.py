"""Request parsing, media types and server settings: pure functions, no model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lib.data import CATEGORICAL_COLUMNS, FEATURE_COLUMNS
from lib.serving import media
from lib.serving.parsing import (
    FLOAT32_LIMIT,
    RecordSchema,
    RequestError,
    parse_csv,
    parse_csv_exact,
    parse_csv_fast,
    parse_json,
)
from lib.serving.settings import ServingSettingsError, resolve_serving_settings

SCHEMA = RecordSchema(FEATURE_COLUMNS, frozenset(CATEGORICAL_COLUMNS))
LINE = (
    "25, Private, 226802, 11th, 7, Never-married, Machine-op-inspct, Own-child, "
    "Black, Male, 0, 0, 40, United-States"
)
OTHER_LINE = (
    "38, Private, 89814, HS-grad, 9, Married-civ-spouse, Farming-fishing, Husband, "
    "White, Male, 0, 0, 50, United-States"
)
RECORD = dict(
    zip(
        FEATURE_COLUMNS,
        [25, "Private", 226802, "11th", 7, "Never-married", "Machine-op-inspct"]
        + ["Own-child", "Black", "Male", 0, 0, 40, "United-States"],
        strict=True,
    )
)
CONTROL_CHARACTER_LINE = LINE.replace("Private", "Pri\x1fvate")
TEST_FILE = Path(__file__).resolve().parents[1] / "lib/data_files/adult.test.gz"


def csv_error(body: str) -> RequestError:
    with pytest.raises(RequestError) as caught:
        parse_csv(body.encode(), "utf-8", SCHEMA)
    return caught.value


def json_error(document) -> RequestError:
    body = document if isinstance(document, bytes) else json.dumps(document).encode()
    with pytest.raises(RequestError) as caught:
        parse_json(body, "utf-8", SCHEMA)
    return caught.value


def test_csv_line_becomes_typed_columns():
    parsed = parse_csv(LINE.encode(), "utf-8", SCHEMA)
    assert parsed.count == 1
    assert parsed.columns["age"].tolist() == [25.0]
    assert parsed.columns["fnlwgt"].dtype == np.float64
    assert parsed.columns["workclass"] == ["Private"]
    assert parsed.columns["native_country"] == ["United-States"]


@pytest.mark.parametrize(
    "body",
    [
        f"{LINE}\n{OTHER_LINE}",
        f"{LINE}\r\n{OTHER_LINE}\r\n",
        f"{LINE.replace(', ', ',')}\n{OTHER_LINE.replace(', ', ',')}\n",
        f"\n\n{LINE}\n   \n\n{OTHER_LINE}\n\n\n",
        f"\ufeff{LINE}\n{OTHER_LINE}",
        f"{LINE.replace(', ', ' ,  ')}\n{OTHER_LINE}\t\n",
    ],
    ids=["plain", "crlf", "no-spaces", "blank-lines", "byte-order-mark", "padding"],
)
def test_csv_layouts_parse_to_the_same_records(body):
    parsed = parse_csv(body.encode(), "utf-8", SCHEMA)
    assert parsed.count == 2
    assert parsed.columns["age"].tolist() == [25.0, 38.0]
    assert parsed.columns["education"] == ["11th", "HS-grad"]
    assert parsed.columns["hours_per_week"].tolist() == [40.0, 50.0]


def test_csv_question_mark_is_kept_for_the_encoder_as_missing():
    parsed = parse_csv(LINE.replace("Private", "?").encode(), "utf-8", SCHEMA)
    assert parsed.columns["workclass"] == ["?"]


def test_csv_unseen_category_is_not_an_error():
    parsed = parse_csv(LINE.replace("Private", "Astronaut").encode(), "utf-8", SCHEMA)
    assert parsed.columns["workclass"] == ["Astronaut"]


@pytest.mark.parametrize(
    ("body", "record", "field", "line", "message"),
    [
        ("", None, None, None, "body is empty"),
        ("\r\n \n\n", None, None, None, "body is empty"),
        (LINE.rsplit(",", 1)[0], 0, "native_country", 1, "13 values, expected 14"),
        (f"{LINE}, 3, 4", 0, "native_country", 1, "16 values, expected 14"),
        (f"{LINE}\n\n{LINE}, <=50K.", 1, "income", 3, "income label"),
        (f"{LINE}, >50K", 0, "income", 1, "income label"),
        (
            "age, workclass, fnlwgt, education, education-num, marital-status, "
            "occupation, relationship, race, sex, capital-gain, capital-loss, "
            f"hours-per-week, native-country\n{LINE}",
            0,
            "age",
            1,
            "header line",
        ),
        (
            ",".join(FEATURE_COLUMNS) + ",income\n" + LINE,
            0,
            "age",
            1,
            "header line",
        ),
        (
            f"{LINE}\n{LINE.replace('25', 'abc', 1)}",
            1,
            "age",
            2,
            "'abc' is not a number",
        ),
        (LINE.replace(" 40,", " forty,"), 0, "hours_per_week", 1, "is not a number"),
        (LINE.replace("25", "nan", 1), 0, "age", 1, "not a finite number"),
        (LINE.replace("25", "-inf", 1), 0, "age", 1, "not a finite number"),
        (LINE.replace("25", "1e999", 1), 0, "age", 1, "out of range"),
        (LINE.replace("226802", "4e38"), 0, "fnlwgt", 1, "out of range"),
        (LINE.replace("25", "?", 1), 0, "age", 1, "needs a number"),
        (LINE.replace("25", "", 1), 0, "age", 1, "empty"),
        (LINE.replace("25", "0x19", 1), 0, "age", 1, "is not a number"),
        (LINE.replace("25", "2_5", 1), 0, "age", 1, "is not a number"),
        (LINE.replace("Private", " "), 0, "workclass", 1, "write ? for a missing"),
    ],
)
def test_csv_errors_name_record_field_and_line(body, record, field, line, message):
    error = csv_error(body)
    assert message in error.message
    assert (error.record, error.field, error.line) == (record, field, line)
    answer = error.as_json()
    assert answer["record"] == record and answer["field"] == field


def test_csv_error_reports_the_first_bad_record_whatever_the_column():
    lines = [LINE] * 5
    lines[3] = LINE.replace("25", "x", 1)  # first column, later record
    lines[1] = LINE.replace(" 40,", " y,")  # later column, earlier record
    error = csv_error("\n".join(lines))
    assert (error.record, error.field) == (1, "hours_per_week")


def test_csv_record_numbers_skip_blank_lines_but_line_numbers_do_not():
    error = csv_error(f"{LINE}\n\n\n{LINE.replace('25', 'x', 1)}\n")
    assert (error.record, error.line) == (1, 4)


def test_csv_invalid_utf8_is_refused_with_the_offset():
    error = csv_error_bytes(LINE.encode() + b"\n\xff\xfe")
    assert "not valid utf-8" in error.message and "offset" in error.message


def csv_error_bytes(body: bytes) -> RequestError:
    with pytest.raises(RequestError) as caught:
        parse_csv(body, "utf-8", SCHEMA)
    return caught.value


def test_csv_other_charsets_are_decoded_as_declared():
    body = LINE.replace("Private", "Privé").encode("latin-1")
    parsed = parse_csv(body, "iso8859-1", SCHEMA)
    assert parsed.columns["workclass"] == ["Privé"]


@pytest.mark.parametrize(
    ("body", "charset"),
    [
        (b"\x00a\x00", "utf-16"),
        (b"xn--zz", "idna"),
        (b"abc-!!", "punycode"),
        (b"\\N{nope}", "unicode-escape"),
    ],
)
def test_bodies_that_the_declared_charset_cannot_decode_are_refused(body, charset):
    with pytest.raises(RequestError, match="decode|not valid"):
        parse_csv(body, charset, SCHEMA)


def adult_test_lines() -> list[str]:
    import gzip

    text = gzip.decompress(TEST_FILE.read_bytes()).decode()
    lines = [line for line in text.splitlines()[1:] if line.strip()]
    return [line.rsplit(",", 1)[0] for line in lines]


@pytest.mark.parametrize("line_end", ["\n", "\r\n"])
def test_csv_fast_path_agrees_with_the_exact_parser_on_the_test_file(line_end):
    body = (line_end.join(adult_test_lines()) + line_end * 3).encode()
    fast = parse_csv_fast(body, SCHEMA)
    exact = parse_csv_exact(body.decode(), SCHEMA)
    assert fast is not None, "the fast path refused a well-formed body"
    assert fast.count == exact.count == 16_281
    for name in FEATURE_COLUMNS:
        if name in CATEGORICAL_COLUMNS:
            assert fast.columns[name] == exact.columns[name], name
        else:
            np.testing.assert_array_equal(fast.columns[name], exact.columns[name])


@pytest.mark.parametrize(
    "body",
    [
        f"{LINE}\n\n{LINE}\n",
        f"{LINE}\n{LINE}, <=50K\n",
        f"{LINE}\n{LINE.replace('25', 'nan', 1)}\n",
        f"{LINE}\n{LINE.replace('25', '1e39', 1)}\n",
        f"{LINE}\n{LINE.replace('Private', '')}\n",
        f"{LINE}\n{CONTROL_CHARACTER_LINE}\n",
        f"{LINE}\r{LINE}\n",
        f"{LINE}\n" + '"a,b"' + LINE[2:] + "\n",
    ],
)
def test_csv_fast_path_leaves_every_doubtful_body_to_the_exact_parser(body):
    assert parse_csv_fast(body.encode(), SCHEMA) is None


def test_large_csv_bodies_with_an_error_still_name_the_record():
    lines = adult_test_lines()[:2000]
    lines[1500] = "abc" + lines[1500][lines[1500].index(",") :]
    with pytest.raises(RequestError) as caught:
        parse_csv("\n".join(lines).encode(), "utf-8", SCHEMA)
    error = caught.value
    assert (error.record, error.field, error.line) == (1500, "age", 1501)


def test_json_list_of_records_and_instances_forms_agree():
    as_list = parse_json(json.dumps([RECORD, RECORD]).encode(), "utf-8", SCHEMA)
    as_records = parse_json(
        json.dumps({"instances": [RECORD, RECORD]}).encode(), "utf-8", SCHEMA
    )
    values = list(RECORD.values())
    as_values = parse_json(
        json.dumps({"instances": [values, values]}).encode(), "utf-8", SCHEMA
    )
    for parsed in (as_list, as_records, as_values):
        assert parsed.count == 2
        assert parsed.columns["age"].tolist() == [25.0, 25.0]
        assert parsed.columns["relationship"] == ["Own-child", "Own-child"]


def test_json_null_category_is_missing_and_strings_are_stripped():
    record = {**RECORD, "occupation": None, "workclass": "  Private "}
    parsed = parse_json(json.dumps([record]).encode(), "utf-8", SCHEMA)
    assert parsed.columns["occupation"] == [None]
    assert parsed.columns["workclass"] == ["Private"]


@pytest.mark.parametrize(
    ("document", "record", "field", "message"),
    [
        (b"", None, None, "body is empty"),
        (b"[]", None, None, "list of records is empty"),
        ({"instances": []}, None, None, "list of records is empty"),
        (b"[1, 2", None, None, "not valid JSON"),
        (b"[" * 50_000 + b"]" * 50_000, None, None, "nested too deeply"),
        (b'{"instances": [], "extra": 1}', None, None, '{"instances": [...]}'),
        ({"instances": {"age": 3}}, None, None, "must be a list"),
        ("a string", None, None, "not a JSON string"),
        ([RECORD, 42], 1, None, "record 1 is a JSON number"),
        ([list(RECORD.values())[:13]], 0, "native_country", "13 values"),
        ([[*RECORD.values(), ">50K"]], 0, "income", "income label"),
        ([{**RECORD, "income": ">50K"}], 0, "income", "label field"),
        ([{**RECORD, "colour": "red"}], 0, "colour", "unknown field"),
        ([{k: v for k, v in RECORD.items() if k != "sex"}], 0, "sex", "missing"),
        ([{**RECORD, "age": "25"}], 0, "age", "expected a JSON number"),
        ([{**RECORD, "age": True}], 0, "age", "JSON boolean"),
        ([{**RECORD, "age": None}], 0, "age", "JSON null"),
        ([{**RECORD, "age": 10**400}], 0, "age", "out of range"),
        ([{**RECORD, "capital_gain": 1e39}], 0, "capital_gain", "out of range"),
        ([{**RECORD, "race": 3}], 0, "race", "expected a string"),
        ([{**RECORD, "race": ""}], 0, "race", "write ? for a missing"),
        ([RECORD, {**RECORD, "race": ["x"]}], 1, "race", "JSON array"),
    ],
)
def test_json_errors_name_record_and_field(document, record, field, message):
    error = json_error(document)
    assert message in error.message
    assert (error.record, error.field) == (record, field)


def test_json_unknown_field_suggests_the_column_name():
    record = {k: v for k, v in RECORD.items() if k != "education_num"}
    error = json_error([{**record, "education-num": 7}])
    assert "did you mean 'education_num'" in error.message


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_json_non_finite_constants_are_refused(constant):
    body = json.dumps([RECORD]).replace("25", constant.decode(), 1).encode()
    assert "not a finite number" in json_error(body).message


def test_json_numbers_overflowing_float64_are_refused():
    body = json.dumps([RECORD]).replace("25", "1e999", 1).encode()
    error = json_error(body)
    assert (error.record, error.field) == (0, "age")


def test_json_duplicate_keys_are_refused():
    body = json.dumps([RECORD])[:-2] + ', "age": 30}]'
    assert "appears twice" in json_error(body.encode()).message


def test_float32_limit_is_accepted_and_just_beyond_is_not():
    parsed = parse_json(
        json.dumps([{**RECORD, "fnlwgt": FLOAT32_LIMIT}]).encode(), "utf-8", SCHEMA
    )
    assert parsed.columns["fnlwgt"].tolist() == [FLOAT32_LIMIT]
    assert "out of range" in json_error([{**RECORD, "fnlwgt": 3.41e38}]).message


# --- media types ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("text/csv", "text/csv"),
        ("Text/CSV; charset=utf-8", "text/csv"),
        ("application/json", "application/json"),
        ("APPLICATION/JSON ;charset=UTF-8", "application/json"),
        ("text/plain", None),
        ("application/x-npy", None),
        ("text/csv/extra", None),
        ("csv", None),
        ("", None),
        (None, None),
    ],
)
def test_request_media_types_ignore_case_and_parameters(header, expected):
    found = media.request_media_type(header)
    assert (found.essence if found else None) == expected


@pytest.mark.parametrize(
    ("header", "codec"),
    [
        ("text/csv", "utf-8"),
        ("text/csv; charset=UTF-8", "utf-8"),
        ("text/csv; charset=latin-1", "iso8859-1"),
        ('text/csv; charset="us-ascii"', "ascii"),
        ("text/csv; charset=klingon", None),
        ("text/csv; charset=rot-13", None),
        ("text/csv; charset=base64", None),
        ("text/csv; charset=zlib", None),
        ("text/csv; charset=undefined", None),
    ],
)
def test_request_charset(header, codec):
    assert media.request_charset(media.request_media_type(header)) == codec


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, "application/json"),
        ("", "application/json"),
        ("*/*", "application/json"),
        ("application/json", "application/json"),
        ("text/csv", "text/csv"),
        ("TEXT/CSV; charset=utf-8", "text/csv"),
        ("text/*", "text/csv"),
        ("application/*", "application/json"),
        ("application/json;q=0.5, text/csv", "text/csv"),
        ("text/csv;q=0.2, */*;q=0.1", "text/csv"),
        ("text/csv;q=0, */*", "application/json"),
        ("application/json;q=0, */*;q=0.3", "text/csv"),
        ("application/xml", None),
        ("text/html, image/png", None),
        ("text/csv;q=0", None),
        ("text/csv;q=2", None),
        ("nonsense", None),
    ],
)
def test_accept_negotiation(accept, expected):
    assert media.choose_response_type(accept) == expected


# --- settings -------------------------------------------------------------------

DEFAULTS = {
    "port": 8080,
    "host": "127.0.0.1",
    "model_dir": "/opt/ml/model",
    "workers": None,
    "worker_class": "gthread",
    "threads": 4,
    "tf_threads": None,
    "timeout_seconds": 60,
    "max_body_bytes": 6291456,
    "predict_batch_size": 4096,
    "ready_wait_seconds": 60,
    "body_timeout_seconds": 10,
    "keepalive_seconds": 75,
    "log_level": "INFO",
}


def test_settings_defaults_follow_the_sagemaker_contract():
    settings = resolve_serving_settings(DEFAULTS, {})
    assert settings.port == 8080
    assert str(settings.model_dir) == "/opt/ml/model"
    assert settings.max_body_bytes == 6 * 1024 * 1024
    assert settings.workers >= 1 and settings.tf_threads >= 1


def test_yaml_defaults_match_the_documented_contract():
    from lib.config import load_settings

    serving = load_settings().serving
    assert resolve_serving_settings(dict(serving), {}) == resolve_serving_settings(
        DEFAULTS, {}
    )


def test_environment_variables_override_the_yaml():
    settings = resolve_serving_settings(
        DEFAULTS,
        {
            "SAGEMAKER_BIND_TO_PORT": "9090",
            "SM_MODEL_DIR": "/models/adult",
            "MODEL_SERVER_WORKERS": "3",
            "MODEL_SERVER_TF_THREADS": "2",
            "MODEL_SERVER_MAX_BODY_BYTES": "1000",
            "MODEL_SERVER_HOST": "0.0.0.0",
        },
    )
    assert (settings.port, str(settings.model_dir), settings.workers) == (
        9090,
        "/models/adult",
        3,
    )
    assert (settings.tf_threads, settings.max_body_bytes) == (2, 1000)
    assert settings.bind == "0.0.0.0:9090"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("SAGEMAKER_BIND_TO_PORT", "http", "whole number"),
        ("SAGEMAKER_BIND_TO_PORT", "70000", "between 1 and 65535"),
        ("MODEL_SERVER_WORKERS", "0", "at least 1"),
        ("MODEL_SERVER_MAX_BODY_BYTES", "-5", "at least 1"),
        ("MODEL_SERVER_READY_WAIT", "soon", "seconds"),
        ("MODEL_SERVER_LOG_LEVEL", "chatty", "one of"),
        ("MODEL_SERVER_WORKER_CLASS", "gevent", "gthread, sync"),
    ],
)
def test_bad_environment_values_are_refused_by_name(variable, value, message):
    with pytest.raises(ServingSettingsError, match=message) as caught:
        resolve_serving_settings(DEFAULTS, {variable: value})
    assert variable in str(caught.value)


# --- the OpenAPI description -------------------------------------------------------

OPENAPI_FILE = Path(__file__).resolve().parents[1] / "lib/serving/openapi.yaml"


def test_openapi_description_is_valid_and_its_examples_parse():
    import yaml
    from openapi_spec_validator import validate

    document = yaml.safe_load(OPENAPI_FILE.read_text())
    validate(document)
    body = document["paths"]["/invocations"]["post"]["requestBody"]["content"]
    csv_example = body["text/csv"]["example"].encode()
    json_example = json.dumps(body["application/json"]["example"]).encode()
    assert parse_csv(csv_example, "utf-8", SCHEMA).count == 2
    assert parse_json(json_example, "utf-8", SCHEMA).count == 2


def test_openapi_record_schema_lists_the_columns_in_order():
    import yaml

    document = yaml.safe_load(OPENAPI_FILE.read_text())
    record = document["components"]["schemas"]["Record"]
    assert record["required"] == list(FEATURE_COLUMNS)
    assert list(record["properties"]) == list(FEATURE_COLUMNS)
    numeric = {
        name
        for name, schema in record["properties"].items()
        if schema["$ref"].endswith("/Number")
    }
    assert numeric == set(FEATURE_COLUMNS) - set(CATEGORICAL_COLUMNS)
