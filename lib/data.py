"""Load, verify and parse the UCI Adult files; account for every row; split.

The files are read exactly as published: ``", "`` separators, ``?`` for a missing
value, a banner first line in ``adult.test``, labels with a trailing ``.`` in the
test file and blank lines at the end. Every line read is either kept as a record or
dropped with a named reason, and the counts are written to a row ledger.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import polars as pl

logger = logging.getLogger(__name__)

FEATURE_COLUMNS = (
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education_num",
    "marital_status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital_gain",
    "capital_loss",
    "hours_per_week",
    "native_country",
)
INTEGER_COLUMNS = (
    "age",
    "fnlwgt",
    "education_num",
    "capital_gain",
    "capital_loss",
    "hours_per_week",
)
CATEGORICAL_COLUMNS = tuple(c for c in FEATURE_COLUMNS if c not in INTEGER_COLUMNS)
RAW_LABEL_COLUMN = "income"
LABEL_COLUMN = "income_over_50k"
LINE_COLUMN = "source_line"
LABELS = ("<=50K", ">50K")
MISSING = "?"
TRAIN_FILE = "adult.data"
TEST_FILE = "adult.test"
TEST_BANNER = "|1x3 Cross validator"
DATA_FILES = (TRAIN_FILE, TEST_FILE, "adult.names")
# Each file as published: records expected, for the sanity line in the log.
PUBLISHED_RECORDS = {TRAIN_FILE: 32_561, TEST_FILE: 16_281}


class DataError(ValueError):
    """An input file is missing, altered or malformed; the message says where."""


@dataclass
class FileLedger:
    """What happened to every line of one raw file."""

    file: str
    lines_read: int = 0
    records_kept: int = 0
    dropped: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict:
        return {
            "file": self.file,
            "lines_read": self.lines_read,
            "records_kept": self.records_kept,
            "dropped": dict(self.dropped),
        }


def packaged_checksums() -> dict[str, str]:
    """SHA-256 of the published files, shipped with the package."""
    text = resources.files("lib.data_files").joinpath("SHA256SUMS").read_text()
    sums = {}
    for line in text.splitlines():
        if line.strip():
            digest, name = line.split()
            sums[name.lstrip("*")] = digest
    return sums


def read_raw_file(name: str, data_settings, cache_dir: Path | None = None) -> bytes:
    """Return the bytes of one UCI file from the configured source, verified."""
    content, origin = fetch_raw_file(name, data_settings, cache_dir)
    verify_checksum(name, content, origin)
    return content


def fetch_raw_file(
    name: str, data_settings, cache_dir: Path | None = None
) -> tuple[bytes, str]:
    """The bytes of one UCI file and where they came from, not yet verified."""
    source = data_settings.source
    if source == "packaged":
        packaged = resources.files("lib.data_files").joinpath(f"{name}.gz")
        return gzip.decompress(packaged.read_bytes()), f"packaged {name}.gz"
    if source == "path":
        if not data_settings.path:
            raise DataError("data.source is 'path' but data.path is not set")
        location = Path(data_settings.path) / name
        if not location.is_file():
            raise DataError(f"{location}: file not found (data.source=path)")
        return location.read_bytes(), str(location)
    if source == "url":
        return _download(name, data_settings.url, cache_dir)
    raise DataError(f"data.source must be packaged, path or url, got {source!r}")


def verify_checksum(name: str, content: bytes, origin: str) -> None:
    expected = packaged_checksums().get(name)
    if expected is None:
        raise DataError(f"{name}: no published checksum is known for this file")
    actual = hashlib.sha256(content).hexdigest()
    if actual != expected:
        raise DataError(
            f"{origin}: SHA-256 {actual} does not match the published {expected}"
            f"{_first_difference(name, content)}; the file is altered or truncated. "
            "Use the files as published by UCI."
        )
    logger.debug("%s: checksum verified", origin)


def _first_difference(name: str, content: bytes) -> str:
    """Where ``content`` first departs from the packaged copy, as text."""
    packaged = resources.files("lib.data_files").joinpath(f"{name}.gz")
    published = gzip.decompress(packaged.read_bytes()).split(b"\n")
    columns = [*FEATURE_COLUMNS, RAW_LABEL_COLUMN]
    pairs = zip(content.split(b"\n"), published, strict=False)
    for number, (ours, theirs) in enumerate(pairs, start=1):
        if ours == theirs:
            continue
        fields = zip(ours.split(b","), theirs.split(b","), strict=False)
        for position, (a, b) in enumerate(fields):
            if a != b and position < len(columns):
                column = columns[position]
                return f"; first difference at line {number}, column {column!r}"
        return f"; first difference at line {number}"
    return "; the file's length differs from the published one"


def _download(name: str, base_url: str, cache_dir: Path | None) -> tuple[bytes, str]:
    url = base_url.rstrip("/") + "/" + name
    if cache_dir is not None and (cache_dir / name).is_file():
        return (cache_dir / name).read_bytes(), str(cache_dir / name)
    logger.info("Downloading %s", url)
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            content = response.read()
    except OSError as error:
        raise DataError(f"{url}: download failed ({error})") from error
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        (cache_dir / name).write_bytes(content)
    return content, url


def parse_adult(content: bytes, name: str) -> tuple[pl.DataFrame, FileLedger]:
    """Parse one raw Adult file into typed columns plus the label and source line."""
    is_test = name == TEST_FILE
    ledger = FileLedger(file=name)
    try:
        text = content.decode("ascii")
    except UnicodeDecodeError as error:
        line = content[: error.start].count(b"\n") + 1
        raise DataError(f"{name}, line {line}: byte that is not ASCII") from error
    if not text.strip():
        raise DataError(f"{name}: the file is empty")

    rows, line_numbers = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        ledger.lines_read += 1
        if not line.strip():
            ledger.dropped["blank line"] += 1
            continue
        if is_test and number == 1:
            if line.strip() != TEST_BANNER:
                raise DataError(
                    f"{name}, line 1: expected the banner {TEST_BANNER!r}, "
                    f"found {line[:60]!r}"
                )
            ledger.dropped["test file banner"] += 1
            continue
        fields = [value.strip() for value in line.split(",")]
        if len(fields) != len(FEATURE_COLUMNS) + 1:
            raise DataError(_field_count_message(name, number, len(fields)))
        rows.append(fields)
        line_numbers.append(number)

    names = [*FEATURE_COLUMNS, RAW_LABEL_COLUMN]
    frame = pl.DataFrame(
        rows, schema={c: pl.String for c in names}, orient="row"
    ).with_columns(pl.Series(LINE_COLUMN, line_numbers, dtype=pl.Int32))
    frame = _type_columns(frame, name, is_test)
    ledger.records_kept = frame.height
    return frame, ledger


def _field_count_message(name: str, number: int, found: int) -> str:
    columns = [*FEATURE_COLUMNS, RAW_LABEL_COLUMN]
    expected = len(columns)
    where = f"{name}, line {number}: {found} fields, expected {expected}"
    if found < expected:
        return (
            f"{where}; the line stops at column {columns[found - 1]!r}, so "
            f"{columns[found]!r} and the columns after it are missing"
        )
    return f"{where}; {found - expected} field(s) after the last column {columns[-1]!r}"


def _type_columns(frame: pl.DataFrame, name: str, is_test: bool) -> pl.DataFrame:
    typed = frame.with_columns(
        pl.col(c).cast(pl.Int64, strict=False).alias(c) for c in INTEGER_COLUMNS
    )
    for column in INTEGER_COLUMNS:
        bad = typed.filter(pl.col(column).is_null())
        if bad.height:
            line = bad[LINE_COLUMN][0]
            value = frame.filter(pl.col(LINE_COLUMN) == line)[column][0]
            raise DataError(
                f"{name}, line {line}, column {column!r}: {value!r} is not an "
                f"integer ({bad.height} such rows in this column)"
            )

    labels = pl.col(RAW_LABEL_COLUMN)
    if is_test:
        labels = labels.str.strip_suffix(".")
    typed = typed.with_columns(labels.alias(RAW_LABEL_COLUMN))
    unexpected = typed.filter(~pl.col(RAW_LABEL_COLUMN).is_in(LABELS))
    if unexpected.height:
        first = unexpected.row(0, named=True)
        raise DataError(
            f"{name}, line {first[LINE_COLUMN]}, column {RAW_LABEL_COLUMN!r}: label "
            f"{first[RAW_LABEL_COLUMN]!r} is not one of {LABELS} "
            f"({unexpected.height} such rows)"
        )

    return typed.with_columns(
        *(
            pl.when(pl.col(c) == MISSING).then(None).otherwise(pl.col(c)).alias(c)
            for c in CATEGORICAL_COLUMNS
        ),
        (pl.col(RAW_LABEL_COLUMN) == LABELS[1]).cast(pl.Int8).alias(LABEL_COLUMN),
    ).drop(RAW_LABEL_COLUMN)


@dataclass
class PreparedData:
    train: pl.DataFrame
    validation: pl.DataFrame
    test: pl.DataFrame
    ledger: dict


def load_adult(data_settings, cache_dir: Path | None = None):
    """Read, verify and parse both files; return the frames and their ledgers."""
    frames, ledgers = {}, {}
    for name in (TRAIN_FILE, TEST_FILE):
        content, origin = fetch_raw_file(name, data_settings, cache_dir)
        # Parse first: a damaged line is then reported by line and column; the
        # checksum afterwards catches whatever still parses.
        frames[name], ledgers[name] = parse_adult(content, name)
        verify_checksum(name, content, origin)
        ledger = ledgers[name]
        logger.info(
            "%s: %d lines read, %d records kept, dropped: %s",
            name,
            ledger.lines_read,
            ledger.records_kept,
            dict(ledger.dropped) or "none",
        )
    return frames, ledgers


def stratified_split(
    frame: pl.DataFrame, validation_fraction: float, seed: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Cut a validation set with the same label balance as ``frame``."""
    rng = np.random.default_rng(seed)
    labels = frame[LABEL_COLUMN].to_numpy()
    validation_rows = []
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        rng.shuffle(rows)
        validation_rows.append(rows[: round(len(rows) * validation_fraction)])
    is_validation = np.zeros(frame.height, dtype=bool)
    is_validation[np.concatenate(validation_rows)] = True
    mask = pl.Series(is_validation)
    return frame.filter(~mask), frame.filter(mask)


