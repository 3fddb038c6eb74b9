"""`bookpulse train`: fit each spec out of time, evaluate, track in MLflow, register.

Every run logs the LightGBM parameters, spec and feature-set hashes, the data window, row counts
and positive rates, the whole validation pack (metrics, gains table, plots, model card), the
training data's lineage, and registers a pyfunc model as `bookpulse-<model>` with the alias
`challenger`.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from bookpulse.adapters import tracking
from bookpulse.book import io
from bookpulse.config import get_settings
from bookpulse.model.dataset import embargo_months, split_months, training_sets
from bookpulse.model.drift import reference_profile
from bookpulse.model.evaluate import evaluate, model_card, plot_pack
from bookpulse.model.fit import fit_model
from bookpulse.model.slices import slice_table, top_share_listed
from bookpulse.specs import ModelSpec, load_feature_catalog, load_uplift_specs, specs_for


@dataclass(frozen=True)
class TrainRequest:
    """Models to train: one model's name, or all. `book=None` takes the home's book."""

    home: Path
    model: str = "all"
    book: Path | None = None
    threads: int = 0  # LightGBM threads (0: all cores)


@dataclass(frozen=True)
class TrainResult:
    model: str
    run_id: str
    version: str
    metrics: dict[str, float]
    seconds: float
    kind: str = "score"  # or "uplift"
    note: str | None = None  # why a model was skipped (then no run, no version)


def feature_set_hash(spec: ModelSpec) -> str:
    """Hash of the declared definitions of the features the spec uses."""
    declared = load_feature_catalog().for_entity(spec.target.entity)
    blob = json.dumps([declared[f].model_dump() for f in spec.features], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _truth_for(book: Path, spec: ModelSpec, rows: pd.DataFrame) -> np.ndarray | None:
    """The simulator's true probabilities for these rows (`target.truth`), if the book is
    synthetic and has them.

    Read only here, for the ceiling; never by features or fitting."""
    column = spec.target.truth
    if column is None or not (book / io.TRUTH_DIR).is_dir():
        return None
    key = spec.id_column
    if spec.entity == "card":
        truth = pd.read_parquet(book / io.TRUTH_DIR / "cards.parquet")
    else:
        months = sorted(rows["as_of"].dt.strftime("%Y-%m").unique())
        truth = io.read_truth(book, months).rename(columns={"month": "as_of"})
    if column not in truth:
        return None  # a book simulated before this target had a truth
    merged = rows[[key, "as_of"]].merge(
        truth[[key, "as_of", column]], on=[key, "as_of"], how="left"
    )
    return merged[column].to_numpy(float)


def train_and_log(
    book: Path,
    home: Path,
    spec: ModelSpec,
    data: pd.DataFrame,
    threads: int = 0,
) -> TrainResult:
    """Fit, evaluate, log and register one model from its stacked training set `data`."""
    started = time.perf_counter()
    meta = io.read_meta(book)
    windows = split_months(spec, meta["months"])
    keys = data["as_of"].dt.strftime("%Y-%m")
    parts = {name: data.loc[keys.isin(months)] for name, months in windows.items()}
    label = spec.target.label
    if parts["test"][label].nunique() < 2:
        raise ValueError(
            f"{spec.name}: the test window {windows['test'][0]}..{windows['test'][-1]} has only "
            f"one class of {label!r}; the book is too small for this split"
        )
    model = fit_model(spec, parts["train"], parts["valid"], parts["calibration"], threads)
    test = parts["test"]
    p_test = model.predict(test)
    p_train = model.predict(parts["train"])
    ev = evaluate(
        test[label].to_numpy(), p_test, test["as_of"], p_train, _truth_for(book, spec, test)
    )
    exp = model_experiment(home, spec)
    rows = {k: len(v) for k, v in parts.items()}
    rates = {k: float(v[label].mean()) for k, v in parts.items()}
    with mlflow.start_run(experiment_id=exp, run_name=f"{spec.name} {windows['test'][-1]}") as run:
        mlflow.set_tags(
            {
                "model": spec.name,
                "target": spec.target.kind,
                "entity": spec.target.entity,
                "book": str(Path(book).resolve()),
                "book_seed": str(meta.get("seed")),
                "book_generator": str(meta.get("generator")),
                **tracking.who(),
            }
        )
        mlflow.log_params({f"lgb.{k}": v for k, v in spec.lightgbm.params.items()})
        mlflow.log_params(
            {
                "num_boost_round": spec.lightgbm.num_boost_round,
                "early_stopping_rounds": spec.lightgbm.early_stopping_rounds,
                "best_iteration": model.best_iteration,
                "spec_hash": spec.spec_hash,
                "feature_set_hash": feature_set_hash(spec),
                "n_features": len(spec.features),
                "threads": threads,
                "calibration": "platt",
                "embargo_months": embargo_months(spec),
                **{f"window.{k}": f"{v[0]}..{v[-1]}" for k, v in windows.items()},
                **{f"rows.{k}": n for k, n in rows.items()},
                **{f"positive_rate.{k}": round(r, 6) for k, r in rates.items()},
            }
        )
        mlflow.log_metrics(ev.metrics)
        for month, auc in ev.auc_by_month.items():
            mlflow.log_metric("auc_test_month", auc, step=int(month.replace("-", "")))
        dataset = mlflow.data.from_pandas(
            data[[spec.id_column, "as_of", label]],
            source=str(Path(book).resolve()),
            targets=label,
            name=f"{spec.name}-training-set",
        )
        mlflow.log_input(dataset, context="training")
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            contrib, sample = model.shap_sample(test)
            plot_pack(
                out / "plots",
                spec.name,
                test[label].to_numpy(),
                p_test,
                ev,
                model.gain_importance(),
                contrib,
                sample,
            )
            ev.gains.to_csv(out / "gains_by_decile.csv", index=False)
            slices = breakdowns(test, label, p_test)
            for table_name, table in slices.items():
                table.to_csv(out / f"{table_name}.csv", index=False)
                mlflow.log_metric(f"{table_name}_flagged", float(table["flag"].sum()))
            month = test["as_of"].dt.strftime("%Y-%m").to_numpy()
            profile = reference_profile(model, test, p_test, month)
            (out / tracking.REFERENCE_FILE).write_text(json.dumps(profile))
            card = model_card(
                spec.name,
                spec.description,
                spec.target.model_dump(),
                windows,
                rows,
                rates,
                ev.metrics,
                spec.gates.model_dump(),
                str(book),
                slices,
            )
            (out / "model_card.md").write_text(card)
            (out / "spec.json").write_text(spec.model_dump_json(indent=2))
            mlflow.log_artifacts(str(out), artifact_path="validation")
            model_file = out / tracking.MODEL_FILE
            model_file.write_text(model.to_json())
            example = tracking.example_input(test, model.features)
            version = tracking.register(
                tracking.CalibratedProbability(),
                {"scoring_model": str(model_file)},
                example,
                pd.DataFrame({"probability": p_test[:5]}),
                spec.registered_name,
                description=spec.description,
                card=card,
                tags={
                    "model": spec.name,
                    "book": str(Path(book).resolve()),
                    "spec_hash": spec.spec_hash,
                    "feature_set_hash": feature_set_hash(spec),
                    **{f"window.{k}": f"{v[0]}..{v[-1]}" for k, v in windows.items()},
                },
            )
    return TrainResult(
        model=spec.name,
        run_id=run.info.run_id,
        version=version,
        metrics=ev.metrics,
        seconds=time.perf_counter() - started,
    )


def breakdowns(test: pd.DataFrame, label: str, p: np.ndarray) -> dict[str, pd.DataFrame]:
    """The test rows' weak-spot table (`slices`) and fairness table (`fairness`, with the
    share of each group in the top tenth of its month's scores as its listing rate), by the
    catalog's slice columns the training set carries."""
    catalog = load_feature_catalog()
    y = test[label].to_numpy()
    month = test["as_of"].dt.strftime("%Y-%m").to_numpy()
    out = {}
    for table_name, kind in (("slices", "weak_spots"), ("fairness", "fairness")):
        columns = [c for c in catalog.sliced_by(kind) if c in test.columns]
        listed = top_share_listed(p, month) if kind == "fairness" else None
        out[table_name] = slice_table(y, p, test[columns], listed, against_book=kind == "fairness")
    return out


