"""Runs side by side, for analysts: key metrics, and the parameters that differ."""

from __future__ import annotations

import mlflow
import pandas as pd

KEY_METRICS = (
    "auc",
    "ceiling_auc",
    "gap_to_ceiling",
    "ece",
    "ece_noise",
    "ece_truth",
    "brier",
    "pr_auc",
    "ks",
    "lift_top10",
    "capture_top10",
    "psi_train_test",
    # uplift models
    "qini",
    "qini_z",
    "auuc",
    "ate_realised",
    "ate_predicted",
    "ate_true",
    "expected_gain_ratio",
    "control_rows_test",
)


def compare_runs(registered_name: str, last: int = 10) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(metrics, differing params) for the latest `last` runs of a model's experiment, one
    column per run, newest first."""
    runs = mlflow.search_runs(
        experiment_names=[registered_name],
        filter_string="attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=last,
    )
    if runs.empty:
        return pd.DataFrame(), pd.DataFrame()
    names = [f"{r[:8]}" for r in runs["run_id"]]
    metric_cols = [f"metrics.{m}" for m in KEY_METRICS if f"metrics.{m}" in runs]
    metrics = runs[metric_cols].T.astype(object)  # a text row ("started") goes below
    metrics.index = [c.removeprefix("metrics.") for c in metric_cols]
    metrics.columns = names
    params = runs[[c for c in runs.columns if c.startswith("params.")]]
    differ = [c for c in params.columns if params[c].astype(str).nunique(dropna=False) > 1]
    diff = params[differ].T
    diff.index = [c.removeprefix("params.") for c in differ]
    diff.columns = names
    started = runs["start_time"].dt.strftime("%Y-%m-%d %H:%M")
    metrics.loc["started"] = started.to_numpy()
    if "tags.mlflow.user" in runs:  # on a shared server: which analyst ran it
        metrics.loc["by"] = runs["tags.mlflow.user"].fillna("").to_numpy()
    return metrics, diff