def prepare_data(settings, run_dir: Path) -> PreparedData:
    """Load both files, split, and write the frames and the row ledger to the run."""
    # An earlier run's ledger would make a failed rerun look complete.
    (run_dir / "data" / "row_ledger.json").unlink(missing_ok=True)
    frames, ledgers = load_adult(settings.data, cache_dir=run_dir / "raw")
    train, validation = stratified_split(
        frames[TRAIN_FILE], settings.data.validation_fraction, settings.seed
    )
    test = frames[TEST_FILE]
    ledger = {
        "files": [ledgers[name].as_dict() for name in (TRAIN_FILE, TEST_FILE)],
        "split": {
            "train": train.height,
            "validation": validation.height,
            "test": test.height,
        },
    }
    _check_nothing_lost(ledgers, ledger["split"])
    write_prepared(PreparedData(train, validation, test, ledger), run_dir)
    return PreparedData(train, validation, test, ledger)


def _check_nothing_lost(ledgers: dict[str, FileLedger], split: dict) -> None:
    for entry in ledgers.values():
        accounted = entry.records_kept + sum(entry.dropped.values())
        if accounted != entry.lines_read:
            raise DataError(
                f"{entry.file}: {entry.lines_read} lines read but {accounted} "
                "accounted for"
            )
    kept_train = ledgers[TRAIN_FILE].records_kept
    if split["train"] + split["validation"] != kept_train:
        raise DataError(
            f"the split has {split['train']} + {split['validation']} rows, "
            f"but {kept_train} training records were kept"
        )