# what an analyst compares across runs, shown as columns in the experiment's analyst view
ANALYST_METRICS = ("auc", "ceiling_auc", "gap_to_ceiling", "ece", "lift_top10", "brier")


def model_experiment(home: Path, spec, metrics: Sequence[str] = ANALYST_METRICS) -> str:
    """A model's experiment (a scoring or an uplift model's spec), described by the spec and
    with the analyst's view of `metrics` and the test window."""
    return tracking.experiment_id(
        home,
        spec.registered_name,
        description=spec.description,
        metrics=metrics,
        params=("window.test",),
    )


def train_models(
    book: Path,
    home: Path,
    specs: Sequence[ModelSpec],
    threads: int = 0,
    progress: Callable[[str], None] | None = None,
    sets: dict[str, pd.DataFrame] | None = None,
) -> list[TrainResult]:
    """Build the training sets once for all `specs` (unless given), then fit, log and register
    each. The tracking store is reached first, so an unreachable server fails at once."""
    tracking.configure(home)
    for spec in specs:
        model_experiment(home, spec)
    if sets is None:
        sets = training_sets(book, specs, progress=lambda m: progress and progress(f"features {m}"))
    results = []
    for spec in specs:
        if progress:
            progress(f"training {spec.name}")
        results.append(train_and_log(book, home, spec, sets[spec.name], threads))
    return results


def train(
    request: TrainRequest,
    progress: Callable[[str], None] | None = None,
    sets: dict[str, pd.DataFrame] | None = None,
) -> list[TrainResult]:
    """Train the requested models (`sets`: training sets already built, e.g. by the demo).

    "all" trains the scoring models, then the uplift models: one whose list has no contacts
    in the book is skipped with a note; contacts without a hold-out are refused before any
    training starts."""
    from bookpulse.jobs.uplift import train_uplift
    from bookpulse.model.dataset import NoContacts, contacts_of

    book = request.book or get_settings().book_dir
    uplifts = load_uplift_specs()
    if request.model in uplifts:
        spec, outcome = uplifts[request.model]
        tracking.configure(request.home)
        return [train_uplift(book, request.home, spec, outcome, request.threads, progress)]
    specs = specs_for(request.model, extra=list(uplifts))
    if request.model != "all":
        return train_models(book, request.home, specs, request.threads, progress, sets)
    ready, notes = [], []
    for spec, outcome in uplifts.values():
        try:  # a list without a hold-out is refused here, before any training
            contacts_of(book, spec.uplift.list, spec.uplift.action)
            ready.append((spec, outcome))
        except NoContacts as exc:
            notes.append(TrainResult(spec.name, "", "", {}, 0.0, "uplift", f"skipped: {exc}"))
    results = train_models(book, request.home, specs, request.threads, progress, sets)
    for spec, outcome in ready:
        results.append(train_uplift(book, request.home, spec, outcome, request.threads, progress))
    return results + notes
