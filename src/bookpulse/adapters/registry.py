"""Champion / challenger: gated promotion, its history, and rollback.

Every decision (promotion, refusal, rollback) is an MLflow run in the experiment
`bookpulse-promotions`, tagged with the model, so analysts see it beside the experiments and
`bookpulse promotions MODEL` can list it.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from sklearn.metrics import roc_auc_score

from bookpulse.adapters import risk_doc, tracking
from bookpulse.book import io
from bookpulse.errors import BookpulseError, MonitorError
from bookpulse.model.core import Champion
from bookpulse.model.dataset import split_months, training_set
from bookpulse.model.evaluate import calibration_metrics, delong_paired
from bookpulse.model.fit import ScoringModel
from bookpulse.specs import GateSpec, ModelSpec, UpliftSpec

PROMOTIONS_EXPERIMENT = "bookpulse-promotions"


class RegistryError(BookpulseError):
    """Nothing to promote or roll back; the message says what to do."""


@dataclass
class Decision:
    model: str
    action: str  # promote | rollback
    outcome: str  # promoted | kept | rolled_back | unchanged
    challenger: str | None
    champion_before: str | None
    champion_after: str | None
    window: list[str]
    metrics: dict[str, float] = field(default_factory=dict)
    gates: dict[str, bool] = field(default_factory=dict)
    reason: str = ""
    verdict: str = ""  # challenger against champion on the same rows (DeLong): see PairedAUC
    time: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    rows_from: str = ""  # which rows both versions were scored on, when not a book's window


def _version(client: MlflowClient, name: str, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def alias_version(name: str, alias: str) -> str | None:
    """The version of registered model `name` that holds `alias`, or None."""
    return _version(MlflowClient(), name, alias)


def has_challenger(name: str) -> bool:
    return _version(MlflowClient(), name, tracking.CHALLENGER) is not None


def load_uplift_model(name: str, version: str, threads: int = 0):
    """A registered version's UpliftModel, read from its artifact."""
    from bookpulse.model.uplift import UpliftModel

    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(f"models:/{name}/{version}", dst_path=tmp)
        found = next(Path(local).rglob(tracking.UPLIFT_MODEL_FILE), None)
        if found is None:
            raise RegistryError(f"{name} version {version} has no {tracking.UPLIFT_MODEL_FILE}")
        return UpliftModel.from_json(found.read_text(), threads=threads)


def load_scoring_model(name: str, version: str, threads: int = 0) -> ScoringModel:
    """A registered version's ScoringModel, read from its artifact."""
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(f"models:/{name}/{version}", dst_path=tmp)
        found = next(Path(local).rglob(tracking.MODEL_FILE), None)
        if found is None:
            raise RegistryError(f"{name} version {version} has no {tracking.MODEL_FILE}")
        return ScoringModel.from_json(found.read_text(), threads=threads)


def _check_out_of_time(client: MlflowClient, name: str, version: str, window: list[str]) -> None:
    """Refuse to judge a version on months it was fitted on (trained on another, later book):
    its training run's calibration window must end before the evaluation window starts."""
    run_id = client.get_model_version(name, version).run_id
    fitted = client.get_run(run_id).data.params.get("window.calibration", "") if run_id else ""
    if not fitted:
        raise RegistryError(
            f"{name} version {version} records no training window, so bookpulse cannot check "
            "that the evaluation is out of time; register models with `bookpulse train`"
        )
    last_fitted = fitted.split("..")[-1]
    if window[0] <= last_fitted:
        raise RegistryError(
            f"{name} version {version} was fitted on months up to {last_fitted}, but this "
            f"book's evaluation window is {window[0]}..{window[-1]}: not out of time. Promote "
            "with a book whose latest months come after the model's training data (--book)."
        )


def _score(p, y) -> dict[str, float]:
    return {"auc": float(roc_auc_score(y, p)), **calibration_metrics(y, p)}


def _record(home: Path, decision: Decision) -> None:
    exp = tracking.experiment_id(
        home,
        PROMOTIONS_EXPERIMENT,
        description="Every promotion, refusal and rollback of a champion: one run each, tagged "
        "with the model, the versions before and after, the gates and the reason.",
    )
    with mlflow.start_run(experiment_id=exp, run_name=f"{decision.action} {decision.model}"):
        mlflow.set_tags(
            {
                "model": decision.model,
                "action": decision.action,
                "outcome": decision.outcome,
                "challenger_version": decision.challenger or "",
                "champion_before": decision.champion_before or "",
                "champion_after": decision.champion_after or "",
                "reason": decision.reason[:5000],
                "decided_at": decision.time,
                "verdict": decision.verdict,
                "rows_from": decision.rows_from,
                **tracking.who(),
            }
        )
        if decision.window:
            mlflow.log_param("window", f"{decision.window[0]}..{decision.window[-1]}")
        mlflow.log_metrics(decision.metrics)
        mlflow.log_dict(decision.__dict__, "decision.json")


