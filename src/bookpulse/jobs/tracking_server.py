"""A team's MLflow: a tracking server on PostgreSQL with proxied artifacts and basic auth, and
the analyst's UI on one home. Both run `mlflow server` under the same supervision: one web
worker, no background job consumers (bookpulse runs no GenAI jobs), stopped as a process group.

The server's folder holds everything it writes:
    pgdata/            the local PostgreSQL cluster (when no --database is given)
    artifacts/         what clients upload (they see `mlflow-artifacts:/` URIs, never this path)
    db-password        the local cluster's password for its `bookpulse` role (mode 600)
    admin-password     the MLflow admin's password, made on first start (mode 600)
    flask-secret       the key MLflow's auth app signs its CSRF tokens with (mode 600)
    auth.ini           MLflow's basic-auth settings (no password in it)
    postgres.log, mlflow.log
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from bookpulse.errors import BookpulseError

ADMIN = "admin"
DB_ROLE = "bookpulse"
DATABASES = ("mlflow", "mlflow_auth")
# every authenticated team member may log runs into any experiment and register versions of
# any model; anonymous calls are refused; the admin can narrow a user per experiment or model
DEFAULT_PERMISSION = "EDIT"
START_SECONDS = 180.0  # first start on a busy machine: PostgreSQL's initdb, MLflow's migrations


class ServerError(BookpulseError):
    """A tracking server or its database could not be started; the message says why."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _secret(path: Path) -> str:
    """The secret kept in `path` (mode 600), made on first use."""
    if not path.is_file():
        path.write_text(secrets.token_urlsafe(18) + "\n")
        path.chmod(0o600)
    return path.read_text().strip()


# --- PostgreSQL --------------------------------------------------------------------------


def _pg_bin() -> Path:
    """Debian's PostgreSQL server programs (the newest installed), else those on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version_key)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    raise ServerError(
        "PostgreSQL's server is not installed: `apt-get install postgresql` (Debian's package; "
        "`.ci/run` does this), or give your bank's own database with --database"
    )


def _version_key(path: str) -> int:
    part = Path(path).parts[-3]
    return int(part) if part.isdigit() else 0


def _as_owner(argv: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run its programs as Debian's `postgres`."""
    if os.geteuid() != 0:
        return argv
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        raise ServerError(
            "running as root, PostgreSQL needs the `postgres` user that Debian's postgresql "
            "package creates: `apt-get install postgresql`, or run as an ordinary user"
        ) from None
    return ["runuser", "-u", "postgres", "--", *argv]


def _run(argv: list[str], what: str, log: Path | None = None) -> None:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        where = f" (log: {log})" if log else ""
        raise ServerError(f"{what} failed{where}: " + " / ".join(tail))


