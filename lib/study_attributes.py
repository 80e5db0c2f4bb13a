"""Study and trial attributes that stay small in the database.

Optuna stores a user attribute as its JSON text in one ``TEXT`` column; on MySQL
and Aurora that column holds at most 65,535 bytes, and a longer value makes
``set_user_attr`` raise, which fails the trial that was saving its results. A
value whose JSON is longer than ``limit`` characters (2,000 by default) is
therefore written to a file under the run folder, and the attribute holds a
small reference instead::

    {"file": "study_attributes/<study>/trial-7/validation_curve.json",
     "sha256": "<hex digest of the file>"}

``resolve_user_attrs`` (or ``resolve_attribute`` for one value) turns references
back into the values, checking the digest; plain values pass through unchanged.
The file path is relative to the run folder, so a copied or synced run folder
still resolves; a reference never points outside that folder.

Known limit: the files live on the machine that wrote them. Workers on other
machines that share the study (SageMaker hosts on Aurora) see the reference but
not the file until the run folder is synced (for example through the
checkpoint folder that SageMaker copies to S3).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

logger = logging.getLogger(__name__)

# Characters of JSON text above which a value goes to a file. Far below MySQL's
# 65,535-byte TEXT column even for 4-byte UTF-8 characters, and small enough that
# loading a study with many trials stays quick.
DEFAULT_LIMIT_CHARS = 2_000
ATTRIBUTES_DIR = "study_attributes"
REFERENCE_KEYS = frozenset({"file", "sha256"})
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_UNSAFE_NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9_.-]+")


class StudyAttributeError(ValueError):
    """An attribute cannot be stored, or its reference cannot be resolved."""


def set_user_attr(
    owner,
    key: str,
    value: Any,
    run_dir: str | Path,
    *,
    limit: int = DEFAULT_LIMIT_CHARS,
) -> Any:
    """Set ``owner.set_user_attr(key, ...)``, moving a large ``value`` to a file.

    ``owner`` is an ``optuna.Study`` or an ``optuna.Trial``. Returns what was
    stored in the database: ``value`` itself, or the reference to its file.
    """
    text = _to_json(value, key)
    if len(text) <= limit and not is_reference(value):
        owner.set_user_attr(key, value)
        return value
    # A small value shaped like a reference goes to a file too, so that reading
    # back never mistakes a user's value for a reference.
    relative = _attribute_path(owner, key)
    digest = _write_atomically(Path(run_dir) / relative, text)
    reference = {"file": relative.as_posix(), "sha256": digest}
    owner.set_user_attr(key, reference)
    logger.debug(
        "attribute %r (%d characters of JSON) stored in %s", key, len(text), relative
    )
    return reference


def is_reference(value: Any) -> bool:
    """True when ``value`` has the shape of a reference written by this module."""
    return (
        isinstance(value, Mapping)
        and set(value) == REFERENCE_KEYS
        and isinstance(value["file"], str)
        and isinstance(value["sha256"], str)
        and _SHA256_HEX.fullmatch(value["sha256"]) is not None
    )


def resolve_attribute(value: Any, run_dir: str | Path, key: str = "?") -> Any:
    """The stored value behind ``value`` if it is a reference, else ``value``."""
    if not is_reference(value):
        return value
    run_folder = Path(run_dir).resolve()
    path = _inside(run_folder, value["file"], key)
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        raise StudyAttributeError(
            f"attribute {key!r} refers to {path}, which does not exist: resolve it "
            "with the run folder that wrote the study (or copy that folder's "
            f"{ATTRIBUTES_DIR}/ here)"
        ) from None
    actual = hashlib.sha256(content).hexdigest()
    if actual != value["sha256"]:
        raise StudyAttributeError(
            f"attribute {key!r}: {path} has SHA-256 {actual}, the study expects "
            f"{value['sha256']}; the file was changed or belongs to another run"
        )
    return json.loads(content.decode("utf-8"))


def resolve_user_attrs(attributes: Mapping[str, Any], run_dir: str | Path) -> dict:
    """A copy of ``attributes`` (a study's or trial's ``user_attrs``), resolved."""
    return {
        key: resolve_attribute(value, run_dir, key) for key, value in attributes.items()
    }


def _to_json(value: Any, key: str) -> str:
    try:
        # The same encoding Optuna uses for the database column.
        return json.dumps(value)
    except (TypeError, ValueError) as error:
        raise StudyAttributeError(
            f"attribute {key!r} cannot be stored: {error}; store JSON values only "
            "(dict, list, str, int, float, bool, None)"
        ) from error


def _attribute_path(owner, key: str) -> PurePosixPath:
    """``study_attributes/<study>/<study|trial-N>/<key>.json``, safe as file names."""
    trial_number = getattr(owner, "number", None)
    study = getattr(owner, "study", owner)
    study_name = getattr(study, "study_name", "study")
    where = "study" if trial_number is None else f"trial-{trial_number}"
    return PurePosixPath(
        ATTRIBUTES_DIR, _safe_name(study_name), where, f"{_safe_name(key)}.json"
    )


def _safe_name(text: str) -> str:
    slug = _UNSAFE_NAME_CHARACTERS.sub("_", str(text)).strip("._")[:80] or "_"
    if slug == text:
        return slug
    # Two names that differ only in unsafe characters must not share a file.
    return f"{slug}-{hashlib.sha256(str(text).encode()).hexdigest()[:8]}"


def _write_atomically(path: Path, text: str) -> str:
    """Write ``text`` to ``path`` via a temporary file; return its SHA-256."""
    content = text.encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    # A reader never sees half a file, even if this process dies mid-write.
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(content)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return hashlib.sha256(content).hexdigest()


def _inside(run_folder: Path, relative: str, key: str) -> Path:
    # The reference comes from a shared database: it must not name a file
    # elsewhere on this machine.
    candidate = PurePosixPath(relative)
    if candidate.is_absolute() or ".." in candidate.parts:
        raise StudyAttributeError(
            f"attribute {key!r} refers to {relative!r}, which is outside the run "
            "folder; references written by this project are relative paths under "
            f"{ATTRIBUTES_DIR}/"
        )
    path = (run_folder / candidate).resolve()
    if not path.is_relative_to(run_folder):
        raise StudyAttributeError(
            f"attribute {key!r} refers to {relative!r}, which leads outside the run "
            f"folder {run_folder} (through a symbolic link)"
        )
    return path
