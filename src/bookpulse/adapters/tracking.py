"""MLflow: where runs and models live, and the registered artifact others can load.

Tracking defaults to `sqlite:///$BOOKPULSE_HOME/mlflow.db` with artifacts under
`$BOOKPULSE_HOME/mlartifacts/<experiment>` (never `./mlruns`); `MLFLOW_TRACKING_URI` points it
at a real server instead. One experiment per model: `bookpulse-<model>`.
"""

from __future__ import annotations

import os
import warnings
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


def reachable(uri: str, timeout: float = PROBE_SECONDS) -> None:
    """Refuse at once a tracking server that does not answer (MLflow's own client would retry
    for minutes and then blame a missing model). Any HTTP answer counts: a server that wants a
    password still answers."""
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout).close()
    except urllib.error.HTTPError:
        return  # it answered
    except (urllib.error.URLError, OSError) as exc:
        why = getattr(exc, "reason", exc)
        raise BookpulseError(
            f"the MLflow tracking server at {uri} does not answer ({why}): start it, or "
            "unset MLFLOW_TRACKING_URI to use the embedded store under $BOOKPULSE_HOME"
        ) from None


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
        reachable(uri)
    if not before["MLFLOW_TRACKING_URI"]:
        relocate_store(home)
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


def experiment_id(home: Path, name: str) -> str:
    """The experiment `name`, created with its artifacts under $BOOKPULSE_HOME when new."""
    client = MlflowClient()
    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            # someone deleted it in the UI; its name is still taken, so bring it back
            client.restore_experiment(found.experiment_id)
        return found.experiment_id
    location = None
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        location = (Path(home).resolve() / "mlartifacts" / name).as_uri()
    return client.create_experiment(name, artifact_location=location)


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


def register(
    python_model, artifacts: dict[str, str], example: pd.DataFrame, output: pd.DataFrame, name: str
) -> str:
    """Log the pyfunc (its artifacts, the package's code, signature, input example, pinned
    requirements) in the active run, register it as `name` and give the new version the
    alias `challenger`; returns the version."""
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
    MlflowClient().set_registered_model_alias(name, CHALLENGER, version)
    return version


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
