"""Request bodies into validated feature columns, or an error naming record and field.

Two body types are read:

- ``text/csv``: no header, one record per line, the feature columns in the
  published Adult order (a line of ``adult.test`` without its label). Spaces after
  commas, ``\\r\\n`` line ends, a trailing newline, blank lines and a leading byte
  order mark are accepted; there is no quoting (no Adult value holds a comma).
- ``application/json``: a list of records, or ``{"instances": [...]}``; each
  record is an object keyed by column name or a list of the values in column order.

A categorical value is a string (``?`` means missing; JSON ``null`` too); an unseen
one is left to the encoder's out-of-vocabulary bucket. A numeric value is a plain
decimal number (a JSON number in JSON), finite and within the float32 range the
model computes in. Anything else is a ``RequestError``: no value is guessed.

Records are counted from 0, in the order of the answer. Columns are checked whole
first (cheap); only a column that fails is walked value by value to find the first
bad record, which is then described field by field.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

MISSING = "?"
LABEL_VALUES = frozenset({"<=50K", ">50K", "<=50K.", ">50K."})
LABEL_FIELD = "income"
# Names a client may use for the label in a JSON record; all are refused the same.
LABEL_FIELD_NAMES = frozenset({LABEL_FIELD, "label", "income_over_50k", "target"})
FLOAT32_LIMIT = float(np.finfo(np.float32).max)
BYTE_ORDER_MARK = b"\xef\xbb\xbf"
# Below this size the plain Python parser is faster than setting up polars.
POLARS_MIN_BYTES = 16 * 1024
_NUMBER = r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
_NUMBER_PATTERN = re.compile(_NUMBER)
_NUMBER_COLUMN_PATTERN = re.compile(f"(?:{_NUMBER}\n)*")
# Bytes the fast path leaves to the exact parser: anything but printable ASCII and
# line ends, where Python's and polars' ideas of whitespace and lines could differ.
_UNUSUAL_BYTES = re.compile(rb"[^\x20-\x7e\r\n]|\r(?!\n)")


class RequestError(ValueError):
    """A request the server refuses with 400; it says which record and field."""

    def __init__(
        self,
        message: str,
        *,
        record: int | None = None,
        field: str | None = None,
        line: int | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.record = record
        self.field = field
        self.line = line

    def as_json(self) -> dict:
        answer = {"error": self.message, "record": self.record, "field": self.field}
        if self.line is not None:
            answer["line"] = self.line
        return answer


@dataclass(frozen=True)
class RecordSchema:
    """The columns a request carries, in order, and which of them are categorical."""

    feature_columns: tuple[str, ...]
    categorical_columns: frozenset[str]

    @classmethod
    def from_artifact(cls, artifact) -> RecordSchema:
        # Every feature column that is not categorical is a number in the request,
        # even one the model does not read (fnlwgt when it is dropped).
        return cls(
            tuple(artifact.feature_columns), frozenset(artifact.categorical_columns)
        )

    def is_numeric(self, column: str) -> bool:
        return column not in self.categorical_columns

    def describe_columns(self) -> str:
        return ", ".join(self.feature_columns)


@dataclass
class ParsedRecords:
    """Validated columns: numbers as float64 arrays, categories as lists of str/None."""

    columns: dict[str, np.ndarray | list]
    count: int


def decode_body(body: bytes, charset: str) -> str:
    """Decode the body, dropping a leading UTF-8 byte order mark."""
    if charset == "utf-8" and body.startswith(BYTE_ORDER_MARK):
        body = body[len(BYTE_ORDER_MARK) :]
    try:
        return body.decode(charset)
    except UnicodeDecodeError as error:
        raise RequestError(
            f"the body is not valid {charset}: byte {body[error.start]:#04x} at "
            f"offset {error.start}; send UTF-8 text"
        ) from error
    except (UnicodeError, ValueError) as error:  # codecs such as idna or punycode
        raise RequestError(
            f"the body cannot be decoded as {charset} ({error}); send UTF-8 text"
        ) from error


def empty_body_error() -> RequestError:
    return RequestError(
        "the body is empty: send one or more records (text/csv: one per line; "
        'application/json: a list, or {"instances": [...]})'
    )


# --- text/csv -------------------------------------------------------------------


def parse_csv(body: bytes, charset: str, schema: RecordSchema) -> ParsedRecords:
    """Parse a CSV body; large well-formed bodies take a vectorised fast path."""
    if not body.strip():
        raise empty_body_error()
    if len(body) >= POLARS_MIN_BYTES and charset == "utf-8":
        parsed = parse_csv_fast(body, schema)
        if parsed is not None:
            return parsed
    return parse_csv_exact(decode_body(body, charset), schema)


def parse_csv_exact(text: str, schema: RecordSchema) -> ParsedRecords:
    """The reference CSV parser: accepts exactly the contract, explains every error."""
    rows, line_numbers = [], []
    for line_number, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            rows.append(line.split(","))
            line_numbers.append(line_number)
    if not rows:
        raise empty_body_error()
    width = len(schema.feature_columns)
    for index, fields in enumerate(rows):
        if len(fields) != width:
            raise _csv_shape_error(fields, index, line_numbers[index], schema)

    columns, first_bad = {}, []
    for position, name in enumerate(schema.feature_columns):
        values = [fields[position].strip() for fields in rows]
        if schema.is_numeric(name):
            numbers, bad = _csv_numbers(values)
            columns[name] = numbers
        else:
            columns[name] = values
            bad = _first_index(values, lambda value: value == "")
        if bad is not None:
            first_bad.append(bad)
    if first_bad:
        index = min(first_bad)
        raise _csv_record_error(rows[index], index, line_numbers[index], schema)
    return ParsedRecords(columns, len(rows))


def parse_csv_fast(body: bytes, schema: RecordSchema) -> ParsedRecords | None:
    """Parse a well-formed CSV body with polars; None sends it to the exact parser.

    It accepts nothing the exact parser refuses: any doubt (a ragged or blank line,
    an empty field, a number outside the grammar or range) returns None.
    """
    import polars as pl

    if body.startswith(BYTE_ORDER_MARK):
        body = body[len(BYTE_ORDER_MARK) :]
    # Trailing blank lines are common (the Adult files end so) and harmless.
    body = body.rstrip(b" \r\n")
    if _UNUSUAL_BYTES.search(body):
        return None
    names = list(schema.feature_columns)
    try:
        frame = pl.read_csv(
            io.BytesIO(body),
            has_header=False,
            new_columns=names,
            schema={name: pl.String for name in names},
            infer_schema=False,
            quote_char=None,
        )
    except Exception:  # noqa: BLE001 - polars raises many kinds; the exact parser explains
        return None
    frame = frame.select(pl.all().str.strip_chars())
    numeric = [name for name in names if schema.is_numeric(name)]
    checks = frame.select(
        pl.any_horizontal(pl.all().is_null()).any().alias("null"),
        pl.any_horizontal(pl.all() == "").any().alias("empty"),
        pl.all_horizontal(pl.col(numeric).str.contains(f"^{_NUMBER}$"))
        .all()
        .alias("numbers"),
    ).row(0, named=True)
    if checks["null"] or checks["empty"] or not checks["numbers"]:
        return None
    numbers = frame.select(pl.col(numeric).cast(pl.Float64))
    within_range = numbers.select(
        pl.all_horizontal(pl.all().abs() <= FLOAT32_LIMIT).all()
    ).item()
    if not within_range:
        return None
    columns = {
        name: numbers[name].to_numpy() if name in numbers else frame[name].to_list()
        for name in names
    }
    return ParsedRecords(columns, frame.height)


def _csv_numbers(values: list[str]) -> tuple[np.ndarray, int | None]:
    """Convert a column; also return the index of its first invalid value, if any."""
    if _NUMBER_COLUMN_PATTERN.fullmatch("\n".join(values) + "\n") is None:
        return np.zeros(0), _first_index(
            values, lambda value: _NUMBER_PATTERN.fullmatch(value) is None
        )
    numbers = np.fromiter(map(float, values), dtype=np.float64, count=len(values))
    out_of_range = np.flatnonzero(~(np.abs(numbers) <= FLOAT32_LIMIT))
    return numbers, int(out_of_range[0]) if out_of_range.size else None


def _csv_shape_error(
    fields: list[str], index: int, line: int, schema: RecordSchema
) -> RequestError:
    where = f"record {index} (line {line})"
    width = len(schema.feature_columns)
    if _looks_like_header(fields, schema):
        return _header_error(where, index, line, schema)
    if len(fields) == width + 1 and fields[-1].strip() in LABEL_VALUES:
        return _label_error(where, fields[-1].strip(), index, line)
    return _width_error(where, len(fields), index, line, schema)


def _csv_record_error(
    fields: list[str], index: int, line: int, schema: RecordSchema
) -> RequestError:
    where = f"record {index} (line {line})"
    if _looks_like_header(fields, schema):
        return _header_error(where, index, line, schema)
    for name, raw in zip(schema.feature_columns, fields, strict=True):
        value = raw.strip()
        problem = (
            _csv_number_problem(value, name)
            if schema.is_numeric(name)
            else _category_text_problem(value)
        )
        if problem:
            return RequestError(
                f"{where}, field {name!r}: {problem}",
                record=index,
                field=name,
                line=line,
            )
    raise AssertionError(f"{where} was flagged but no field is wrong")


def _csv_number_problem(value: str, name: str) -> str | None:
    if value == "":
        return f"the value is empty; {name} needs a number"
    if value == MISSING:
        return f"'?' (missing) is not allowed: {name} needs a number"
    if _NUMBER_PATTERN.fullmatch(value) is None:
        if _is_non_finite_word(value):
            return f"{value!r} is not a finite number"
        return f"{_shorten(value)!r} is not a number"
    return _range_problem(float(value), value)


def _category_text_problem(value: str) -> str | None:
    if value == "":
        return "the value is empty; write ? for a missing value"
    return None


# --- application/json -----------------------------------------------------------


def parse_json(body: bytes, charset: str, schema: RecordSchema) -> ParsedRecords:
    """Parse a JSON body: a list of records or ``{"instances": [...]}``."""
    text = decode_body(body, charset)
    if not text.strip():
        raise empty_body_error()
    try:
        document = json.loads(
            text, parse_constant=_refuse_constant, object_pairs_hook=_unique_keys
        )
    except RequestError:
        raise
    except json.JSONDecodeError as error:
        raise RequestError(
            f"the body is not valid JSON: {error.msg} (line {error.lineno}, "
            f"column {error.colno})"
        ) from error
    except RecursionError as error:
        raise RequestError("the JSON body is nested too deeply") from error
    except ValueError as error:  # an integer with more digits than Python reads
        reason = str(error).split(":")[0]
        raise RequestError(f"the JSON body cannot be read: {reason}") from error
    records = _json_record_list(document)
    rows = [
        _json_record_values(record, index, schema)
        for index, record in enumerate(records)
    ]
    columns, first_bad = {}, []
    for position, name in enumerate(schema.feature_columns):
        values = [row[position] for row in rows]
        if schema.is_numeric(name):
            numbers, bad = _json_numbers(values)
            columns[name] = numbers
        else:
            strings, bad = _json_categories(values)
            columns[name] = strings
        if bad is not None:
            first_bad.append(bad)
    if first_bad:
        index = min(first_bad)
        raise _json_record_error(rows[index], index, schema)
    return ParsedRecords(columns, len(rows))


def _refuse_constant(name: str):
    raise RequestError(f"{name} is not a finite number; JSON numbers must be finite")


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    record = dict(pairs)
    if len(record) != len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise RequestError(f"key {key!r} appears twice in one JSON object")
            seen.add(key)
    return record


def _json_record_list(document) -> list:
    if isinstance(document, dict):
        if set(document) != {"instances"}:
            keys = ", ".join(repr(key) for key in list(document)[:5]) or "none"
            raise RequestError(
                'a JSON object body must be {"instances": [...]} and nothing else; '
                f"its keys are {keys}"
            )
        document = document["instances"]
        if not isinstance(document, list):
            raise RequestError(
                f'"instances" must be a list of records, not a JSON {_kind(document)}'
            )
    elif not isinstance(document, list):
        raise RequestError(
            'the JSON body must be a list of records or {"instances": [...]}, '
            f"not a JSON {_kind(document)}"
        )
    if not document:
        raise RequestError("the list of records is empty: send at least one record")
    return document


def _json_record_values(record, index: int, schema: RecordSchema) -> list:
    where = f"record {index}"
    width = len(schema.feature_columns)
    if isinstance(record, dict):
        if record.keys() == set(schema.feature_columns):
            return [record[name] for name in schema.feature_columns]
        raise _json_keys_error(record, index, schema)
    if isinstance(record, list):
        if len(record) == width:
            return record
        last = record[-1] if record else None
        if len(record) == width + 1 and isinstance(last, str):
            if last.strip() in LABEL_VALUES:
                raise _label_error(where, last.strip(), index, None)
        raise _width_error(where, len(record), index, None, schema)
    raise RequestError(
        f"{where} is a JSON {_kind(record)}; expected an object keyed by column "
        f"name or a list of {width} values ({schema.describe_columns()})",
        record=index,
    )


def _json_keys_error(record: dict, index: int, schema: RecordSchema) -> RequestError:
    where = f"record {index}"
    expected = set(schema.feature_columns)
    for key in record:
        if key in expected:
            continue
        if key in LABEL_FIELD_NAMES:
            return RequestError(
                f"{where} has the label field {key!r}; send the feature columns only, "
                "without the label",
                record=index,
                field=key,
            )
        hint = _similar_column(key, schema)
        advice = f" (did you mean {hint!r}?)" if hint else ""
        return RequestError(
            f"{where}: unknown field {_shorten(key)!r}{advice}; the fields are "
            f"{schema.describe_columns()}",
            record=index,
            field=key,
        )
    missing = [name for name in schema.feature_columns if name not in record]
    return RequestError(
        f"{where}: field {missing[0]!r} is missing ({len(missing)} of "
        f"{len(schema.feature_columns)} absent); give every column, with null or '?' "
        "for a missing category",
        record=index,
        field=missing[0],
    )


def _json_numbers(values: list) -> tuple[np.ndarray, int | None]:
    if not set(map(type, values)) <= {int, float}:
        return np.zeros(0), _first_index(values, lambda v: type(v) not in (int, float))
    try:
        numbers = np.array(values, dtype=np.float64)
    except OverflowError:  # an integer beyond float64
        return np.zeros(0), _first_index(values, _overflows_float)
    out_of_range = np.flatnonzero(~(np.abs(numbers) <= FLOAT32_LIMIT))
    return numbers, int(out_of_range[0]) if out_of_range.size else None


def _json_categories(values: list) -> tuple[list, int | None]:
    if not set(map(type, values)) <= {str, type(None)}:
        return [], _first_index(values, lambda v: v is not None and type(v) is not str)
    stripped = [None if value is None else value.strip() for value in values]
    return stripped, _first_index(stripped, lambda value: value == "")


def _json_record_error(values: list, index: int, schema: RecordSchema) -> RequestError:
    for name, value in zip(schema.feature_columns, values, strict=True):
        if schema.is_numeric(name):
            problem = _json_number_problem(value, name)
        elif value is not None and type(value) is not str:
            problem = (
                f"expected a string (or null for missing), got a JSON {_kind(value)}"
            )
        else:
            problem = None if value is None else _category_text_problem(value.strip())
        if problem:
            return RequestError(
                f"record {index}, field {name!r}: {problem}", record=index, field=name
            )
    raise AssertionError(f"record {index} was flagged but no field is wrong")


def _json_number_problem(value, name: str) -> str | None:
    if type(value) not in (int, float):
        if isinstance(value, str):
            return f"expected a JSON number, got the string {_shorten(value)!r}"
        return f"expected a JSON number, got a JSON {_kind(value)}"
    if _overflows_float(value):
        return (
            f"{_shorten(str(value))} is out of range: the model computes in "
            "float32, numbers must be within ±3.4e38"
        )
    return _range_problem(float(value), repr(value))


def _overflows_float(value) -> bool:
    try:
        float(value)
    except OverflowError:
        return True
    return False


# --- shared ---------------------------------------------------------------------


def _range_problem(number: float, shown: str) -> str | None:
    if not abs(number) <= FLOAT32_LIMIT:  # infinity and NaN included
        return (
            f"{_shorten(shown)} is out of range: the model computes in float32, "
            "numbers must be within ±3.4e38"
        )
    return None


def _looks_like_header(fields: Sequence, schema: RecordSchema) -> bool:
    names = {*schema.feature_columns, LABEL_FIELD}
    normalised = {
        str(value).strip().lower().replace("-", "_").replace(" ", "_")
        for value in fields
    }
    return len(normalised & names) >= 3


def _header_error(
    where: str, index: int, line: int | None, schema: RecordSchema
) -> RequestError:
    return RequestError(
        f"{where} is a header line; send records only, without a header "
        f"(the columns are, in order: {schema.describe_columns()})",
        record=index,
        field=schema.feature_columns[0],
        line=line,
    )


def _label_error(where: str, value: str, index: int, line: int | None) -> RequestError:
    return RequestError(
        f"{where} ends with the income label ({value!r}); send the feature columns "
        "only, without the label",
        record=index,
        field=LABEL_FIELD,
        line=line,
    )


def _width_error(
    where: str, count: int, index: int, line: int | None, schema: RecordSchema
) -> RequestError:
    width = len(schema.feature_columns)
    if count < width:
        field = schema.feature_columns[count]
        detail = f"it ends before {field!r}"
    else:
        field = schema.feature_columns[-1]
        detail = f"{count - width} more after {field!r}, the last column"
    return RequestError(
        f"{where} has {count} values, expected {width} ({detail}); the columns are, "
        f"in order: {schema.describe_columns()}",
        record=index,
        field=field,
        line=line,
    )


def _similar_column(key: str, schema: RecordSchema) -> str | None:
    normalised = key.strip().lower().replace("-", "_").replace(" ", "_")
    return normalised if normalised in schema.feature_columns else None


def _is_non_finite_word(value: str) -> bool:
    return value.lower().lstrip("+-") in {"nan", "inf", "infinity"}


def _first_index(values: Sequence, is_bad: Callable[[object], bool]) -> int | None:
    return next((index for index, value in enumerate(values) if is_bad(value)), None)


def _kind(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _shorten(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