def write_prepared(prepared: PreparedData, run_dir: Path) -> None:
    """Write parquet files, then the ledger last: its presence marks a complete step."""
    data_dir = run_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "row_ledger.json").unlink(missing_ok=True)
    for part in ("train", "validation", "test"):
        getattr(prepared, part).write_parquet(data_dir / f"{part}.parquet")
    (data_dir / "row_ledger.json").write_text(json.dumps(prepared.ledger, indent=2))
    logger.info(
        "Wrote train (%d), validation (%d) and test (%d) rows to %s",
        prepared.train.height,
        prepared.validation.height,
        prepared.test.height,
        data_dir,
    )


def read_prepared(run_dir: Path) -> PreparedData:
    """Read the output of :func:`prepare_data`; refuse a partial one."""
    data_dir = Path(run_dir) / "data"
    ledger_path = data_dir / "row_ledger.json"
    if not ledger_path.is_file():
        raise DataError(
            f"{data_dir}: no complete preprocessing output (row_ledger.json is "
            "missing); run notebooks/01_preprocessing first"
        )
    parts = {
        p: pl.read_parquet(data_dir / f"{p}.parquet")
        for p in ("train", "validation", "test")
    }
    return PreparedData(ledger=json.loads(ledger_path.read_text()), **parts)


def ledger_table(ledger: dict) -> pl.DataFrame:
    """One row per file: lines read, records kept, and each drop reason's count."""
    reasons = sorted({r for entry in ledger["files"] for r in entry["dropped"]})
    rows = [
        {
            "file": entry["file"],
            "lines read": entry["lines_read"],
            "records kept": entry["records_kept"],
            **{f"dropped: {r}": entry["dropped"].get(r, 0) for r in reasons},
        }
        for entry in ledger["files"]
    ]
    return pl.DataFrame(rows)


def split_summary(prepared: PreparedData) -> pl.DataFrame:
    """Rows, share of >50K and missing values per split."""
    rows = []
    for name in ("train", "validation", "test"):
        frame = getattr(prepared, name)
        rows.append(
            {
                "split": name,
                "rows": frame.height,
                "share >50K": round(float(frame[LABEL_COLUMN].mean()), 4),
                **{
                    f"missing {c}": frame[c].null_count()
                    for c in ("workclass", "occupation", "native_country")
                },
            }
        )
    return pl.DataFrame(rows)
