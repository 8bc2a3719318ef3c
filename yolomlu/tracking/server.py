"""One MLflow tracking server for many machines: a PostgreSQL backend store and proxied artifacts.

SQLite serves one machine. Jobs on many machines (a SLURM cluster through Hydra's submitit
launcher, several accelerator boxes) log to one tracking server instead, ``tracking.uri=http://...``:
the server writes runs to PostgreSQL, which takes concurrent writers, and stores artifacts in its
own folder (``--artifacts-destination``), which clients reach through the server: they need no
shared disk.

:func:`start` brings up both in a folder of their own, in the background, and :func:`stop` takes
them down; ``make server`` / ``make server-stop`` and the tests use them, through
``python -m yolomlu.tracking.server start|stop|status``. The folder holds::

    postgres/data/        the PostgreSQL cluster (owned by the user ``postgres`` when run as root)
    postgres/postgres.log its log
    pgpass, pg_password   how the server logs in (mode 0600; the password never shows in ``ps``)
    artifacts/            every run's artifacts
    mlflow-server.log     the tracking server's log
    state.json            what is running: pids, ports, URIs

PostgreSQL listens on 127.0.0.1 only (no Unix socket) and wants a password; the tracking server
listens where ``host`` says (127.0.0.1 by default: open it to other machines with ``--host
0.0.0.0`` on a trusted network). PostgreSQL refuses to run as root: as root, its commands run as
the ``postgres`` user (``runuser``), who must be able to reach the folder.

MLflow is not imported here: the server is its own process (``python -m mlflow server``), started
with usage telemetry off.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

PG_USER = "mlflow"  # the cluster's superuser and the database's owner
PG_DATABASE = "mlflow"
OS_POSTGRES_USER = "postgres"  # who runs PostgreSQL when we are root
STATE_FILE = "state.json"
NO_TELEMETRY = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}


class ServerError(RuntimeError):
    """Starting or stopping the server failed; the message says what and where to look."""


@dataclass(frozen=True)
class ServerState:
    """What :func:`start` brought up (also written to ``state.json``)."""

    folder: str
    uri: str  # what jobs use: tracking.uri=<uri>
    host: str
    port: int
    pg_port: int
    pg_bin: str
    mlflow_pid: int
    backend_store_uri: str  # postgresql+psycopg2://mlflow@127.0.0.1:<pg_port>/mlflow (password in pgpass)
    artifacts: str


# -- finding things ----------------------------------------------------------------------------
def find_pg_bin() -> Path:
    """The folder of PostgreSQL's server programs (``initdb``, ``pg_ctl``, ``postgres``).

    ``YOLOMLU_PG_BIN`` if set, else the newest ``/usr/lib/postgresql/<version>/bin`` (Debian keeps
    them off the PATH), else ``initdb`` on the PATH.
    """
    if os.environ.get("YOLOMLU_PG_BIN"):
        folder = Path(os.environ["YOLOMLU_PG_BIN"])
        if not (folder / "initdb").is_file():
            raise ServerError(f"YOLOMLU_PG_BIN={folder} holds no initdb")
        return folder
    found = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb") if p.is_file()]
    if found:
        return max(found, key=lambda folder: _version_key(folder.parent.name))
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise ServerError(
        "PostgreSQL's server programs are not installed (no /usr/lib/postgresql/*/bin/initdb, no initdb on "
        "the PATH): on Debian, apt-get install postgresql-15; or set YOLOMLU_PG_BIN to the folder holding initdb"
    )


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) if part.isdigit() else -1 for part in name.split("."))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_in_use(port: int) -> bool:
    """Whether something accepts connections on ``port`` of 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


# -- running PostgreSQL's programs -------------------------------------------------------------
def _as_root() -> bool:
    return os.geteuid() == 0


def _pg_account() -> pwd.struct_passwd | None:
    """The account PostgreSQL runs under: ``postgres`` when we are root, else ourselves (None)."""
    if not _as_root():
        return None
    try:
        return pwd.getpwnam(OS_POSTGRES_USER)
    except KeyError as exc:
        raise ServerError(
            f"PostgreSQL refuses to run as root and there is no {OS_POSTGRES_USER!r} user to run it as "
            "(installing postgresql-15 creates one); or run this as another user"
        ) from exc


def _pg_command(pg_bin: Path, program: str, *args: str) -> list[str]:
    command = [str(pg_bin / program), *args]
    return ["runuser", "-u", OS_POSTGRES_USER, "--", *command] if _as_root() else command


