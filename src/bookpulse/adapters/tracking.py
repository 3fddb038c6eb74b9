"""MLflow: where runs and models live, and the registered artifact others can load.

Tracking defaults to `sqlite:///$BOOKPULSE_HOME/mlflow.db` with artifacts under
`$BOOKPULSE_HOME/mlartifacts/<experiment>` (never `./mlruns`); `MLFLOW_TRACKING_URI` points it
at a real server instead. One experiment per model: `bookpulse-<model>`.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient

from bookpulse.errors import BookpulseError
from bookpulse.model.fit import ScoringModel

MODEL_FILE = "scoring_model.json"
UPLIFT_MODEL_FILE = "uplift_model.json"
REFERENCE_FILE = "reference.json"  # the training window's profile, for the monitor
CHALLENGER = "challenger"
CHAMPION = "champion"


def tracking_uri(home: Path) -> str:
    """The tracking URI in force: MLFLOW_TRACKING_URI, else the embedded sqlite store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(home).resolve()}/mlflow.db"


PROBE_SECONDS = 10.0
# MLflow's client retries a failing call 7 times with a doubling back-off (minutes of silence);
# bookpulse checks the server first, so a job fails within seconds with the cause named
BOUNDED_RETRIES = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
UNSET = "unset MLFLOW_TRACKING_URI to use the embedded store under $BOOKPULSE_HOME"


def _auth_header() -> dict[str, str]:
    import base64

    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if token:
        return {"Authorization": f"Bearer {token}"}
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if user:
        pair = f"{user}:{os.environ.get('MLFLOW_TRACKING_PASSWORD', '')}".encode()
        return {"Authorization": f"Basic {base64.b64encode(pair).decode()}"}
    return {}


def check_server(uri: str, timeout: float = PROBE_SECONDS) -> None:
    """Refuse at once a tracking server that bookpulse cannot use, naming why: it does not
    answer (down, wrong address, a firewall), it refuses the credentials, it answers but fails
    (its database down), or it is not an MLflow server. Two calls, each bounded by `timeout`
    (MLflow's own client would retry for minutes and then blame a missing model)."""
    import urllib.error
    import urllib.request

    base = uri.rstrip("/")
    try:
        urllib.request.urlopen(f"{base}/health", timeout=timeout).close()
    except urllib.error.HTTPError:
        pass  # it answered; the real call below says more
    except (urllib.error.URLError, OSError) as exc:
        why = getattr(exc, "reason", exc)
        raise BookpulseError(
            f"the MLflow tracking server at {uri} does not answer ({why}): start it "
            f"(`make tracking-server`), check the address, or {UNSET}"
        ) from None
    # one authenticated read, as every job's first call would be
    request = urllib.request.Request(
        f"{base}/api/2.0/mlflow/experiments/search?max_results=1", headers=_auth_header()
    )
    try:
        urllib.request.urlopen(request, timeout=timeout).close()
        return
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:
        why = getattr(exc, "reason", exc)
        raise BookpulseError(
            f"the MLflow tracking server at {uri} answered its health check but not a "
            f"search ({why}): it is overloaded or failing; ask its administrator"
        ) from None
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if status == 401:
        who = f"the password of user {user!r}" if user else "calls without credentials"
        raise BookpulseError(
            f"the MLflow tracking server at {uri} refused {who}: set MLFLOW_TRACKING_USERNAME "
            "and MLFLOW_TRACKING_PASSWORD to the account its administrator gave you"
        )
    if status == 403:
        raise BookpulseError(
            f"the MLflow tracking server at {uri} let user {user!r} in but not read "
            "experiments: ask its administrator for READ (and EDIT to train) permission"
        )
    if status == 404:
        raise BookpulseError(
            f"{uri} answers but is not an MLflow tracking server (no experiments API): check "
            f"MLFLOW_TRACKING_URI, or {UNSET}"
        )
    raise BookpulseError(
        f"the MLflow tracking server at {uri} answers but fails (HTTP {status}): its database "
        "may be down; see the server's log (`mlflow.log` in its folder)"
    )


_configured: tuple | None = None  # (tracking URI, registry URI) set by the last call