def promote(home: Path, book: Path, spec: ModelSpec) -> Decision:
    """Evaluate challenger and champion on the same latest out-of-time window; move the
    champion alias only when the spec's gates pass. The decision is recorded either way."""
    client = MlflowClient()
    name = spec.registered_name
    challenger = _version(client, name, tracking.CHALLENGER)
    if challenger is None:
        why = tracking.missing_experiment(name, spec.name)
        raise RegistryError(
            why or f"{name} has no challenger: run `bookpulse train {spec.name}` first"
        )
    champion = _version(client, name, tracking.CHAMPION)
    window = split_months(spec, io.read_meta(book)["months"])["test"]
    if challenger == champion:
        return unchanged(home, spec.name, challenger, window)
    for version in filter(None, (challenger, champion)):
        _check_out_of_time(client, name, version, window)
    new_model = load_scoring_model(name, challenger)
    old_model = load_scoring_model(name, champion) if champion is not None else None
    # the rows of the window, with every feature either version reads (a new spec may read
    # others than the champion's)
    wanted = list(dict.fromkeys([*new_model.features, *(old_model.features if old_model else [])]))
    frame = training_set(book, spec.model_copy(update={"features": wanted}), window)
    y = frame[spec.target.label].to_numpy()
    p_old = old_model.predict(frame) if old_model is not None else None
    decision = judge(
        home,
        spec.name,
        name,
        challenger,
        champion,
        window,
        y,
        new_model.predict(frame),
        p_old,
        spec.gates,
    )
    if decision.outcome == "promoted":
        _document(spec, challenger)
    return decision


def unchanged(home: Path, model: str, challenger: str, window: list[str]) -> Decision:
    """The challenger is already the champion: nothing moves; recorded."""
    decision = Decision(
        model,
        "promote",
        "unchanged",
        challenger,
        challenger,
        challenger,
        window,
        reason="the challenger is already the champion",
    )
    _record(home, decision)
    return decision


def judge(
    home: Path,
    model: str,
    name: str,
    challenger: str,
    champion: str | None,
    window: list[str],
    y: np.ndarray,
    p_new: np.ndarray,
    p_old: np.ndarray | None,
    gates: GateSpec,
    rows_from: str = "",
    note: str = "",
    failing: dict[str, str] | None = None,
) -> Decision:
    """The promotion gates on one set of rows, the same for every scoring model (book or flat
    table): the challenger's AUC and calibration excess over noise against `gates`, and, when
    there is a champion (`p_old`, its probabilities on the same rows `y`), DeLong's paired test
    of the difference against the margin. Moves the alias only when every gate passes; the
    decision is recorded either way (`rows_from` says which rows when not a book's window;
    `note` is added to the reason; `failing`: gates the caller found failed, name -> why)."""
    metrics = {f"challenger_{k}": v for k, v in _score(p_new, y).items()}
    passed = {
        "min_auc": metrics["challenger_auc"] >= gates.min_auc,
        "max_calibration_error": metrics["challenger_ece_excess"] <= gates.max_calibration_error,
    }
    verdict = ""
    if p_old is not None:
        metrics.update({f"champion_{k}": v for k, v in _score(p_old, y).items()})
        # the same rows, paired: DeLong's test of challenger minus champion
        try:
            paired = delong_paired(y, p_old, p_new)
        except ValueError:  # too few events or non-events on these rows to compare
            verdict = "inconclusive"
        else:
            verdict = paired.verdict(gates.max_auc_drop)
            metrics.update(
                {
                    "auc_diff": paired.diff,
                    "auc_diff_se": paired.se,
                    "auc_diff_z": paired.z,
                    "auc_diff_p": paired.p_value,
                    "auc_diff_low": paired.low,
                    "auc_diff_high": paired.high,
                }
            )
        passed["not_worse"] = verdict in ("better", "equivalent", "not worse")
    metrics["rows"] = float(len(y))
    failed = "; ".join(
        [
            *(_explain(g, metrics, gates, verdict) for g, ok in passed.items() if not ok),
            *(failing or {}).values(),
        ]
    )
    passed |= dict.fromkeys(failing or {}, False)
    return _decide(
        home,
        model,
        name,
        challenger,
        champion,
        window,
        metrics,
        passed,
        failed,
        verdict,
        rows_from,
        note,
    )


