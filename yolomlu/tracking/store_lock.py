"""Safe first use of a SQLite store by many processes at once.

The first MLflow client of a process on a SQLite store creates the database's schema when it is
missing and migrates an older one, and creates the default experiment. Several processes doing that
at the same moment on a fresh store break each other (measured: 6 of 8 jobs started together died
with ``table secrets already exists``, ``table _alembic_tmp_experiments already exists``, ``No such
constraint``), and a migration cut short leaves its ``_alembic_tmp_*`` tables behind. An inter-process
lock on a file beside the database (``mlflow.db.lock``) makes one process at a time do it; the
others then find the schema in place. Each process takes the lock once per store (and whenever it
creates an experiment), so day-to-day logging never waits for it.

``fcntl.flock`` locks are released by the kernel when their process dies, so a ``kill -9`` in the
middle leaves no stale lock. They work across processes on one machine; SQLite on a network disk is
not safe for concurrent writers anyway (use a tracking server there).
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SQLITE_PREFIX = "sqlite:///"
LOCK_SUFFIX = ".lock"

_first_use_done: set[str] = set()  # SQLite URIs whose schema this process has seen in place
_thread_lock = threading.Lock()  # flock is per open file: threads of one process queue here


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (query string dropped); None for other stores."""
    if not uri.startswith(SQLITE_PREFIX):
        return None
    path = uri.removeprefix(SQLITE_PREFIX).split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path)


def lock_path(db: Path) -> Path:
    """``mlflow.db`` -> ``mlflow.db.lock``, beside it."""
    return db.with_name(db.name + LOCK_SUFFIX)


@contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Hold the store's inter-process lock for the block; a no-op for stores that are not SQLite files.

    Creates the database's folder (MLflow would too) so the lock file has somewhere to live.
    """
    db = sqlite_path(uri)
    if db is None:
        yield
        return
    import fcntl

    db.parent.mkdir(parents=True, exist_ok=True)
    path = lock_path(db)
    with _thread_lock:
        try:
            handle = open(path, "a+b")  # noqa: SIM115 - closed below, after the unlock
        except OSError as exc:
            if db.is_file() and exc.errno in (errno.EACCES, errno.EROFS):
                # A store we may only read (a read-only share): nobody can create or migrate its
                # schema through this folder, so there is no race to guard against.
                yield
                return
            raise OSError(
                f"cannot open the lock file {path} of the SQLite store {uri} ({exc.strerror}); "
                "the store's folder must be writable"
            ) from exc
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)  # waits for the process holding it
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        finally:
            handle.close()


@contextmanager
def first_use(uri: str) -> Iterator[None]:
    """Hold the store's lock around this process's first use of ``uri`` (creating or upgrading
    the schema); later uses pass straight through."""
    if uri in _first_use_done or sqlite_path(uri) is None:
        yield
        return
    with store_lock(uri):
        yield
    _first_use_done.add(uri)