def _home_of(artifact_location: str | None) -> str | None:
    """The home an experiment's artifact location was made under (`file://HOME/mlartifacts/
    NAME`), or None for any other location."""
    if not artifact_location or not artifact_location.startswith("file://"):
        return None
    path = artifact_location.removeprefix("file://")
    return path.split("/mlartifacts/")[0] if "/mlartifacts/" in path else None


def relocate_store(home: Path) -> str | None:
    """Make a copied or moved home self-contained: when the embedded store (`mlflow.db`)
    still names the home it was made in, every such path in it (experiments', runs', logged
    models' and model versions' artifact locations; the book's path in tags and dataset
    sources) is rewritten to this home, in one transaction, before MLflow opens it. So the
    copy reads and writes its own artifacts, never the original's. Returns the old home when it
    rewrote anything."""
    import sqlite3

    db = Path(home) / "mlflow.db"
    if not db.is_file():
        return None
    here = str(Path(home).resolve())
    con = sqlite3.connect(db, timeout=30)
    try:
        con.execute("BEGIN IMMEDIATE")  # one process rewrites; the others then find nothing
        homes = {_home_of(r[0]) for r in con.execute("SELECT artifact_location FROM experiments")}
        old = next((h for h in sorted(homes - {None, here}) if h), None)
        if old is None:
            con.rollback()
            return None
        for table, column in _text_columns(con):
            # every value naming a path under the old home, or the old home itself
            con.execute(
                f'UPDATE "{table}" SET "{column}" = replace("{column}", ?, ?) '
                f'WHERE instr("{column}", ?) > 0',
                (old + "/", here + "/", old + "/"),
            )
            con.execute(f'UPDATE "{table}" SET "{column}" = ? WHERE "{column}" = ?', (here, old))
        con.commit()
        return old
    finally:
        con.close()


def _text_columns(con) -> list[tuple[str, str]]:
    tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    out = []
    for table in tables:
        for _, column, kind, *_ in con.execute(f'PRAGMA table_info("{table}")'):
            if any(t in kind.upper() for t in ("CHAR", "TEXT", "CLOB")):
                out.append((table, column))
    return out


def create_store(home: Path) -> bool:
    """Make the embedded store of a home that has none. MLflow builds a new store by running
    its schema migrations (some 60 steps, each a transaction the disk must flush: ~5 s on this
    machine's disk against ~1 s in memory), so they run on a scratch copy in memory (/dev/shm
    where there is one) and the finished file is moved in whole: the same schema MLflow would
    have built in place, flushed once. Nothing happens when the home already has a store, or
    when another process makes it first. Returns True when it made one."""
    import shutil
    import tempfile

    from mlflow.store.tracking import DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    db = Path(home) / "mlflow.db"
    if db.exists():
        return False
    memory = Path("/dev/shm")
    scratch = Path(
        tempfile.mkdtemp(prefix="bookpulse-store-", dir=memory if memory.is_dir() else None)
    )
    staged = db.with_name(f".mlflow.db.{os.getpid()}")
    try:
        built = scratch / "mlflow.db"
        uri = f"sqlite:///{built}"
        SqlAlchemyStore(uri, DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH)
        SqlAlchemyStore._engine_map.pop(uri).dispose()
        shutil.copyfile(built, staged)
        with staged.open("rb+") as fh:
            os.fsync(fh.fileno())
        try:
            os.link(staged, db)  # only if no other process made the store meanwhile
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links
            if db.exists():
                return False
            os.replace(staged, db)
        return True
    finally:
        staged.unlink(missing_ok=True)
        shutil.rmtree(scratch, ignore_errors=True)


def configure(home: Path) -> str:
    """Point MLflow at the home's tracking store (or MLFLOW_TRACKING_URI). Each job calls it
    once on entry; a call that changes nothing does nothing (the demo runs several jobs)."""
    global _configured
    home = Path(home)
    # a model's artifacts are a few dozen files: no progress bar per download in job output
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    before = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    uri = tracking_uri(home)
    wanted = (uri, before["MLFLOW_REGISTRY_URI"] or uri)
    if wanted == _configured and mlflow.get_tracking_uri() == uri:
        return uri
    home.mkdir(parents=True, exist_ok=True)
    if uri.startswith(("http://", "https://")):
        for key, value in BOUNDED_RETRIES.items():
            os.environ.setdefault(key, value)
        check_server(uri)
    if not before["MLFLOW_TRACKING_URI"]:
        relocate_store(home)
        create_store(home)
    mlflow.set_tracking_uri(uri)
    # the registry follows tracking unless the user pointed it elsewhere
    mlflow.set_registry_uri(before["MLFLOW_REGISTRY_URI"] or uri)
    # set_*_uri also export MLFLOW_*_URI; leave the user's environment as it was, so that it
    # keeps telling "a server was asked for" from "the embedded default" (and a later call for
    # another home is not pinned to this one).
    for key, value in before.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    _configured = wanted
    return uri