def _document(spec: ModelSpec, version: str) -> None:
    """The new champion's model-risk document, logged to its training run (`model-risk/`)."""
    try:
        risk_doc.log_document(spec, version, history(spec.name))
    except (BookpulseError, MlflowException, OSError) as exc:
        raise RegistryError(
            f"{spec.name} version {version} is the champion (the decision is recorded), but its "
            f"model-risk document could not be written ({exc}); write it with `bookpulse "
            f"model-risk {spec.name}`"
        ) from exc


def _decide(
    home: Path,
    model: str,
    name: str,
    challenger: str,
    champion: str | None,
    window: list[str],
    metrics: dict[str, float],
    gates: dict[str, bool],
    failed: str,
    verdict: str = "",
    rows_from: str = "",
    note: str = "",
) -> Decision:
    """Move the champion alias to the challenger when no gate `failed` (the reasons, joined),
    and record the decision either way."""
    tail = f"; note: {note}" if note else ""
    if failed:
        decision = Decision(
            model,
            "promote",
            "kept",
            challenger,
            champion,
            champion,
            window,
            metrics,
            gates,
            failed + tail,
            verdict,
            rows_from=rows_from,
        )
    else:
        client = MlflowClient()
        client.set_registered_model_alias(name, tracking.CHAMPION, challenger)
        client.set_model_version_tag(name, challenger, "promoted_at", datetime.now(UTC).isoformat())
        decision = Decision(
            model,
            "promote",
            "promoted",
            challenger,
            champion,
            challenger,
            window,
            metrics,
            gates,
            "all gates passed" + (f"; against the champion: {verdict}" if verdict else "") + tail,
            verdict,
            rows_from=rows_from,
        )
    _record(home, decision)
    return decision


def promote_uplift(home: Path, spec: UpliftSpec) -> Decision:
    """An uplift model's challenger becomes the champion when its own out-of-time test (the
    latest lists with closed outcomes, logged at training) passes the spec's gates: enough
    held-out rows to measure anything, and a Qini no lower than the minimum. The effects of two
    versions are too noisy on one window of hold-outs to rank them against each other, so the
    latest version that passes is the champion. Recorded either way."""
    client = MlflowClient()
    name = spec.registered_name
    challenger = _version(client, name, tracking.CHALLENGER)
    if challenger is None:
        raise RegistryError(f"{name} has no challenger: run `bookpulse train {spec.name}` first")
    champion = _version(client, name, tracking.CHAMPION)
    run = client.get_run(client.get_model_version(name, challenger).run_id)
    test = run.data.params.get("window.test", "")
    window = test.split("..") if test else []
    if challenger == champion:
        return unchanged(home, spec.name, challenger, window)
    m = run.data.metrics
    metrics = {
        "challenger_qini": float(m.get("qini", float("nan"))),
        "challenger_qini_z": float(m.get("qini_z", float("nan"))),
        "challenger_control_rows": float(m.get("control_rows_test", 0.0)),
        "challenger_ate_realised": float(m.get("ate_realised", float("nan"))),
    }
    gates = {
        "min_control_rows": metrics["challenger_control_rows"] >= spec.gates.min_control_rows,
        "min_qini_z": metrics["challenger_qini_z"] >= spec.gates.min_qini_z,
    }
    failed = "; ".join(
        {
            "min_control_rows": f"{metrics['challenger_control_rows']:.0f} held-out rows in the "
            f"test months, fewer than the {spec.gates.min_control_rows} needed to measure an "
            "effect (hold more out, or wait for more months of lists)",
            "min_qini_z": f"Qini {metrics['challenger_qini']:.4f} is "
            f"{metrics['challenger_qini_z']:.1f} times its noise, below the minimum "
            f"{spec.gates.min_qini_z}: the ranking does worse than random orderings",
        }[g]
        for g, ok in gates.items()
        if not ok
    )
    return _decide(home, spec.name, name, challenger, champion, window, metrics, gates, failed)


