"""Where the Optuna study lives: turn the ``study:`` settings into an Optuna storage.

Four places, chosen by settings (first match wins):

- ``study.secret_id``: an AWS Secrets Manager secret with the database fields
  (Aurora MySQL in ``sagemaker`` mode), turned into a ``mysql+pymysql`` URL;
- ``study.storage: journal``: an Optuna journal file ``study.journal`` in the run
  folder, which several processes on one machine may write at once;
- ``study.storage: <SQLAlchemy URL>``: that database (SQLite files by absolute path);
- ``study.storage: null``: the run folder's ``study.journal`` if a parallel run made
  one there, otherwise the SQLite file ``study.db`` in the run folder.

Every storage gets trial heartbeats: a trial whose process died (``kill -9``, a spot
instance taken back) stops beating, is failed after the grace period and queued
again by Optuna's retry callback. Database passwords stay masked in every ``str``,
``repr``, log line and error raised here.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

logger = logging.getLogger(__name__)

SQLITE_FILE_NAME = "study.db"
JOURNAL_FILE_NAME = "study.journal"
# Trial system attribute that carries a journal trial's last heartbeat (Unix time).
HEARTBEAT_ATTRIBUTE = "heartbeat_unix_time"

# Kinds of storage, as storage_kind() names them; "journal" is also the setting.
SQLITE = "sqlite"
JOURNAL = "journal"


class StorageError(RuntimeError):
    """The study storage named by the settings cannot be resolved or opened."""


class StorageUrl(str):
    """A storage URL whose ``str``, ``repr`` and f-string show no password.

    It is still a ``str`` holding the full URL, so SQLAlchemy and Optuna connect
    with it as given; ``reveal()`` returns the plain text on purpose.
    """

    def __new__(cls, value: str) -> StorageUrl:
        # str(value) of a StorageUrl is the masked text: copy the real one.
        if isinstance(value, StorageUrl):
            value = value.reveal()
        return super().__new__(cls, value)

    def masked(self) -> str:
        return _mask_password(str.__str__(self))

    def reveal(self) -> str:
        return str.__str__(self)

    def __str__(self) -> str:
        return self.masked()

    def __repr__(self) -> str:
        return f"StorageUrl({self.masked()!r})"

    def __format__(self, format_spec: str) -> str:
        return format(self.masked(), format_spec)


def _mask_password(url_text: str) -> str:
    if "://" not in url_text:
        return url_text  # a journal file path holds no credentials
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url_text).render_as_string(hide_password=True)
    except ArgumentError:
        return "<storage URL that SQLAlchemy cannot parse>"


def resolve_storage_url(study_settings, run_dir: str | Path) -> StorageUrl:
    """Return where the study lives: an SQLAlchemy URL or a journal file's path.

    The result is a ``str`` (``StorageUrl``) whose printed forms mask the password.
    """
    run_folder = Path(run_dir).resolve()
    secret_id = _setting(study_settings, "secret_id")
    if secret_id:
        from lib.secrets_manager import database_url_from_secret

        url = database_url_from_secret(
            str(secret_id), _setting(study_settings, "secret_region")
        )
        return StorageUrl(url.render_as_string(hide_password=False))
    configured = _setting(study_settings, "storage")
    if configured is None:
        return StorageUrl(_default_local_storage(run_folder))
    configured = str(configured)
    if configured == JOURNAL:
        return StorageUrl(str(run_folder / JOURNAL_FILE_NAME))
    return StorageUrl(_check_explicit_url(configured))


def _default_local_storage(run_folder: Path) -> str:
    journal = run_folder / JOURNAL_FILE_NAME
    sqlite_file = run_folder / SQLITE_FILE_NAME
    if journal.exists() and sqlite_file.exists():
        raise StorageError(
            f"{run_folder} holds both {SQLITE_FILE_NAME} and {JOURNAL_FILE_NAME}, so "
            "the study is ambiguous: set study.storage=journal, or "
            f"study.storage=sqlite:///{sqlite_file}"
        )
    if journal.exists():
        return str(journal)
    return f"sqlite:///{sqlite_file}"


def _check_explicit_url(configured: str) -> str:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(configured)
    except ArgumentError:
        # The value is not repeated: it may hold a password.
        raise StorageError(
            "study.storage is neither null, 'journal' nor an SQLAlchemy URL such as "
            "sqlite:////abs/path/study.db or mysql+pymysql://user:pass@host/db"
        ) from None
    if url.get_backend_name() == SQLITE:
        database = url.database or ""
        if database and database != ":memory:" and not Path(database).is_absolute():
            raise StorageError(
                f"study.storage {configured!r} names a relative SQLite path, which "
                "changes with the working folder (papermill runs notebooks from "
                "notebooks/): use four slashes and an absolute path, e.g. "
                "sqlite:////home/me/study.db, or leave study.storage null for "
                f"<run folder>/{SQLITE_FILE_NAME}"
            )
    return configured


def storage_kind(url: str) -> str:
    """Name the storage behind a resolved URL: sqlite, journal, mysql, postgresql..."""
    text = str.__str__(url)
    if "://" not in text:
        return JOURNAL
    from sqlalchemy.engine import make_url

    return make_url(text).get_backend_name()


def create_storage(study_settings, run_dir: str | Path) -> optuna.storages.BaseStorage:
    """Open the study storage, with heartbeats so trials of dead workers are retried."""
    return open_storage(resolve_storage_url(study_settings, run_dir), study_settings)


def open_storage(url: str, study_settings) -> optuna.storages.BaseStorage:
    """Open the storage at an already resolved ``url`` (the secret is not re-read).

    Returns an ``RDBStorage`` for SQLAlchemy URLs and a ``HeartbeatJournalStorage``
    for a journal file; both beat and retry as ``study_settings`` say.
    """
    url = StorageUrl(url)
    kind = storage_kind(url)
    heartbeat = heartbeat_options(study_settings)
    if kind == JOURNAL:
        storage = create_journal_storage(Path(url.reveal()), **heartbeat)
    else:
        storage = _create_rdb_storage(url, kind, study_settings, heartbeat)
    logger.info(
        "study storage: %s (%s; heartbeat every %s s, stale after %s s)",
        url,
        kind,
        heartbeat["heartbeat_interval"],
        heartbeat["grace_period"],
    )
    return storage


def heartbeat_options(study_settings) -> dict[str, Any]:
    """Heartbeat interval, grace period and retry callback from the settings."""
    interval = _positive_seconds(study_settings, "heartbeat_interval_seconds")
    grace = _positive_seconds(study_settings, "heartbeat_grace_seconds")
    if interval is None:
        return {
            "heartbeat_interval": None,
            "grace_period": None,
            "heartbeat_stale_trial_callback": None,
        }
    if grace is not None and grace <= interval:
        raise StorageError(
            f"study.heartbeat_grace_seconds ({grace}) must exceed "
            f"study.heartbeat_interval_seconds ({interval}), or live trials would be "
            "failed between two heartbeats"
        )
    max_retries = _setting(study_settings, "max_retries")
    with warnings.catch_warnings():
        # Optuna flags the retry callback experimental; it is what we rely on.
        warnings.simplefilter("ignore", ExperimentalWarning)
        callback = RetryHeartbeatStaleTrialCallback(
            max_retry=None if max_retries is None else int(max_retries)
        )
    return {
        "heartbeat_interval": interval,
        "grace_period": grace,
        "heartbeat_stale_trial_callback": callback,
    }


def _create_rdb_storage(
    url: StorageUrl, kind: str, study_settings, heartbeat: dict[str, Any]
) -> RDBStorage:
    import sqlalchemy.exc

    if kind == SQLITE:
        database = _sqlite_database_path(url)
        if database is not None:
            database.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            return RDBStorage(
                _escape_format_braces(url.reveal()),
                engine_kwargs=rdb_engine_options(kind, study_settings),
                **heartbeat,
            )
    except sqlalchemy.exc.SQLAlchemyError as error:
        # SQLAlchemy's own message names the server and the error code, never the
        # password; the URL is shown masked.
        raise StorageError(
            f"cannot open the study storage {url}: {error}. Check that the database "
            "server runs and accepts this user, and the study.storage/study.secret_id "
            "settings"
        ) from error


def rdb_engine_options(kind: str, study_settings) -> dict[str, Any]:
    """SQLAlchemy engine options: pre-ping and recycle connections of servers."""
    if kind == SQLITE:
        return {}
    options: dict[str, Any] = {
        # A connection the server closed while a long epoch ran (wait_timeout,
        # a failover, a NAT idle timeout) is noticed and replaced before use.
        "pool_pre_ping": True,
    }
    recycle = _positive_seconds(study_settings, "pool_recycle_seconds")
    if recycle is not None:
        options["pool_recycle"] = recycle
    return options


def _escape_format_braces(url_text: str) -> str:
    # RDBStorage runs str.format() on the URL to fill {SCHEMA_VERSION}; braces in a
    # user name or database name must survive it.
    return url_text.replace("{", "{{").replace("}", "}}")


def _sqlite_database_path(url: StorageUrl) -> Path | None:
    from sqlalchemy.engine import make_url

    database = make_url(url.reveal()).database
    if not database or database == ":memory:":
        return None
    return Path(database)


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """Optuna's journal storage plus the heartbeats that only RDBStorage has in 5.1.

    Each running trial records its last heartbeat (Unix time) as a system attribute;
    ``optuna.storages.fail_stale_trials`` (run by ``study.optimize`` before each new
    trial) fails those silent for longer than the grace period and calls the retry
    callback, exactly as with an RDB storage. Clocks of all writers must agree,
    which holds on one machine, the journal's use here.

    TODO(storage): drop this class when Optuna's JournalStorage supports heartbeats.
    """

    # Seconds since the epoch; tests move it forward instead of sleeping.
    clock: Callable[[], float] = staticmethod(time.time)

    def __init__(
        self,
        backend: JournalFileBackend,
        *,
        heartbeat_interval: int | None = None,
        grace_period: int | None = None,
        heartbeat_stale_trial_callback: (
            Callable[[optuna.Study, FrozenTrial], None] | None
        ) = None,
    ) -> None:
        super().__init__(backend)
        for name, value in (
            ("heartbeat_interval", heartbeat_interval),
            ("grace_period", grace_period),
        ):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.heartbeat_stale_trial_callback = heartbeat_stale_trial_callback

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self.set_trial_system_attr(trial_id, HEARTBEAT_ATTRIBUTE, self.clock())
        except UpdateFinishedTrialError:
            # Another worker judged this trial stale (this process stalled longer
            # than the grace period); its result will be refused as well.
            logger.warning(
                "trial id %s was already finished by another worker: heartbeat dropped",
                trial_id,
            )

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        assert self.heartbeat_interval is not None
        grace = self.grace_period or 2 * self.heartbeat_interval
        now = self.clock()
        stale = []
        running = self.get_all_trials(
            study_id, deepcopy=False, states=(TrialState.RUNNING,)
        )
        for trial in running:
            beat = trial.system_attrs.get(HEARTBEAT_ATTRIBUTE)
            if beat is None:
                continue  # never beat: run by ask/tell, which has no heartbeat
            # A retried trial inherits its predecessor's last beat; its own start
            # time is the newer sign of life until its first beat lands.
            started = trial.datetime_start.timestamp() if trial.datetime_start else 0
            if now - max(float(beat), started) > grace:
                stale.append(trial._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(
        self,
    ) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        return self.heartbeat_stale_trial_callback


def create_journal_storage(
    journal_path: Path,
    *,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    heartbeat_stale_trial_callback: (
        Callable[[optuna.Study, FrozenTrial], None] | None
    ) = None,
) -> HeartbeatJournalStorage:
    """Open (or create) the journal file at ``journal_path`` with heartbeats."""
    journal_path.parent.mkdir(parents=True, exist_ok=True)
    return HeartbeatJournalStorage(
        JournalFileBackend(str(journal_path)),
        heartbeat_interval=heartbeat_interval,
        grace_period=grace_period,
        heartbeat_stale_trial_callback=heartbeat_stale_trial_callback,
    )


def _setting(study_settings, name: str, default: Any = None) -> Any:
    # Older configs lack the newer keys; a struct DictConfig raises AttributeError.
    return getattr(study_settings, name, default)


def _positive_seconds(study_settings, name: str) -> int | None:
    value = _setting(study_settings, name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise StorageError(
            f"study.{name} must be a positive whole number of seconds or null, "
            f"got {value!r}"
        )
    return value
