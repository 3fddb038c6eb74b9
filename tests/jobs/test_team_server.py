"""A team's MLflow: a real PostgreSQL (Debian's package, a cluster in a temp folder on a free
port) behind a real `mlflow server` with proxied artifacts and basic auth, started by the
fixture with the same code as `bookpulse tracking-server`. Two analysts, each with a home of
their own, train into the same experiments; one takes churn through promote, score, monitor
and review. Then what goes wrong with a server is named, never blamed on a missing champion.

The tests of this file share the server and run in order (xdist --dist loadfile keeps a file
on one worker)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import threading
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from rich.console import Console
from typer.testing import CliRunner

from bookpulse import cli, cli_tables
from bookpulse.adapters import tracking
from bookpulse.errors import BookpulseError
from bookpulse.jobs.tracking_server import LocalPostgres, add_user, free_port, tracking_server

USERS = {"ana": "ana-Secret-1", "ben": "ben-Secret-2"}
SCORED = "2026-07"  # churn's 3-month window (2026-08..10) has closed by the book's end


@pytest.fixture(scope="module")
def server():
    # not pytest's tmp_path: PostgreSQL runs as `postgres` and must reach its folder
    folder = Path(tempfile.mkdtemp(prefix="bookpulse-team-"))
    os.chmod(folder, 0o755)
    try:
        with tracking_server(folder / "server", port=free_port()) as running:
            for name, password in USERS.items():
                add_user(running.url, running.admin_password, name, password)
            yield running
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    for module in (cli, cli_tables):
        monkeypatch.setattr(module, "console", Console(width=220))
        monkeypatch.setattr(module, "err", Console(width=220, stderr=True))


@pytest.fixture(scope="module")
def homes(tmp_path_factory, trainable_book):
    """Two analysts' homes, both reading the same book."""
    out = {}
    for name in USERS:
        home = tmp_path_factory.mktemp(f"home-{name}")
        (home / "book").symlink_to(trainable_book)
        out[name] = home
    return out


def _env(server, home: Path, user: str | None, password: str | None = None) -> dict:
    env = {"BOOKPULSE_HOME": str(home), "MLFLOW_TRACKING_URI": server.url}
    if user:
        env["MLFLOW_TRACKING_USERNAME"] = user
        env["MLFLOW_TRACKING_PASSWORD"] = password or USERS[user]
    else:
        env["MLFLOW_TRACKING_USERNAME"] = None
        env["MLFLOW_TRACKING_PASSWORD"] = None
    return env


def _bookpulse(server, home, user, *args, password=None):
    tracking._configured = None  # each command is a fresh process in real life
    result = CliRunner().invoke(cli.app, list(args), env=_env(server, home, user, password))
    return result


def test_two_analysts_train_into_the_same_experiments(server, homes):
    for user in USERS:
        res = _bookpulse(server, homes[user], user, "train", "churn", "--threads", "1")
        assert res.exit_code == 0, res.output
    with _as(server, "ana"):
        client = MlflowClient()
        exp = client.get_experiment_by_name("bookpulse-churn")
        runs = client.search_runs([exp.experiment_id])
        assert sorted(r.data.tags["mlflow.user"] for r in runs) == ["ana", "ben"]
        # artifacts go through the server's proxy: clients never see its folder
        assert exp.artifact_location.startswith("mlflow-artifacts:")
        for run in runs:
            assert run.info.artifact_uri.startswith("mlflow-artifacts:")
            assert str(server.folder) not in run.info.artifact_uri
        versions = client.search_model_versions("name = 'bookpulse-churn'")
        assert len(versions) == 2
        assert all(str(server.folder) not in v.source for v in versions)
        # the analyst's MLflow: a classic ML experiment, described, with its analyst view
        assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
        assert "leave within the next three months" in exp.tags["mlflow.note.content"]
        assert "metrics.`gap_to_ceiling`" in exp.tags["mlflow.sharedViewState.analyst"]
        model = client.get_registered_model("bookpulse-churn")
        assert "leave within the next three months" in model.description
        newest = max(versions, key=lambda v: int(v.version))
        assert newest.description.startswith("# Model card: churn")
        assert {"window.test", "spec_hash", "feature_set_hash", "book"} <= set(newest.tags)
    # the artifacts really are in the server's folder
    assert list((server.folder / "artifacts").rglob("scoring_model.json"))


def test_runs_and_the_notebook_compare_both_analysts(server, homes):
    res = _bookpulse(server, homes["ben"], "ben", "runs", "churn")
    assert res.exit_code == 0, res.output
    by = next(line for line in res.output.splitlines() if line.strip().startswith("│ by"))
    assert "ana" in by and "ben" in by

    import nbformat
    from nbclient import NotebookClient

    path = Path(__file__).parents[2] / "notebooks" / "01-compare-experiments.ipynb"
    nb = nbformat.read(path, as_version=4)
    with _as(server, "ana", homes["ana"]):
        NotebookClient(nb, timeout=300, kernel_name="python3").execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(
        str(o.get("data", {}).get("text/plain", "")) + o.get("text", "") for o in outputs
    )
    assert server.url in text  # it read the server, not a home's store
    assert "ana" in text and "ben" in text