# MLflow 3 opens an experiment in its GenAI view (traces, judges) unless told what it is
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
SHARED_VIEW = "mlflow.sharedViewState."
ANALYST_VIEW = "analyst"  # the saved view `bookpulse ui` opens: the metrics analysts compare


def analyst_view(metrics: Sequence[str], params: Sequence[str] = ()) -> str:
    """MLflow's saved-view envelope for the runs table: who ran it, the given metrics (first
    one sorted, best first) and parameters as columns, newest runs' table in full."""
    columns = ["attributes.`User`"]
    columns += [f"params.`{p}`" for p in params] + [f"metrics.`{m}`" for m in metrics]
    state = {
        "searchFilter": "",
        "orderByKey": "attributes.start_time",
        "orderByAsc": False,
        "startTime": "ALL",
        "lifecycleFilter": "Active",
        "modelVersionFilter": "All Runs",
        "datasetsFilter": [],
        "selectedColumns": columns,
        "runsHiddenMode": "SHOW_ALL",
        "viewMaximized": False,
        "runListHidden": False,
        "isAccordionReordered": False,
        "groupBy": None,
        "groupsExpanded": {},
    }
    return json.dumps(
        {
            "name": "bookpulse: the metrics analysts compare",
            "createdAt": 0,
            "updatedAt": 0,
            "state": json.dumps(state),
        }
    )


def view_url(base: str, experiment: str) -> str:
    """The link that opens an experiment's runs in the analyst's view, in MLflow's
    model-training mode (its GenAI mode is the default for a browser that never chose)."""
    return (
        f"{base.rstrip('/')}/#/experiments/{experiment}/runs"
        f"?viewStateShareKey={ANALYST_VIEW}&workflowType=machine_learning"
    )


def on_server() -> bool:
    return (os.environ.get("MLFLOW_TRACKING_URI") or "").startswith(("http://", "https://"))


def missing_experiment(name: str, model: str) -> str | None:
    """On a tracking server, why `name` cannot be read when its experiment is not there (a
    model never trained on this server, or the wrong server); None when it is, or on the
    embedded store (where a fresh home simply has nothing yet)."""
    if not on_server() or MlflowClient().get_experiment_by_name(name) is not None:
        return None
    return (
        f"the tracking server at {os.environ['MLFLOW_TRACKING_URI']} has no experiment {name}: "
        f"{model} was never trained there. Train it there (`bookpulse train {model}`), or check "
        "that MLFLOW_TRACKING_URI names your team's server"
    )


def who() -> dict[str, str]:
    """The run's user: the account signed in to the tracking server when there is one (two
    analysts on one machine account still show apart), else MLflow's own (the OS user)."""
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    return {"mlflow.user": user} if user and os.environ.get("MLFLOW_TRACKING_URI") else {}


def experiment_id(
    home: Path,
    name: str,
    description: str = "",
    metrics: Sequence[str] = (),
    params: Sequence[str] = (),
) -> str:
    """The experiment `name`, created with its artifacts under $BOOKPULSE_HOME when new
    (on a server: wherever the server keeps them). It opens as a classic machine-learning
    experiment, with `description` as its note and, when `metrics` are given, the analyst's
    view of them; tags already right are left as they are."""
    client = MlflowClient()
    found = client.get_experiment_by_name(name)
    tags = dict(EXPERIMENT_KIND)
    if description:
        tags["mlflow.note.content"] = description.strip()
    if metrics:
        tags[SHARED_VIEW + ANALYST_VIEW] = analyst_view(metrics, params)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            # someone deleted it in the UI; its name is still taken, so bring it back
            client.restore_experiment(found.experiment_id)
        for key, value in tags.items():
            if found.tags.get(key) != value:
                client.set_experiment_tag(found.experiment_id, key, value)
        return found.experiment_id
    location = None
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        location = (Path(home).resolve() / "mlartifacts" / name).as_uri()
    return client.create_experiment(name, artifact_location=location, tags=tags)