def _run(command: list[str], what: str, env: dict[str, str] | None = None, timeout: float = 120) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, cwd="/")
    except subprocess.TimeoutExpired as exc:
        raise ServerError(f"{what} did not finish within {timeout:.0f} s: {' '.join(command)}") from exc
    if done.returncode != 0:
        raise ServerError(f"{what} failed ({done.returncode}): {' '.join(command)}\n{done.stdout}{done.stderr}".rstrip())
    return done.stdout


def _check_reachable(folder: Path, account: pwd.struct_passwd) -> None:
    """Refuse a folder the ``postgres`` user cannot reach, naming the parent that stops it."""
    for parent in [folder, *folder.parents]:
        info = parent.stat()
        if info.st_uid == account.pw_uid or info.st_mode & stat.S_IXOTH:
            continue
        raise ServerError(
            f"PostgreSQL runs as user {account.pw_name!r}, who cannot enter {parent} (mode "
            f"{stat.filemode(info.st_mode)}, owner uid {info.st_uid}) on the way to {folder}: "
            "choose a server folder that others may traverse (e.g. under /tmp or the project)"
        )


# -- the cluster ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Layout:
    folder: Path

    @property
    def postgres(self) -> Path:
        return self.folder / "postgres"

    @property
    def data(self) -> Path:
        return self.postgres / "data"

    @property
    def pg_log(self) -> Path:
        return self.postgres / "postgres.log"

    @property
    def password(self) -> Path:
        return self.folder / "pg_password"

    @property
    def pgpass(self) -> Path:
        return self.folder / "pgpass"

    @property
    def artifacts(self) -> Path:
        return self.folder / "artifacts"

    @property
    def server_log(self) -> Path:
        return self.folder / "mlflow-server.log"

    @property
    def state(self) -> Path:
        return self.folder / STATE_FILE


def _write_private(path: Path, text: str, owner: pwd.struct_passwd | None = None) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    if owner is not None:
        os.chown(path, owner.pw_uid, owner.pw_gid)


def _init_cluster(layout: _Layout, pg_bin: Path, account: pwd.struct_passwd | None) -> None:
    """initdb a cluster whose superuser ``mlflow`` logs in with a password over TCP on 127.0.0.1."""
    if account is not None:
        _check_reachable(layout.folder, account)
    layout.postgres.mkdir(parents=True, exist_ok=True)
    if account is not None:
        os.chown(layout.postgres, account.pw_uid, account.pw_gid)
    layout.postgres.chmod(0o700)
    if not layout.password.is_file():
        _write_private(layout.password, secrets.token_urlsafe(24))
    password = layout.password.read_text().strip()
    pwfile = layout.postgres / "initdb.pw"  # readable by initdb's user, gone right after
    _write_private(pwfile, password + "\n", owner=account)
    try:
        _run(
            _pg_command(pg_bin, "initdb", "-D", str(layout.data), "-U", PG_USER, "--auth=scram-sha-256",
                        f"--pwfile={pwfile}", "--encoding=UTF8", "--locale=C"),
            "initdb",
        )  # fmt: skip
    except ServerError:
        shutil.rmtree(layout.data, ignore_errors=True)  # initdb wants an empty folder next time
        raise
    finally:
        pwfile.unlink(missing_ok=True)
    # No Unix socket (its default folder may not exist or be writable), TCP on 127.0.0.1 only.
    with open(layout.data / "postgresql.conf", "a") as conf:
        conf.write("\n# yolomlu\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n")


def _pg_running(layout: _Layout, pg_bin: Path) -> bool:
    if not (layout.data / "postmaster.pid").is_file():
        return False
    done = subprocess.run(_pg_command(pg_bin, "pg_ctl", "-D", str(layout.data), "status"), capture_output=True, cwd="/")
    return done.returncode == 0


def _start_postgres(layout: _Layout, pg_bin: Path, pg_port: int) -> None:
    if _pg_running(layout, pg_bin):
        # postmaster.pid: pid, data folder, start time, port, ...
        running_port = (layout.data / "postmaster.pid").read_text().splitlines()[3].strip()
        if running_port != str(pg_port):
            raise ServerError(
                f"the PostgreSQL cluster in {layout.data} already runs on port {running_port}, not {pg_port}: "
                f"use PG_PORT={running_port}, or stop it first (make server-stop)"
            )
        return
    if port_in_use(pg_port):
        raise ServerError(f"port {pg_port} on 127.0.0.1 is taken: choose another PostgreSQL port (PG_PORT=...)")
    command = _pg_command(pg_bin, "pg_ctl", "-D", str(layout.data), "-l", str(layout.pg_log), "-o", f"-p {pg_port}", "-w", "-t", "90", "start")
    try:
        _run(command, "starting PostgreSQL", timeout=120)
    except ServerError as exc:
        raise ServerError(f"{exc}\n{_tail(layout.pg_log)}") from exc


