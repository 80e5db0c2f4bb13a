"""Turn raw Adult records into the arrays the model reads.

Categorical values become integer indices once, here, rather than string lookups
inside the model on every batch. Index 0 of every column is the out-of-vocabulary
bucket (a value never seen in training), index 1 is the missing value ``?``, and
the training vocabulary follows in sorted order. Numeric columns are optionally
log-scaled and then standardised with statistics of the training split.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import polars as pl

from lib.data import CATEGORICAL_COLUMNS, FEATURE_COLUMNS, INTEGER_COLUMNS, MISSING

logger = logging.getLogger(__name__)

OUT_OF_VOCABULARY_INDEX = 0
MISSING_INDEX = 1
FIRST_VALUE_INDEX = 2


# Scaled numbers are clipped to this many standard deviations. Training data stays
# within about 10; without a bound, an extreme but finite request value (3.4e38
# hours a week) overflows float32 inside the periodic embedding and the model
# answers NaN.
SCALED_LIMIT = 1000.0


@dataclass
class FeatureEncoder:
    """Everything needed to encode a raw record; stored in the model artifact."""

    categorical_columns: list[str]
    numeric_columns: list[str]
    vocabularies: dict[str, list[str]]
    numeric_means: dict[str, float]
    numeric_stds: dict[str, float]
    log_scaled_columns: list[str]
    feature_columns: list[str]

    @classmethod
    def fit(
        cls, train: pl.DataFrame, fnlwgt_mode: str, log_scaled_columns: Sequence[str]
    ) -> FeatureEncoder:
        numeric = [
            c for c in INTEGER_COLUMNS if c != "fnlwgt" or fnlwgt_mode == "feature"
        ]
        vocabularies = {
            column: sorted(train[column].drop_nulls().unique().to_list())
            for column in CATEGORICAL_COLUMNS
        }
        log_scaled = [c for c in log_scaled_columns if c in numeric]
        encoder = cls(
            categorical_columns=list(CATEGORICAL_COLUMNS),
            numeric_columns=numeric,
            vocabularies=vocabularies,
            numeric_means={},
            numeric_stds={},
            log_scaled_columns=log_scaled,
            feature_columns=list(FEATURE_COLUMNS),
        )
        raw = encoder._scaled_numeric(
            {c: train[c].to_numpy().astype(np.float64) for c in numeric}
        )
        for position, column in enumerate(numeric):
            encoder.numeric_means[column] = float(raw[:, position].mean())
            # A constant column would divide by zero; it carries no signal anyway.
            encoder.numeric_stds[column] = float(raw[:, position].std()) or 1.0
        logger.info(
            "Encoder: %d categorical columns (%d values in all), %d numeric columns",
            len(vocabularies),
            sum(len(v) for v in vocabularies.values()),
            len(numeric),
        )
        return encoder

    @property
    def cardinalities(self) -> list[int]:
        """Embedding rows per categorical column, the two reserved indices included."""
        return [
            len(self.vocabularies[c]) + FIRST_VALUE_INDEX
            for c in self.categorical_columns
        ]

    def encode(self, columns: Mapping[str, Sequence]) -> dict[str, np.ndarray]:
        """Encode raw columns (strings and finite numbers) keyed by column name."""
        categorical = np.stack(
            [self._encode_categorical(c, columns[c]) for c in self.categorical_columns],
            axis=1,
        ).astype(np.int32)
        numeric = self._scaled_numeric(
            {c: np.asarray(columns[c], dtype=np.float64) for c in self.numeric_columns}
        )
        means = np.array([self.numeric_means[c] for c in self.numeric_columns])
        stds = np.array([self.numeric_stds[c] for c in self.numeric_columns])
        # Clipped in float64, before float32 could overflow to infinity.
        numeric = np.clip((numeric - means) / stds, -SCALED_LIMIT, SCALED_LIMIT)
        return {"categorical": categorical, "numeric": numeric.astype(np.float32)}

    def encode_frame(self, frame: pl.DataFrame) -> dict[str, np.ndarray]:
        """Encode a parsed frame (missing categories are nulls there)."""
        columns = {
            c: frame[c].fill_null(MISSING).to_list() for c in self.categorical_columns
        }
        columns.update({c: frame[c].to_numpy() for c in self.numeric_columns})
        return self.encode(columns)

    def _encode_categorical(self, column: str, values: Sequence) -> np.ndarray:
        lookup = self._lookups()[column]
        return np.fromiter(
            (
                MISSING_INDEX
                if value is None
                else lookup.get(str(value).strip(), OUT_OF_VOCABULARY_INDEX)
                for value in values
            ),
            dtype=np.int32,
            count=len(values),
        )

    def _lookups(self) -> dict[str, dict[str, int]]:
        # Built lazily and kept: serving encodes every request through these.
        if not hasattr(self, "_lookup_cache"):
            self._lookup_cache = {
                column: {
                    MISSING: MISSING_INDEX,
                    **{v: i + FIRST_VALUE_INDEX for i, v in enumerate(values)},
                }
                for column, values in self.vocabularies.items()
            }
        return self._lookup_cache

    def _scaled_numeric(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        if not self.numeric_columns:
            return np.zeros((0, 0))
        stacked = np.stack([columns[c] for c in self.numeric_columns], axis=1)
        for position, column in enumerate(self.numeric_columns):
            if column in self.log_scaled_columns:
                # Capital gains span 0 to 99,999: the log keeps the bulk apart.
                stacked[:, position] = np.log1p(np.maximum(stacked[:, position], 0.0))
        return stacked

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping) -> FeatureEncoder:
        return cls(**values)