with warnings.catch_warnings(record=True):
    # MLflow suggests type hints on predict; the signature logged with the model is the contract.
    # (record=True: MLflow re-enables the warning inside its own check, so only swallowing the
    # record keeps it off the console.)
    warnings.simplefilter("ignore", UserWarning)

    class CalibratedProbability(mlflow.pyfunc.PythonModel):
        """The registered artifact: a feature frame in, calibrated event probabilities out.

        Categorical features may arrive as strings; they are mapped to the training levels
        (unknown levels count as missing)."""

        def load_context(self, context) -> None:
            text = Path(context.artifacts["scoring_model"]).read_text()
            self.model = ScoringModel.from_json(text, threads=1)

        def predict(self, context, model_input, params=None):
            frame = pd.DataFrame(model_input)
            return pd.DataFrame({"probability": self.model.predict(frame)})

    class UpliftEffect(mlflow.pyfunc.PythonModel):
        """The registered artifact of an uplift model: a feature frame in, the change in the
        outcome's probability from putting each row in the list's treated arm out."""

        def load_context(self, context) -> None:
            from bookpulse.model.uplift import UpliftModel

            text = Path(context.artifacts["uplift_model"]).read_text()
            self.model = UpliftModel.from_json(text, threads=1)

        def predict(self, context, model_input, params=None):
            return pd.DataFrame({"effect": self.model.effect(pd.DataFrame(model_input))})


DESCRIPTION_LIMIT = 5000  # MLflow's SQL registry keeps at most this many characters


def register(
    python_model,
    artifacts: dict[str, str],
    example: pd.DataFrame,
    output: pd.DataFrame,
    name: str,
    description: str = "",
    card: str = "",
    tags: dict[str, str] | None = None,
) -> str:
    """Log the pyfunc (its artifacts, the package's code, signature, input example, pinned
    requirements) in the active run, register it as `name` and give the new version the
    alias `challenger`; returns the version. The registered model carries `description`
    (the spec's), the version its model card (Markdown, which the registry page renders) and
    `tags` (windows, book, spec and feature-set hashes)."""
    import contextlib
    from io import StringIO

    from mlflow.models import infer_signature

    import bookpulse

    with contextlib.redirect_stderr(StringIO()):  # "Successfully registered ..."
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=python_model,
            artifacts=artifacts,
            code_paths=[str(Path(bookpulse.__file__).parent)],
            signature=infer_signature(example, output),
            input_example=example,
            pip_requirements=pip_requirements(),
            registered_model_name=name,
        )
    version = str(info.registered_model_version)
    client = MlflowClient()
    if description:
        client.update_registered_model(name, description=description.strip())
    if card:
        client.update_model_version(name, version, description=_fit(card))
    for key, value in (tags or {}).items():
        client.set_model_version_tag(name, version, key, str(value))
    client.set_registered_model_alias(name, CHALLENGER, version)
    return version


def _fit(card: str) -> str:
    if len(card) <= DESCRIPTION_LIMIT:
        return card
    tail = "\n\n... (cut: the whole card is `validation/model_card.md` in the run's artifacts)"
    return card[: DESCRIPTION_LIMIT - len(tail)] + tail


def example_input(frame: pd.DataFrame, features: list[str], rows: int = 5) -> pd.DataFrame:
    """A few rows as an API client would send them: categoricals as plain strings, numbers
    as doubles (any numeric feature may be missing)."""
    ex = frame[features].head(rows).copy()
    for col in ex.columns:
        if isinstance(ex[col].dtype, pd.CategoricalDtype):
            ex[col] = ex[col].astype("object")
        else:
            ex[col] = ex[col].astype("float64")
    return ex


def pip_requirements() -> list[str]:
    from importlib.metadata import version

    return [
        f"{name}=={version(name)}"
        for name in (
            "lightgbm",
            "numpy",
            "pandas",
            "scikit-learn",
            "scipy",
            "mlflow",
            "pydantic",
            "pydantic-settings",
            "pyyaml",
        )
    ]
