"""A champion's model-risk document, from what MLflow holds: the registered version (its tags,
aliases and training run), the run's parameters, metrics (with the AUC of each test month) and
validation artifacts, the spec logged with it, the feature catalog's descriptions and the
registry's promotion decisions. Rendered by `bookpulse.model.risk_doc` and logged to the
version's training run as `model-risk/<model>-v<version>.md` and `.html`.

Tracking must be configured (`tracking.configure(home)`) before any call here."""

from __future__ import annotations

import dataclasses
import json
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from bookpulse.adapters import tracking
from bookpulse.errors import BookpulseError
from bookpulse.model import risk_doc
from bookpulse.specs import ModelSpec, load_feature_catalog

ARTIFACT_DIR = "model-risk"
VERSION_TAG = "model_risk_document"  # on the registered version: where its document is
TABLES = {
    "gains": "gains_by_decile.csv",
    "slices": "slices.csv",
    "fairness": "fairness.csv",
}


class ModelRiskError(BookpulseError):
    """No version to document; the message says what to do."""


@dataclass(frozen=True)
class RiskDocument:
    model: str
    version: str
    run_id: str
    markdown: str
    html: str
    stem: str  # <model>-v<version>
    logged: tuple[str, ...] = ()  # the artifact paths in the run, once logged


def champion_version(spec: ModelSpec) -> str:
    """The version the alias `champion` points at; a clear error when there is none."""
    name = spec.registered_name
    client = MlflowClient()
    try:
        return str(client.get_model_version_by_alias(name, tracking.CHAMPION).version)
    except MlflowException:
        pass
    why = tracking.missing_experiment(name, spec.name)
    if why:
        raise ModelRiskError(why)
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        versions = []
    if not versions:
        raise ModelRiskError(
            f"{name} has no registered version: train it (`bookpulse train {spec.name}`) and "
            f"promote it (`bookpulse promote {spec.name}`) first"
        )
    known = ", ".join(sorted((str(v.version) for v in versions), key=int))
    raise ModelRiskError(
        f"{name} has no champion (versions {known} are registered): promote one "
        f"(`bookpulse promote {spec.name}`) or name a version with --version"
    )


def _model_version(spec: ModelSpec, version: str):
    client = MlflowClient()
    try:
        return client.get_model_version(spec.registered_name, str(version))
    except MlflowException:
        try:
            found = client.search_model_versions(f"name = '{spec.registered_name}'")
        except MlflowException:
            found = []
        known = ", ".join(sorted((str(v.version) for v in found), key=int)) or "none"
        raise ModelRiskError(
            f"{spec.registered_name} has no version {version} (registered versions: {known})"
        ) from None


def _artifact_paths(client: MlflowClient, run_id: str, path: str | None = None) -> list[str]:
    out = []
    for a in client.list_artifacts(run_id, path):
        if a.path == ARTIFACT_DIR:
            continue  # the documents themselves are not their own evidence
        out += _artifact_paths(client, run_id, a.path) if a.is_dir else [a.path]
    return out


def _records(path: Path) -> list[dict] | None:
    if not path.is_file():
        return None
    frame = pd.read_csv(path)
    return [
        {k: (None if pd.isna(v) else v) for k, v in row.items()}
        for row in frame.to_dict(orient="records")
    ]


def _month(step: int) -> str:
    text = f"{int(step):06d}"
    return f"{text[:4]}-{text[4:]}"


def _iso(ms: int | None) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


def gather(spec: ModelSpec, version: str, decisions: list) -> dict:
    """The facts of `spec`'s registered `version`, as `bookpulse.model.risk_doc` takes them,
    read from the registry and the version's training run. `decisions`: the registry's
    history of the model (newest first)."""
    client = MlflowClient()
    mv = _model_version(spec, version)
    if not mv.run_id:
        raise ModelRiskError(
            f"{spec.registered_name} version {version} names no training run: register models "
            f"with `bookpulse train {spec.name}`"
        )
    run = client.get_run(mv.run_id)
    experiment = client.get_experiment(run.info.experiment_id)
    artifacts = _artifact_paths(client, mv.run_id)
    facts: dict = {
        "model": spec.name,
        "registered_name": spec.registered_name,
        "version": str(mv.version),
        "aliases": sorted(getattr(mv, "aliases", []) or []),
        "run_id": mv.run_id,
        "experiment": experiment.name if experiment else run.info.experiment_id,
        "trained_at": _iso(run.info.start_time),
        "trained_by": run.info.user_id or "-",
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "version_tags": {k: v for k, v in (mv.tags or {}).items() if k != VERSION_TAG},
        "params": dict(run.data.params),
        "metrics": dict(run.data.metrics),
        "run_tags": {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")},
        "auc_by_month": {
            _month(m.step): float(m.value)
            for m in client.get_metric_history(mv.run_id, "auc_test_month")
        },
        "artifacts": artifacts,
        "decisions": [
            dataclasses.asdict(d) if dataclasses.is_dataclass(d) else dict(d) for d in decisions
        ],
        "monitoring": risk_doc.monitoring_thresholds(),
        "plots": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        validation = Path(tmp) / "validation"
        if any(a.startswith("validation/") for a in artifacts):
            local = mlflow.artifacts.download_artifacts(
                run_id=mv.run_id, artifact_path="validation", dst_path=tmp
            )
            validation = Path(local)
        spec_file = validation / "spec.json"
        if spec_file.is_file():
            facts["spec"] = json.loads(spec_file.read_text())
            facts["spec_source"] = "validation/spec.json, logged with the run"
        else:
            facts["spec"] = spec.model_dump(mode="json")
            facts["spec_source"] = f"models/{spec.name}.yaml as it is today (the run logged none)"
        ref = validation / tracking.REFERENCE_FILE
        facts["reference"] = json.loads(ref.read_text()) if ref.is_file() else None
        for key, file in TABLES.items():
            facts[key] = _records(validation / file)
        for png in sorted((validation / "plots").glob("*.png")):
            facts["plots"][png.stem] = png.read_bytes()
    entity = facts["spec"].get("target", {}).get("entity", spec.entity)
    facts["catalog"] = [
        g.model_dump(mode="json")
        for g in load_feature_catalog().groups.values()
        if g.entity == entity
    ]
    return facts


def render(spec: ModelSpec, version: str, decisions: list) -> RiskDocument:
    """The document of `spec`'s `version` (Markdown and HTML), not yet logged."""
    facts = gather(spec, version, decisions)
    return RiskDocument(
        model=spec.name,
        version=facts["version"],
        run_id=facts["run_id"],
        markdown=risk_doc.to_markdown(facts),
        html=risk_doc.to_html(facts),
        stem=f"{spec.name}-v{facts['version']}",
    )


def log_document(spec: ModelSpec, version: str, decisions: list) -> RiskDocument:
    """Render `spec`'s `version`'s document and log it to the version's training run under
    `model-risk/` (a newer rendering replaces the older); the version's tag
    `model_risk_document` names it."""
    doc = render(spec, version, decisions)
    client = MlflowClient()
    logged = []
    with tempfile.TemporaryDirectory() as tmp:
        for suffix, text in ((".md", doc.markdown), (".html", doc.html)):
            path = Path(tmp) / f"{doc.stem}{suffix}"
            path.write_text(text, encoding="utf-8")
            client.log_artifact(doc.run_id, str(path), artifact_path=ARTIFACT_DIR)
            logged.append(f"{ARTIFACT_DIR}/{path.name}")
    client.set_model_version_tag(spec.registered_name, doc.version, VERSION_TAG, logged[0])
    return dataclasses.replace(doc, logged=tuple(logged))
