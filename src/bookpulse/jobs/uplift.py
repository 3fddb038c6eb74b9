"""Training uplift models (`bookpulse train <uplift model>`, and `train all` after the scoring
models): past lists' contacts against their hold-outs, out of time, tracked and registered in
MLflow like the scoring models (pyfunc `bookpulse-<name>`, alias `challenger`) with their own
validation pack: Qini, AUUC, uplift by decile and, on a synthetic book, the same against the
simulator's true effects.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from bookpulse.adapters import tracking
from bookpulse.book import io
from bookpulse.model import uplift
from bookpulse.model.dataset import contacts_of, uplift_months, uplift_set
from bookpulse.specs import ModelSpec, UpliftSpec


def true_benefit(book: Path, month: str, outcome: ModelSpec, spec: UpliftSpec) -> pd.Series | None:
    """The simulator's reach x effect at month-end `month`, in the direction the action aims
    at, by id (None: not a synthetic book, or one made before campaigns). Read only for
    evaluation and review, never for features or fitting."""
    effect, reach = spec.uplift.truth_effect, spec.uplift.truth_reach
    if effect is None or reach is None or not (book / io.TRUTH_DIR).is_dir():
        return None
    if outcome.entity == "card":
        truth = pd.read_parquet(book / io.TRUTH_DIR / "cards.parquet")
        truth = truth.loc[truth["as_of"].eq(io.month_end(month))]
    else:
        truth = io.read_truth(book, [month])
    if effect not in truth or reach not in truth:
        return None
    sign = -1.0 if spec.uplift.aim == "lower" else 1.0
    values = sign * (truth[effect] * truth[reach]).to_numpy(float)
    return pd.Series(values, index=truth[outcome.id_column].to_numpy())


def _true_benefit(
    book: Path, spec: UpliftSpec, outcome: ModelSpec, rows: pd.DataFrame
) -> np.ndarray | None:
    """`true_benefit` for rows of several list months (id, as_of)."""
    key = outcome.id_column
    out = np.full(len(rows), np.nan)
    months = rows["as_of"].dt.strftime("%Y-%m").to_numpy()
    for month in np.unique(months):
        found = true_benefit(book, month, outcome, spec)
        if found is None:
            return None
        mine = months == month
        out[mine] = found.reindex(rows.loc[mine, key].astype("int64").to_numpy()).to_numpy()
    return out


def train_uplift(
    book: Path,
    home: Path,
    spec: UpliftSpec,
    outcome: ModelSpec,
    threads: int = 0,
    progress: Callable[[str], None] | None = None,
):
    """Fit, evaluate, log and register one uplift model. Refused (`NoContacts`, `BookError`)
    before any fitting when the book has no contacts of its list or no hold-out."""
    from bookpulse.jobs.train import TrainResult, feature_set_hash, model_experiment

    started = time.perf_counter()
    meta = io.read_meta(book)
    contacts = contacts_of(book, spec.uplift.list, spec.uplift.action)
    train_months, test_months = uplift_months(outcome, meta["months"], contacts, spec.split)
    tracking.configure(home)  # an unreachable tracking server fails here, before the work
    model_experiment(home, spec, ANALYST_METRICS)
    rows = uplift_set(
        book,
        outcome,
        spec.features,
        contacts,
        train_months + test_months,
        progress=lambda m: progress and progress(f"{spec.name}: listed rows {m}"),
    )
    keys = rows["as_of"].dt.strftime("%Y-%m")
    train, test = rows.loc[keys.isin(train_months)], rows.loc[keys.isin(test_months)]
    label = outcome.target.label
    if progress:
        progress(f"training {spec.name}")
    model = uplift.fit_uplift(
        list(spec.features), train, label, spec.lightgbm.outcome, spec.lightgbm.effect, threads
    )
    sign = -1.0 if spec.uplift.aim == "lower" else 1.0
    effect = model.effect(test)
    y = test[label].to_numpy(float)
    good = 1 - y if sign < 0 else y
    treated = test["assignment"].astype(str).eq(uplift.TREATED).to_numpy()
    ev = uplift.evaluate(sign * effect, good, treated, _true_benefit(book, spec, outcome, test))
    controls = {
        "train": int((~train["assignment"].astype(str).eq(uplift.TREATED)).sum()),
        "test": int((~treated).sum()),
    }
    metrics = {
        **ev.metrics,
        "rows_train": float(len(train)),
        "control_rows_train": controls["train"],
    }
    exp = model_experiment(home, spec, ANALYST_METRICS)
    with mlflow.start_run(experiment_id=exp, run_name=f"{spec.name} {test_months[-1]}") as run:
        mlflow.set_tags(
            {
                "model": spec.name,
                "kind": "uplift",
                "list": spec.uplift.list,
                "action": spec.uplift.action,
                "outcome_model": outcome.name,
                "entity": outcome.entity,
                "book": str(Path(book).resolve()),
                "book_seed": str(meta.get("seed")),
                **tracking.who(),
            }
        )
        mlflow.log_params({f"outcome.{k}": v for k, v in spec.lightgbm.outcome.items()})
        mlflow.log_params({f"effect.{k}": v for k, v in spec.lightgbm.effect.items()})
        mlflow.log_params(
            {
                "learner": "econml XLearner over LightGBM",
                "spec_hash": spec.spec_hash,
                "feature_set_hash": feature_set_hash(
                    outcome.model_copy(update={"features": list(spec.features)})
                ),
                "n_features": len(spec.features),
                "treated_share": round(model.treated_share, 6),
                "window.train": f"{train_months[0]}..{train_months[-1]}",
                "window.test": f"{test_months[0]}..{test_months[-1]}",
                "rows.train": len(train),
                "rows.test": len(test),
                "controls.train": controls["train"],
                "controls.test": controls["test"],
            }
        )
        mlflow.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            word = "customers kept" if sign < 0 else f"more {label}"
            uplift.plot_uplift(out / "plots", spec.name, ev, word)
            ev.deciles.to_csv(out / "uplift_by_decile.csv", index=False)
            card = _card(
                spec, outcome, train_months, test_months, len(train), len(test), controls, metrics
            )
            (out / "model_card.md").write_text(card)
            (out / "spec.json").write_text(spec.model_dump_json(indent=2))
            mlflow.log_artifacts(str(out), artifact_path="validation")
            model_file = out / tracking.UPLIFT_MODEL_FILE
            model_file.write_text(model.to_json())
            version = tracking.register(
                tracking.UpliftEffect(),
                {"uplift_model": str(model_file)},
                tracking.example_input(test, list(spec.features)),
                pd.DataFrame({"effect": effect[:5]}),
                spec.registered_name,
                description=spec.description,
                card=card,
                tags={
                    "model": spec.name,
                    "book": str(Path(book).resolve()),
                    "spec_hash": spec.spec_hash,
                    "window.train": f"{train_months[0]}..{train_months[-1]}",
                    "window.test": f"{test_months[0]}..{test_months[-1]}",
                },
            )
    return TrainResult(
        model=spec.name,
        run_id=run.info.run_id,
        version=version,
        metrics=metrics,
        seconds=time.perf_counter() - started,
        kind="uplift",
    )


def _card(spec, outcome, train_months, test_months, n_train, n_test, controls, m) -> str:
    def pct(x: float) -> str:
        return f"{100 * x:+.2f} points"

    lines = [
        f"# Model card: {spec.name} (uplift)",
        "",
        spec.description.strip(),
        "",
        "## What it estimates",
        f"- action: {spec.uplift.action} on the {spec.uplift.list} list, meant to "
        f"{spec.uplift.aim} the outcome of `{outcome.name}`: {outcome.target.event}",
        "- the effect of putting a row in the list's treated arm (intention to treat: some "
        "treated rows are not reached), on the outcome's probability",
        "- learner: EconML's X-learner over LightGBM (two outcome models, two effect models, "
        "blended by the share treated); the assignment is random, so the propensity is that share",
        "",
        "## Data",
        f"- lists drawn up {train_months[0]} .. {train_months[-1]}: {n_train:,} rows, "
        f"{controls['train']:,} held out (train)",
        f"- lists drawn up {test_months[0]} .. {test_months[-1]}: {n_test:,} rows, "
        f"{controls['test']:,} held out (test)",
        "",
        "## Test months",
        "",
        "| measure | value |",
        "|---|---|",
        f"| Qini coefficient (realised, per row) | {m['qini']:.4f} "
        f"({m['qini_z']:+.1f} times its noise {m['qini_noise']:.4f}) |",
        f"| AUUC (realised, per row) | {m['auuc']:.4f} |",
        f"| average effect, realised treated vs hold-out | {pct(m['ate_realised'])} "
        f"(95% {pct(m['ate_realised_low'])} .. {pct(m['ate_realised_high'])}) |",
        f"| average effect, predicted | {pct(m['ate_predicted'])} |",
    ]
    if "expected_gain" in m:
        lines += [
            f"| average effect, true (simulator) | {pct(m['ate_true'])} |",
            f"| Qini of the true effects' ranking (realised) | {m['qini_truth_ranked']:.4f} |",
            f"| expected gain of the ranking / of the true effects' ranking | "
            f"{m['expected_gain']:.4f} / {m['expected_gain_oracle']:.4f} "
            f"({m['expected_gain_ratio']:.0%}) |",
        ]
    lines += [
        "",
        "## Limits",
        "- Uplift is only measurable where the bank kept randomised hold-outs; the model knows "
        "only the kind of customers the past lists held.",
        "- A hold-out of 10% leaves few control rows: the realised measures are noisy (see the "
        "intervals in uplift_by_decile.csv); on a synthetic book the expected gain, scored with "
        "the true effects, is the noise-free check.",
        "",
        "Gates: " + json.dumps(spec.gates.model_dump()),
    ]
    return "\n".join(lines) + "\n"


# what an analyst compares across an uplift model's runs (the analyst view's columns)
ANALYST_METRICS = ("qini", "qini_z", "auuc", "ate_realised", "ate_predicted", "ate_true")
