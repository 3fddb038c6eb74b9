"""`bookpulse review`: a scored month whose outcome windows have closed, against what each
model's validation pack promised (`bookpulse.model.realised`), and each action list's listed
rows against the same RMs' unlisted ones; an HTML report and an MLflow run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

from bookpulse.adapters import tracking
from bookpulse.adapters.champions import available_champions
from bookpulse.adapters.publish import MANIFEST_FILE, Manifest, default_out, read_scores
from bookpulse.adapters.registry import first_test_month, run_metrics
from bookpulse.adapters.report import log_report_run, reports_dir, review_html, write_page
from bookpulse.book import io
from bookpulse.config import get_settings
from bookpulse.errors import MonitorError
from bookpulse.features import build_features, read_frames
from bookpulse.jobs.monitor import Report
from bookpulse.jobs.uplift import true_benefit
from bookpulse.labels import labelled_months, labels_for_month
from bookpulse.model import lists as list_rules
from bookpulse.model.realised import (
    Caused,
    Realised,
    caused,
    list_outcomes,
    list_totals,
    realised,
)
from bookpulse.model.slices import flagged, slice_table
from bookpulse.specs import (
    FeatureCatalog,
    ModelSpec,
    Playbook,
    load_feature_catalog,
    load_model_specs,
    load_playbook,
    load_uplift_specs,
)

PROMISED = (
    "auc",
    "lift_top10",
    "ece",
    "ece_noise",
    "event_rate",
    "mean_probability",
    "oe_month_max_dev",
)


@dataclass(frozen=True)
class ReviewRequest:
    """A scored month to review. `None`: the home's book, `$BOOKPULSE_HOME/scores/MONTH`."""

    home: Path
    scored: str
    book: Path | None = None
    scores: Path | None = None


@dataclass
class ReviewResult:
    report: Report
    results: dict[str, Realised]
    skipped: dict[str, str]  # model or list -> why it was not reviewed
    caused: dict[str, Caused] = field(default_factory=dict)  # list -> treated vs hold-out
    against: dict[str, dict[str, float]] = field(default_factory=dict)  # risk vs value lists


def caused_by_lists(
    book: Path, scored: str, specs: dict[str, ModelSpec], playbook: Playbook
) -> tuple[dict[str, Caused], dict[str, str]]:
    """Each list drawn up at month-end `scored` and worked by the bank (the book's `contacts`
    with list_month `scored`): its treated rows against its randomised hold-out, over the
    outcome window of the list's model; with the simulator's true average effect when the
    book has it."""
    notes: dict[str, str] = {}
    months = io.read_meta(book)["months"]
    later = [m for m in io.available_months(book, "contacts") if m > scored]
    if not io.available_months(book, "contacts"):
        return {}, {
            "campaigns": "the book has no contacts table: what the lists' actions "
            "changed can only be measured against randomised hold-outs"
        }
    contacts = io.read_monthly(book, "contacts", later) if later else pd.DataFrame()
    if not contacts.empty:
        contacts = contacts.loc[contacts["list_month"].eq(io.month_end(scored))]
    truth_of = {u.uplift.list: u for u, _ in load_uplift_specs().values()}
    rms = io.read_static(book, "rms", ["rm_id", "branch_id"])
    found: dict[str, Caused] = {}
    for list_name, action_list in playbook.lists.items():
        rows = contacts.loc[contacts["list"].astype(str).eq(list_name)] if len(contacts) else []
        if len(rows) == 0:
            notes[f"list {list_name} by cause"] = f"no contacts of lists drawn up at {scored}"
            continue
        spec = specs.get(action_list.model)
        if spec is None or scored not in labelled_months(months, spec.target):
            notes[f"list {list_name} by cause"] = "its outcome window has not closed"
            continue
        if not rows["assignment"].astype(str).eq("control").any():
            notes[f"list {list_name} by cause"] = (
                "no held-out rows: without a randomised hold-out the effect of the calls "
                "cannot be told from whom the list picked"
            )
            continue
        key, word = spec.id_column, spec.target.label
        rows = rows.assign(card_id=pd.array(rows["card_id"], dtype="Int64"))
        labels = labels_for_month(book, spec.target, scored, months)[[key, word]]
        snap = io.read_monthly(
            book,
            "snapshots",
            [scored],
            ["customer_id", "aum_total"],
            ("customer_id", rows["customer_id"].unique()),
        )
        joined = (
            rows.astype({key: "int64"})
            .merge(labels, on=key)
            .merge(snap[["customer_id", "aum_total"]], on="customer_id", how="left")
            .merge(rms, on="rm_id", how="left")
        )
        frame = pd.DataFrame(
            {
                "treated": joined["assignment"].astype(str).eq("treated").to_numpy(),
                "y": joined[word].to_numpy(float),
                "branch_id": joined["branch_id"].to_numpy(),
                "rm_id": joined["rm_id"].to_numpy(),
                "assets": joined["aum_total"].fillna(0.0).to_numpy(float),
            }
        )
        uplift_spec = truth_of.get(list_name)
        found[list_name] = caused(
            list_name,
            word,
            uplift_spec.uplift.aim if uplift_spec else "lower",
            frame,
            _true_effect(book, scored, spec, joined, uplift_spec),
        )
    return found, notes