def _explain(gate: str, m: dict[str, float], g: GateSpec, verdict: str = "") -> str:
    if gate == "min_auc":
        return f"AUC {m['challenger_auc']:.3f} below the minimum {g.min_auc}"
    if gate == "max_calibration_error":
        return (
            f"calibration error {m['challenger_ece']:.3f} exceeds its sampling noise "
            f"{m['challenger_ece_noise']:.3f} by more than {g.max_calibration_error}"
        )
    if "auc_diff" not in m:
        return (
            f"inconclusive against the champion: {int(m['rows']):,} rows hold too few events or "
            "non-events (DeLong's test needs two of each) to compare the two on the same rows"
        )
    against = "than" if verdict == "worse" else "against"
    return (
        f"{verdict} {against} the champion on the same rows: AUC {m['challenger_auc']:.3f} against "
        f"{m['champion_auc']:.3f}, difference {m['auc_diff']:+.4f} (95% interval "
        f"{m['auc_diff_low']:+.4f} to {m['auc_diff_high']:+.4f}, DeLong p {m['auc_diff_p']:.3g})"
        f", which cannot rule out trailing by more than the margin {g.max_auc_drop}"
    )


def history(model: str) -> list[Decision]:
    """Every recorded decision for `model`, newest first."""
    client = MlflowClient()
    exp = client.get_experiment_by_name(PROMOTIONS_EXPERIMENT)
    if exp is None:
        return []
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.model = '{model}'",
        order_by=["attributes.start_time DESC"],
        max_results=1000,
    )
    out = []
    for run in runs:
        t = run.data.tags
        window = run.data.params.get("window", "")
        out.append(
            Decision(
                model=model,
                action=t.get("action", ""),
                outcome=t.get("outcome", ""),
                challenger=t.get("challenger_version") or None,
                champion_before=t.get("champion_before") or None,
                champion_after=t.get("champion_after") or None,
                window=window.split("..") if window else [],
                metrics=dict(run.data.metrics),
                reason=t.get("reason", ""),
                verdict=t.get("verdict", ""),
                time=t.get("decided_at", ""),
                rows_from=t.get("rows_from", ""),
            )
        )
    return out


def rollback(home: Path, spec: ModelSpec | UpliftSpec) -> Decision:
    """Move the champion alias back to the champion before the current one, and record it."""
    decision = roll_back(home, spec.name, spec.registered_name)
    if isinstance(spec, ModelSpec):
        _document(spec, decision.champion_after)
    return decision


def roll_back(home: Path, model: str, name: str) -> Decision:
    """`rollback` of the registered model `name`, whose decisions are recorded as `model`."""
    client = MlflowClient()
    current = _version(client, name, tracking.CHAMPION)
    if current is None:
        raise RegistryError(f"{name} has no champion to roll back")
    previous = None
    for d in history(model):
        if d.outcome == "promoted" and d.champion_after == current:
            previous = d.champion_before
            break
    if previous is None:
        raise RegistryError(f"{name} version {current} has no earlier champion to roll back to")
    client.set_registered_model_alias(name, tracking.CHAMPION, previous)
    client.set_model_version_tag(name, current, "rolled_back_at", datetime.now(UTC).isoformat())
    reason = f"champion moved back from version {current} to {previous}"
    if _version(client, name, tracking.CHALLENGER) == current:
        # otherwise the next `promote` would put the rolled-back version straight back
        client.delete_registered_model_alias(name, tracking.CHALLENGER)
        reason += f"; version {current} is no longer the challenger"
    decision = Decision(
        model, "rollback", "rolled_back", None, current, previous, [], reason=reason
    )
    _record(home, decision)
    return decision


def load_reference(champion: Champion) -> dict:
    """The reference profile logged with the champion's training run (for the monitor)."""
    name = f"{champion.spec.registered_name} v{champion.version}"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = mlflow.artifacts.download_artifacts(
                run_id=champion.run_id,
                artifact_path=f"validation/{tracking.REFERENCE_FILE}",
                dst_path=tmp,
            )
            return json.loads(Path(local).read_text())
    except (MlflowException, OSError) as exc:
        raise MonitorError(
            f"{name} has no reference profile in its training run ({type(exc).__name__}): it "
            f"was trained before the monitor existed; retrain it (`bookpulse train "
            f"{champion.spec.name}`, then `bookpulse promote {champion.spec.name}`)"
        ) from None


def first_test_month(run_id: str) -> str:
    """The first month of a training run's out-of-time test window: the earliest month its
    model can be judged on (every earlier month was fitted on, calibrated on, or embargoed)."""
    window = MlflowClient().get_run(run_id).data.params.get("window.test", "")
    return window.split("..")[0]


def run_metrics(run_id: str) -> dict[str, float]:
    return dict(MlflowClient().get_run(run_id).data.metrics)
