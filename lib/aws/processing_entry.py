"""Entry point of the preprocessing container: ``python -m lib.aws.processing_entry``.

SageMaker copies the raw UCI files to ``--input`` and uploads ``<--output>/data``
when the job ends. The work is ``lib.data.prepare_data``, as in local mode, with
the files read from ``--input`` (``data.source=path``) and verified against their
published checksums. A failure is logged and ends the process with exit code 1.

| argument | meaning |
| --- | --- |
| ``--input`` | folder with ``adult.data`` and ``adult.test`` |
| ``--output`` | run folder; the prepared data goes to its ``data/`` |
| ``--override`` | a settings override such as ``seed=42`` (repeatable) |
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger(__name__)


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, type=Path)
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--override", action="append", default=[])
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from lib.config import format_override, load_settings
    from lib.data import prepare_data

    try:
        settings = load_settings(
            [
                *arguments.override,
                "data.source=path",
                format_override("data.path", str(arguments.input)),
            ]
        )
        prepared = prepare_data(settings, arguments.output)
    except Exception:
        logger.exception("preprocessing failed")
        return 1
    logger.info("prepared data written: %s", prepared.ledger["split"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