def risk_against_value(
    book: Path, scored: str, out: Path, specs: dict[str, ModelSpec], playbook: Playbook
) -> dict[str, dict[str, float]]:
    """On a synthetic book, for each list an uplift model scored this month: what the list
    ranked by risk and the list ranked by expected value would have achieved at the same RM
    capacity, counted with the simulator's true effects over their treated rows (customers or
    cards kept or won, and the assets at stake with them). Empty without the truth."""
    if not (book / io.TRUTH_DIR).is_dir():
        return {}
    uplifts = {u.name: (u, o) for u, o in load_uplift_specs().values()}
    rms = io.read_static(book, "rms")
    branches = io.read_static(book, "branches", ["branch_id", "branch_name"])
    found = {}
    for name, lst in playbook.lists.items():
        if lst.uplift not in uplifts or lst.model not in specs:
            continue
        uplift, _ = uplifts[lst.uplift]
        spec = specs[lst.model]
        table = read_scores(out, spec.entity)
        if f"{uplift.prefix}_value" not in table or f"{spec.prefix}_decile" not in table:
            continue
        true = true_benefit(book, scored, spec, uplift)
        if true is None:
            continue
        key = spec.id_column
        counts = {}
        for ranking, by in (("risk", None), ("value", uplift)):
            rows = list_rules.action_list(name, lst, table, spec.prefix, key, rms, branches, by)
            counts[f"{ranking}_listed"] = float(len(rows))
            rows = rows.loc[rows["assignment"].eq("treated")]
            ids = rows[key].astype("int64").to_numpy()
            gain = true.reindex(ids).to_numpy(float)
            stake = table.set_index(key)[f"{uplift.prefix}_at_stake"].reindex(ids).to_numpy()
            counts[f"{ranking}_rows"] = float(len(rows))
            counts[f"{ranking}_kept"] = float(np.nansum(gain))
            counts[f"{ranking}_assets"] = float(np.nansum(gain * stake))
        found[name] = counts
    return found


def _true_effect(book: Path, scored: str, spec: ModelSpec, rows: pd.DataFrame, uplift_spec):
    """The simulator's average reach x effect over the listed rows, in the outcome's own
    direction (None: not synthetic)."""
    if uplift_spec is None or not (book / io.TRUTH_DIR).is_dir():
        return None
    benefit = true_benefit(book, scored, spec, uplift_spec)
    if benefit is None:
        return None
    sign = -1.0 if uplift_spec.uplift.aim == "lower" else 1.0
    ids = rows[spec.id_column].astype("int64").to_numpy()
    return float(sign * benefit.reindex(ids).mean())


def earliest_reviewable(home: Path) -> str:
    """The earliest month every champion can be reviewed on: the latest of their test
    windows' first months."""
    tracking.configure(home)
    champions, _ = available_champions(list(load_model_specs().values()))
    runs = [c.run_id for c in champions.values()]
    runs += [u.run_id for c in champions.values() for u in c.uplifts]
    return max(first_test_month(run_id) for run_id in runs)