@dataclass
class LocalPostgres:
    """A PostgreSQL cluster in `folder/pgdata`, listening on 127.0.0.1:`port` only, password
    required (scram-sha-256), for the role `bookpulse`."""

    folder: Path
    port: int

    @property
    def data(self) -> Path:
        return self.folder / "pgdata"

    @property
    def log(self) -> Path:
        return self.folder / "postgres.log"

    def url(self, database: str) -> str:
        """The database's URL without its password (the server gets it as PGPASSWORD, so it
        shows in no process list)."""
        return f"postgresql+psycopg://{DB_ROLE}@127.0.0.1:{self.port}/{database}"

    @property
    def password(self) -> str:
        return _secret(self.folder / "db-password")

    def _own(self, path: Path) -> None:
        if os.geteuid() == 0:
            shutil.chown(path, "postgres", "postgres")

    def start(self) -> None:
        bin_dir = _pg_bin()
        self.folder.mkdir(parents=True, exist_ok=True)
        password_file = self.folder / "db-password"
        _secret(password_file)
        if not (self.data / "PG_VERSION").is_file():
            self.data.mkdir(exist_ok=True)
            self._own(self.data)
            self.data.chmod(0o700)
            pwfile = self.folder / ".initdb-pw"  # readable by the server's user for initdb only
            pwfile.write_text(password_file.read_text())
            self._own(pwfile)
            try:
                _run(
                    _as_owner(
                        [
                            str(bin_dir / "initdb"),
                            "-D",
                            str(self.data),
                            "-U",
                            DB_ROLE,
                            f"--pwfile={pwfile}",
                            "--auth=scram-sha-256",
                            "--encoding=UTF8",
                            "--locale=C",
                        ]
                    ),
                    "PostgreSQL's initdb",
                )
            finally:
                pwfile.unlink(missing_ok=True)
        self.log.touch()
        self._own(self.log)
        self._check_reachable_by_owner()
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.data}"
        _run(
            _as_owner(
                [
                    str(bin_dir / "pg_ctl"),
                    "-D",
                    str(self.data),
                    "-o",
                    options,
                    "-l",
                    str(self.log),
                    "-w",
                    "-t",
                    str(int(START_SECONDS)),
                    "start",
                ]
            ),
            "starting PostgreSQL",
            self.log,
        )
        self._create_databases()

    def _check_reachable_by_owner(self) -> None:
        if os.geteuid() != 0:
            return
        probe = subprocess.run(_as_owner(["test", "-w", str(self.data)]), capture_output=True)
        if probe.returncode != 0:
            raise ServerError(
                f"the `postgres` user cannot reach {self.data}: a folder above it is closed to "
                "other users; put the tracking server's folder where they can pass (--folder)"
            )

    def _create_databases(self) -> None:
        import psycopg

        url = self.url("postgres").replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(
            url, password=self.password, autocommit=True, connect_timeout=30
        ) as con:
            have = {r[0] for r in con.execute("SELECT datname FROM pg_database")}
            for name in DATABASES:
                if name not in have:
                    con.execute(f'CREATE DATABASE "{name}"')

    def stop(self) -> None:
        if not (self.data / "postmaster.pid").is_file():
            return
        subprocess.run(
            _as_owner(
                [str(_pg_bin() / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"]
            ),
            capture_output=True,
        )


# --- mlflow server -----------------------------------------------------------------------


def mlflow_server_argv(
    backend: str, host: str, port: int, artifacts: str | None, auth: bool
) -> list[str]:
    """`mlflow server` with one web worker; artifacts proxied when `artifacts` is given."""
    argv = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--backend-store-uri",
        backend,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    if artifacts:
        argv += ["--serve-artifacts", "--artifacts-destination", artifacts]
    if auth:
        argv += ["--app-name", "basic-auth"]
    return argv


def server_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    # the GenAI job consumers (judges, trace archival) have nothing to do for bookpulse
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        env.pop(key, None)
    env.update(extra or {})
    return env


def wait_until_answers(url: str, proc: subprocess.Popen, log: Path, seconds: float) -> float:
    """Seconds until `url`/health answers; refused when the process dies or time runs out."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if proc.poll() is not None:
            raise ServerError(f"mlflow server stopped at start: {_tail(log)} (log: {log})")
        try:
            urllib.request.urlopen(f"{url}/health", timeout=5).close()
            return time.monotonic() - start
        except urllib.error.HTTPError:
            return time.monotonic() - start
        except (urllib.error.URLError, OSError):
            time.sleep(0.3)
    raise ServerError(f"mlflow server did not answer within {seconds:.0f} s (log: {log})")


def _tail(log: Path, lines: int = 3) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " / ".join(text[-lines:])


def stop_group(proc: subprocess.Popen, grace: float = 20.0) -> None:
    """SIGTERM to the server's whole process group (its web worker too), SIGKILL after
    `grace` seconds; returns when every process of the group has gone."""
    if proc.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
    # the leader may be gone while a worker lingers: finish the group
    deadline = time.monotonic() + grace
    while _group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _group_alive(proc.pid):
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    if proc.poll() is None:
        proc.wait(5)


def processes_with(text: str) -> list[str]:
    """The command lines of running processes that contain `text` (e.g. a server's port)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in args:
            found.append(args.strip())
    return found


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


@dataclass(frozen=True)
class Supervised:
    proc: subprocess.Popen
    seconds_to_answer: float
    log: Path

    def wait(self) -> None:
        """Until the server stops on its own (refused as an error) or the caller is
        interrupted (Ctrl-C, SIGTERM: the block's end then stops it)."""
        while self.proc.poll() is None:
            time.sleep(0.5)
        raise ServerError(f"mlflow server stopped: {_tail(self.log)} (log: {self.log})")


@contextmanager
def supervised(argv: list[str], env: dict[str, str], url: str, log: Path) -> Iterator[Supervised]:
    """Run `argv` in its own process group until the block ends, once it answers."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield Supervised(proc, wait_until_answers(url, proc, log, START_SECONDS), log)
    finally:
        stop_group(proc)


@dataclass(frozen=True)
class Running:
    url: str  # what MLFLOW_TRACKING_URI should say
    admin_password: str
    server: Supervised
    folder: Path


def auth_config(folder: Path, database_uri: str) -> Path:
    path = folder / "auth.ini"
    path.write_text(
        "[mlflow]\n"
        f"default_permission = {DEFAULT_PERMISSION}\n"
        f"database_uri = {database_uri}\n"
        f"admin_username = {ADMIN}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    path.chmod(0o600)
    return path


@contextmanager
def tracking_server(
    folder: Path,
    host: str = "127.0.0.1",
    port: int = 5000,
    database: str | None = None,
    auth_database: str | None = None,
) -> Iterator[Running]:
    """The team's tracking server, running until the block ends: PostgreSQL (a local cluster
    in `folder` unless `database` names the bank's own), artifacts proxied from
    `folder/artifacts`, MLflow's basic auth with `admin` and the users the admin adds."""
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    if _port_taken(host, port):
        raise ServerError(f"port {port} on {host} is taken: choose another (--port)")
    pg, db_env = None, {}
    if database is None:
        pg = LocalPostgres(folder, free_port())
        pg.start()
        database, auth_database = pg.url("mlflow"), pg.url("mlflow_auth")
        db_env = {"PGPASSWORD": pg.password}
    elif auth_database is None:
        raise ServerError("with --database, give --auth-database too (MLflow's users and rights)")
    try:
        admin_password = os.environ.get("MLFLOW_AUTH_ADMIN_PASSWORD") or _secret(
            folder / "admin-password"
        )
        artifacts = folder / "artifacts"
        artifacts.mkdir(exist_ok=True)
        env = server_env(
            {
                **db_env,
                "MLFLOW_AUTH_CONFIG_PATH": str(auth_config(folder, auth_database)),
                "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password,
                # the auth app's CSRF protection signs with it; kept so restarts agree
                "MLFLOW_FLASK_SERVER_SECRET_KEY": _secret(folder / "flask-secret"),
            }
        )
        argv = mlflow_server_argv(database, host, port, str(artifacts), auth=True)
        url = f"http://{host}:{port}"
        with supervised(argv, env, url, folder / "mlflow.log") as server:
            yield Running(url, admin_password, server, folder)
    finally:
        if pg is not None:
            pg.stop()


def _port_taken(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0


def add_user(url: str, admin_password: str, name: str, password: str) -> None:
    """Create a user on the server (or set the password of one that exists)."""
    import base64
    import json

    token = base64.b64encode(f"{ADMIN}:{admin_password}".encode()).decode()
    headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}

    def call(path: str, method: str, body: dict) -> tuple[int, dict]:
        req = urllib.request.Request(
            f"{url}{path}", data=json.dumps(body).encode(), headers=headers, method=method
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as reply:
                return reply.status, {}
        except urllib.error.HTTPError as exc:
            try:
                return exc.code, json.loads(exc.read() or b"{}")
            except ValueError:
                return exc.code, {}

    body = {"username": name, "password": password}
    status, error = call("/api/2.0/mlflow/users/create", "POST", body)
    if status == 401:
        raise ServerError(f"the server at {url} refused the admin's password")
    if error.get("error_code") == "RESOURCE_ALREADY_EXISTS":  # there: set the password given
        status, error = call("/api/2.0/mlflow/users/update-password", "PATCH", body)
    if status >= 300:
        why = error.get("message") or f"HTTP {status}"
        raise ServerError(f"the server at {url} would not add user {name}: {why}")


# --- the analyst's UI on one home ----------------------------------------------------------


@contextmanager
def ui(
    home: Path, host: str = "127.0.0.1", port: int = 5000
) -> Iterator[tuple[str, Supervised, dict[str, str]]]:
    """MLflow's UI on the home's embedded store, until the block ends: one web worker, no
    job consumers, the store relocated first if the home was moved, and every bookpulse
    experiment labelled (classic ML, the analyst's view). Yields (URL, experiment -> link to
    its analyst view)."""
    from mlflow.tracking import MlflowClient

    from bookpulse.adapters import tracking
    from bookpulse.jobs.train import model_experiment
    from bookpulse.jobs.uplift import ANALYST_METRICS as UPLIFT_METRICS
    from bookpulse.specs import load_model_specs, load_uplift_specs

    if tracking.on_server():
        raise ServerError(
            f"MLFLOW_TRACKING_URI names a tracking server ({os.environ['MLFLOW_TRACKING_URI']}): "
            "its UI is at that address; `bookpulse ui` shows the embedded store of a home "
            "(unset MLFLOW_TRACKING_URI)"
        )
    home = Path(home).resolve()
    uri = tracking.configure(home)
    client = MlflowClient()
    if _port_taken(host, port):
        raise ServerError(f"port {port} on {host} is taken: choose another (--port)")
    links = {}
    for spec in load_model_specs().values():
        if client.get_experiment_by_name(spec.registered_name):
            links[spec.registered_name] = model_experiment(home, spec)
    for spec, _ in load_uplift_specs().values():
        if client.get_experiment_by_name(spec.registered_name):
            links[spec.registered_name] = model_experiment(home, spec, UPLIFT_METRICS)
    argv = mlflow_server_argv(uri, host, port, None, auth=False) + [
        "--default-artifact-root",
        (home / "mlartifacts").as_uri(),
        "--no-serve-artifacts",
    ]
    url = f"http://{host}:{port}"
    with supervised(argv, server_env(), url, home / "logs" / "mlflow-ui.log") as server:
        yield url, server, {name: tracking.view_url(url, eid) for name, eid in links.items()}