def _ensure_database(layout: _Layout, pg_bin: Path, pg_port: int) -> None:
    env = {**os.environ, "PGPASSFILE": str(layout.pgpass)}
    listed = _run(
        [str(pg_bin / "psql"), "-h", "127.0.0.1", "-p", str(pg_port), "-U", PG_USER, "-d", "postgres", "-Atc",
         f"SELECT 1 FROM pg_database WHERE datname = '{PG_DATABASE}'"],
        "looking for the database", env=env,
    )  # fmt: skip
    if listed.strip() != "1":
        _run([str(pg_bin / "createdb"), "-h", "127.0.0.1", "-p", str(pg_port), "-U", PG_USER, PG_DATABASE], "createdb", env=env)


def _stop_postgres(layout: _Layout, pg_bin: Path) -> None:
    if _pg_running(layout, pg_bin):
        _run(_pg_command(pg_bin, "pg_ctl", "-D", str(layout.data), "-m", "fast", "-w", "-t", "60", "stop"), "stopping PostgreSQL")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    return f"last lines of {path}:\n" + "\n".join(text[-lines:])


# -- the tracking server -------------------------------------------------------------------------
def _wait_healthy(url: str, process: subprocess.Popen, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerError(f"the MLflow server exited ({process.returncode}) before answering {url}/health\n{_tail(log)}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise ServerError(f"the MLflow server did not answer {url}/health within {timeout_s:.0f} s\n{_tail(log)}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return True


def read_state(folder: Path) -> ServerState | None:
    """What ``state.json`` in ``folder`` says is running; None when nothing was started there."""
    path = _Layout(Path(folder)).state
    if not path.is_file():
        return None
    return ServerState(**json.loads(path.read_text()))


def start(
    folder: Path,
    port: int = 5000,
    pg_port: int = 5433,
    host: str = "127.0.0.1",
    allowed_hosts: str | None = None,
    timeout_s: float = 180,
) -> ServerState:
    """Start PostgreSQL (creating the cluster and the database on first use) and the MLflow
    tracking server in the background; return once the server answers ``/health``.

    ``allowed_hosts``: the Host headers the server accepts (MLflow's ``--allowed-hosts``; its
    default takes localhost and private IP addresses, so machines that reach it by a host name
    need that name here, e.g. ``headnode:5000``).

    Already running from ``folder``: return its state. On failure nothing is left running.
    """
    folder = Path(folder).resolve()
    layout = _Layout(folder)
    running = read_state(folder)
    if running is not None and _alive(running.mlflow_pid):
        return running
    if importlib.util.find_spec("psycopg2") is None:
        raise ServerError(
            f"the tracking server needs the PostgreSQL driver psycopg2, not installed for {sys.executable}: "
            "pip install -e '.[server]' (make setup installs it)"
        )
    if port_in_use(port):
        raise ServerError(f"port {port} on 127.0.0.1 is taken: choose another server port (SERVER_PORT=...)")
    pg_bin = find_pg_bin()
    account = _pg_account()
    folder.mkdir(parents=True, exist_ok=True)
    if not (layout.data / "PG_VERSION").is_file():
        _init_cluster(layout, pg_bin, account)
    _write_private(layout.pgpass, f"127.0.0.1:*:*:{PG_USER}:{layout.password.read_text().strip()}\n")
    layout.artifacts.mkdir(exist_ok=True)
    _start_postgres(layout, pg_bin, pg_port)
    try:
        _ensure_database(layout, pg_bin, pg_port)
        # The driver named: SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3, not psycopg2.
        backend = f"postgresql+psycopg2://{PG_USER}@127.0.0.1:{pg_port}/{PG_DATABASE}"
        url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
        command = [
            sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend,
            "--artifacts-destination", str(layout.artifacts), "--host", host, "--port", str(port), "--workers", "1",
            *(["--allowed-hosts", allowed_hosts] if allowed_hosts else []),
        ]  # fmt: skip
        # MLflow's job runner (GenAI evaluation jobs: seven more Python processes) is of no use here.
        env = {**os.environ, **NO_TELEMETRY, "PGPASSFILE": str(layout.pgpass), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        with open(layout.server_log, "ab") as log:
            # A session of its own: it outlives this command, and stop() ends it and its workers together.
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=folder, start_new_session=True)
        state = ServerState(str(folder), url, host, port, pg_port, str(pg_bin), process.pid, backend, str(layout.artifacts))
        layout.state.write_text(json.dumps(asdict(state), indent=2))
        _wait_healthy(url, process, layout.server_log, timeout_s)
    except BaseException:
        stop(folder, pg_bin=pg_bin)
        raise
    return state


def stop(folder: Path, pg_bin: Path | None = None, timeout_s: float = 30) -> bool:
    """Stop the tracking server and PostgreSQL started from ``folder``; False if nothing ran there."""
    folder = Path(folder).resolve()
    layout = _Layout(folder)
    state = read_state(folder)
    stopped = False
    if state is not None:
        pg_bin = Path(state.pg_bin)
        if _alive(state.mlflow_pid):
            _end_session(state.mlflow_pid, timeout_s)
            stopped = True
        layout.state.unlink(missing_ok=True)
    if pg_bin is None and layout.data.is_dir():
        pg_bin = find_pg_bin()
    if pg_bin is not None and layout.data.is_dir() and _pg_running(layout, pg_bin):
        _stop_postgres(layout, pg_bin)
        stopped = True
    return stopped


def _end_session(pid: int, timeout_s: float) -> None:
    """SIGTERM the server's process group (it and its web workers), then SIGKILL what is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                os.waitpid(pid, os.WNOHANG)  # reap the server if it is our child (a test's)
            except ChildProcessError:
                pass
            if not _group_alive(pid):
                return
            time.sleep(0.2)


def _group_alive(pgid: int) -> bool:
    """Whether a live (not zombie) process of process group ``pgid`` remains."""
    if not Path("/proc/self/stat").exists():  # no /proc: ask the kernel (zombies count as alive)
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()  # state, ppid, pgrp, ...
        except (OSError, IndexError):
            continue  # it ended while we looked
        if fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            return True
    return False


# -- command line --------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m yolomlu.tracking.server", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument("--dir", default=".cache/yolomlu/server", help="the server's folder (default: %(default)s)")
    parser.add_argument("--port", type=int, default=5000, help="tracking server port (default: %(default)s)")
    parser.add_argument("--pg-port", type=int, default=5433, help="PostgreSQL port, on 127.0.0.1 (default: %(default)s)")
    parser.add_argument("--host", default="127.0.0.1", help="interface the tracking server listens on (default: %(default)s)")
    parser.add_argument("--allowed-hosts", default=None, help="Host headers to accept, e.g. headnode:5000 (default: MLflow's)")
    args = parser.parse_args(argv)
    folder = Path(args.dir)
    try:
        if args.action == "start":
            running = read_state(folder)
            if running is not None and _alive(running.mlflow_pid):
                print(f"[yolomlu] already running from {folder}: {running.uri} (pid {running.mlflow_pid})")
                return 0
            state = start(folder, port=args.port, pg_port=args.pg_port, host=args.host, allowed_hosts=args.allowed_hosts)
            print(f"[yolomlu] MLflow tracking server on {state.uri} (pid {state.mlflow_pid}; log {folder / 'mlflow-server.log'})")
            print(f"[yolomlu] backend store {state.backend_store_uri} (PostgreSQL in {folder / 'postgres'}), artifacts in {state.artifacts}")
            print(f"[yolomlu] jobs log to it with: python -m yolomlu tracking.uri={state.uri}")
            if state.host not in ("127.0.0.1", "localhost", "::1"):
                print(f"[yolomlu] from other machines: tracking.uri=http://{socket.getfqdn()}:{state.port}")
            print("[yolomlu] stop it with: make server-stop")
        elif args.action == "stop":
            print(f"[yolomlu] {'stopped the server' if stop(folder) else 'no server was running'} in {folder.resolve()}")
        else:
            state = read_state(folder)
            if state is None or not _alive(state.mlflow_pid):
                print(f"[yolomlu] no server running from {folder.resolve()}")
                return 1
            print(f"[yolomlu] MLflow tracking server on {state.uri} (pid {state.mlflow_pid}), store {state.backend_store_uri}")
    except ServerError as exc:
        print(f"yolomlu: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