def realised_outcomes(
    book: Path, scored: str, out: Path, specs: dict[str, ModelSpec], playbook: Playbook
) -> tuple[dict[str, Realised], dict[str, tuple[str, pd.DataFrame, dict]], dict[str, str]]:
    """Realised outcomes of scored month `scored` (published at `out`) against the promise of
    the models that scored it, and of its lists."""
    if not (out / MANIFEST_FILE).is_file():
        raise MonitorError(
            f"{scored} has not been scored at {out}: run `bookpulse score --as-of {scored}` "
            "first (the review reads what was actually scored then)"
        )
    manifest = Manifest.read(out)
    if io.month_key(manifest.as_of) != scored:
        raise MonitorError(
            f"{out} holds the scores of {manifest.as_of}, not {scored}: point --scores at the "
            f"folder of {scored}"
        )
    months = io.read_meta(book)["months"]
    results: dict[str, Realised] = {}
    tables: dict[str, pd.DataFrame] = {}  # each score file read once
    outcomes: dict[str, pd.DataFrame] = {}
    groups: dict[str, pd.DataFrame] = {}  # each reviewed row's slice columns
    attributes: dict[str, pd.DataFrame] = {}  # the month's slice columns, built once
    skipped: dict[str, str] = {}
    for name, used in manifest.models.items():
        spec = specs.get(name)
        if spec is None:
            skipped[name] = "no model spec of that name any more"
            continue
        if scored not in labelled_months(months, spec.target):
            skipped[name] = (
                f"its outcome window has not closed in the book (last month {months[-1]})"
            )
            continue
        try:
            first = first_test_month(used.run_id)
            promised_all = run_metrics(used.run_id)
        except MlflowException:
            skipped[name] = f"run {used.run_id} of version {used.version} is not in MLflow"
            continue
        if not first:
            skipped[name] = (
                f"run {used.run_id} logged no test window: the month cannot be shown to be "
                "out of time for it"
            )
            continue
        if scored < first:
            skipped[name] = (
                f"version {used.version} was fitted, calibrated or embargoed on months "
                f"before {first}: a review of {scored} would be in-sample"
            )
            continue
        key, word, prefix = spec.id_column, spec.target.label, spec.prefix
        if spec.entity not in tables:
            tables[spec.entity] = read_scores(out, spec.entity)
        table = tables[spec.entity]
        labels = labels_for_month(book, spec.target, scored, months)[[key, word]]
        joined = table[[key, "branch_id", "rm_id", f"{prefix}_probability", f"{prefix}_decile"]]
        joined = joined.dropna(subset=[f"{prefix}_probability"]).merge(labels, on=key)
        promised = {k: float(promised_all[k]) for k in PROMISED if k in promised_all}
        results[name] = realised(
            name,
            joined[word].to_numpy(int),
            joined[f"{prefix}_probability"].to_numpy(float),
            joined[f"{prefix}_decile"].to_numpy(int),
            promised,
        )
        outcomes[name] = joined.rename(columns={key: "id", word: "y"})[
            ["id", "branch_id", "rm_id", "y"]
        ]
        groups[name] = (
            joined[[key, word, f"{prefix}_probability"]]
            .set_axis([key, "y", "p"], axis=1)
            .merge(slice_frames(book, scored, attributes)[spec.entity], on=key, how="left")
        )
    lists = {}
    on_lists: dict[str, np.ndarray] = {}  # model -> its rows on any of its lists
    for list_name, action_list in playbook.lists.items():
        path = out / "lists" / f"{list_name}.parquet"
        if action_list.model not in outcomes:
            continue  # its model was not reviewed (said above)
        if not path.is_file():
            skipped[f"list {list_name}"] = f"{path} is missing"
            continue
        spec = specs[action_list.model]
        listed = pd.read_parquet(path)
        word = spec.target.label
        table = list_outcomes(outcomes[action_list.model], listed[spec.id_column].dropna(), word)
        lists[list_name] = (word, table, list_totals(table, word))
        on_list = outcomes[action_list.model]["id"].isin(set(listed[spec.id_column].dropna()))
        results[action_list.model].listed_on.append(list_name)
        before = on_lists.get(action_list.model, False)
        on_lists[action_list.model] = on_list.to_numpy() | before
    catalog = load_feature_catalog()
    for name, r in results.items():
        r.slices = breakdown(groups[name], "weak_spots", catalog)
        # on any of the model's lists (a model feeding two lists: listed on either)
        r.fairness = breakdown(groups[name], "fairness", catalog, on_lists.get(name))
    if not results:
        raise MonitorError(
            f"nothing to review for {scored}: " + "; ".join(f"{k}: {v}" for k, v in skipped.items())
        )
    return results, lists, skipped