def test_promote_score_monitor_review_against_the_server(server, homes):
    home = homes["ana"]
    steps = [
        ("promote", "churn"),
        ("score", "--as-of", SCORED, "--threads", "1"),
        ("monitor", "--as-of", SCORED),
        ("review", "--scored", SCORED),
    ]
    for step in steps:
        res = _bookpulse(server, home, "ana", *step)
        assert res.exit_code == 0, (step, res.output)
    assert (home / "scores" / SCORED / "manifest.json").is_file()
    with _as(server, "ben"):
        client = MlflowClient()
        champion = client.get_model_version_by_alias("bookpulse-churn", tracking.CHAMPION)
        monitoring = client.get_experiment_by_name("bookpulse-monitoring")
        kinds = {r.data.tags["kind"] for r in client.search_runs([monitoring.experiment_id])}
        promotions = client.get_experiment_by_name("bookpulse-promotions")
        decided = client.search_runs([promotions.experiment_id])
    assert kinds == {"monitor", "review"}
    assert decided[0].data.tags["mlflow.user"] == "ana"
    assert champion.version
    # the other analyst scores the same month with the team's champion, from their own home
    res = _bookpulse(server, homes["ben"], "ben", "score", "--as-of", SCORED, "--threads", "1")
    assert res.exit_code == 0, res.output
    manifest = json.loads((homes["ben"] / "scores" / SCORED / "manifest.json").read_text())
    assert manifest["models"]["churn"]["version"] == str(champion.version)
    assert manifest["models"]["churn"]["run_id"] == champion.run_id


def test_the_admin_adds_a_user_by_command(server, homes, monkeypatch):
    env = {
        "MLFLOW_TRACKING_URI": server.url,
        "BOOKPULSE_HOME": str(homes["ana"]),
        "MLFLOW_AUTH_ADMIN_PASSWORD": server.admin_password,
    }
    short = CliRunner().invoke(
        cli.app, ["tracking-user", "carl", "--password", "too-short"], env=env
    )
    assert short.exit_code == 2
    assert "would not add user carl: Password must be at least 12 characters" in short.output
    res = CliRunner().invoke(
        cli.app,
        ["tracking-user", "carl"],
        env={**env, "BOOKPULSE_NEW_USER_PASSWORD": "carl-Secret-3"},
    )
    assert res.exit_code == 0, res.output
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "carl")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "carl-Secret-3")
    tracking.check_server(server.url)  # carl signs in
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "carl-wrong-pw")
    with pytest.raises(BookpulseError, match="refused the password of user 'carl'"):
        tracking.check_server(server.url)


# --- trouble, named ----------------------------------------------------------------------


def test_a_wrong_password_is_named(server, homes):
    res = _bookpulse(server, homes["ana"], "ana", "score", "--as-of", SCORED, password="nope")
    assert res.exit_code == 2
    assert "refused the password of user 'ana'" in res.output
    assert "champion" not in res.output


def test_no_credentials_are_named(server, homes):
    res = _bookpulse(server, homes["ana"], None, "runs", "churn")
    assert res.exit_code == 2
    assert "refused calls without credentials" in res.output
    assert "MLFLOW_TRACKING_USERNAME" in res.output


def test_a_model_never_trained_on_the_server_is_named_not_a_missing_champion(server, homes):
    for args in (("runs", "wealth_take_up"), ("promote", "wealth_take_up")):
        res = _bookpulse(server, homes["ana"], "ana", *args)
        assert res.exit_code == 2, res.output
        assert "has no experiment bookpulse-wealth_take_up" in res.output
        assert "never trained there" in res.output
        assert "champion" not in res.output


def test_a_server_that_refuses_connections_is_named(server, homes):
    closed = f"http://127.0.0.1:{free_port()}"
    tracking._configured = None
    res = CliRunner().invoke(
        cli.app,
        ["score", "--as-of", SCORED],
        env={**_env(server, homes["ana"], "ana"), "MLFLOW_TRACKING_URI": closed},
    )
    assert res.exit_code == 2
    assert f"the MLflow tracking server at {closed} does not answer" in res.output
    assert "champion" not in res.output


def test_a_server_that_accepts_but_never_answers_is_named():
    """A hung server (the connection accepted, no reply): the probe's timeout names it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    held = []
    threading.Thread(target=lambda: held.append(listener.accept()), daemon=True).start()
    uri = f"http://127.0.0.1:{listener.getsockname()[1]}"
    try:
        with pytest.raises(BookpulseError, match="does not answer .*timed out"):
            tracking.check_server(uri, timeout=1.0)
    finally:
        listener.close()


def test_bounded_retries_are_set_for_a_server(server, homes, monkeypatch):
    for key in tracking.BOUNDED_RETRIES:
        monkeypatch.delenv(key, raising=False)
    with _as(server, "ana"):
        assert int(os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]) <= 2
        assert int(os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"]) <= 30


def test_a_server_whose_database_is_down_is_named(server, homes):
    """Last in the file: it stops the server's PostgreSQL."""
    LocalPostgres(server.folder, 0).stop()
    res = _bookpulse(server, homes["ana"], "ana", "runs", "churn")
    assert res.exit_code == 2
    assert "answers but fails (HTTP 5" in res.output
    assert "its database may be down" in res.output


class _as:
    """Act as `user` against the server in this process (and restore the environment)."""

    def __init__(self, server, user: str, home: Path | None = None):
        self.env = {
            "MLFLOW_TRACKING_URI": server.url,
            "MLFLOW_TRACKING_USERNAME": user,
            "MLFLOW_TRACKING_PASSWORD": USERS[user],
        }
        if home is not None:
            self.env["BOOKPULSE_HOME"] = str(home)
        self.home = home or Path(tempfile.gettempdir())

    def __enter__(self):
        self.before = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        tracking._configured = None
        tracking.configure(self.home)
        return self

    def __exit__(self, *exc):
        for key, value in self.before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        tracking._configured = None
        return False


def test_an_address_that_is_not_an_mlflow_server_is_named():
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class NotFound(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    web = ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    try:
        uri = f"http://127.0.0.1:{web.server_address[1]}"
        with pytest.raises(BookpulseError, match="is not an MLflow tracking server"):
            tracking.check_server(uri, timeout=5.0)
    finally:
        web.shutdown()