def slice_frames(
    book: Path, scored: str, cache: dict[str, pd.DataFrame]
) -> dict[str, pd.DataFrame]:
    """The month's slice columns (the catalog's weak-spot and fairness features) per entity,
    keyed by customer_id and by card_id (a card's holder's), built once into `cache` from the
    book as of the month: the same features the scores were computed from."""
    if not cache:
        sliced = load_feature_catalog().slice_columns()
        customers, cards = build_features(read_frames(book, scored), scored)
        cache["customer"] = customers[["customer_id", *sliced]]
        cache["card"] = cards[["card_id", "customer_id"]].merge(
            cache["customer"], on="customer_id", how="left"
        )[["card_id", *sliced]]
    return cache


def breakdown(
    rows: pd.DataFrame, kind: str, catalog: FeatureCatalog, listed: np.ndarray | None = None
) -> pd.DataFrame:
    """A reviewed model's weak-spot or fairness table (`bookpulse.model.slices`) over its
    reviewed `rows` (y, p and the slice columns the catalog names for `kind`)."""
    columns = catalog.sliced_by(kind)
    y, p = rows["y"].to_numpy(), rows["p"].to_numpy()
    return slice_table(y, p, rows[columns], listed, against_book=kind == "fairness")


def review(request: ReviewRequest) -> ReviewResult:
    """Review one scored month; write the page and log the run."""
    home = Path(request.home)
    book = request.book or get_settings().book_dir
    scored = io.month_key(request.scored)
    out = Path(request.scores) if request.scores else default_out(home, scored)
    tracking.configure(home)
    specs, playbook = load_model_specs(), load_playbook()
    try:
        results, lists, skipped = realised_outcomes(book, scored, out, specs, playbook)
    except (OSError, KeyError, ValueError) as exc:  # missing or damaged score files
        raise MonitorError(
            f"reviewing {scored} failed: {type(exc).__name__}: {exc} (re-score the month with "
            f"`bookpulse score --as-of {scored}`)"
        ) from None
    by_cause, notes = caused_by_lists(book, scored, specs, playbook)
    skipped |= notes
    against = risk_against_value(book, scored, out, specs, playbook)
    page = reports_dir(home) / f"review-{scored}.html"
    write_page(page, review_html(scored, results, lists, skipped, by_cause, against))
    metrics, tags = {}, {}
    for name, r in results.items():
        for k, v in r.metrics.items():
            metrics[f"{name}.{k}"] = v
        for k, v in r.promised.items():
            metrics[f"{name}.promised_{k}"] = v
        tags[f"{name}.verdict"] = r.verdict
        for kind, table in (("weak_spots", r.slices), ("fairness", r.fairness)):
            if table is not None:
                metrics[f"{name}.{kind}_flagged"] = float(table["flag"].sum())
                tags[f"{name}.{kind}"] = ("; ".join(flagged(table)) or "none flagged")[:5000]
    for list_name, (_, _, totals) in lists.items():
        metrics[f"list.{list_name}.listed_rate"] = totals["listed_rate"]
        metrics[f"list.{list_name}.not_listed_rate"] = totals["not_listed_rate"]
    for list_name, c in by_cause.items():
        for k in ("effect", "effect_low", "effect_high", "rows_gained", "assets_gained"):
            metrics[f"list.{list_name}.caused_{k}"] = float(c.totals[k])
        if c.true_effect is not None:
            metrics[f"list.{list_name}.caused_true_effect"] = c.true_effect
    for list_name, counts in against.items():
        metrics |= {f"list.{list_name}.{k}": v for k, v in counts.items()}
    run_id = log_report_run(home, "review", scored, metrics, tags, page)
    return ReviewResult(Report(scored, page, run_id), results, skipped, by_cause, against)
