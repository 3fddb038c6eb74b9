"""Training sets: feature frames stacked with labels over a range of as_of months."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from bookpulse import labels
from bookpulse.book import io
from bookpulse.features import build_features, read_frames
from bookpulse.specs import ModelSpec, load_feature_catalog


def embargo_months(spec: ModelSpec) -> int:
    """Months left out between the calibration and test windows: a label for month T reads
    (T, T + h], so the test starts h months after the last calibration month and no
    calibration outcome falls inside the test's outcome period (the calibration would
    otherwise absorb the test period's event rate and flatter the test's calibration)."""
    return max((spec.target.horizon_months or 1) - 1, 0)


def split_months(spec: ModelSpec, book_months: Sequence[str]) -> dict[str, list[str]]:
    """The spec's out-of-time split over the book's labelled months, latest last:
    train, then valid (early stopping), then calibration, an embargo, then test."""
    labelled = labels.labelled_months(list(book_months), spec.target)
    s = spec.split
    gap = embargo_months(spec)
    need = s.train_months + s.valid_months + s.calibration_months + gap + s.test_months
    if len(labelled) < need:
        raise io.BookError(
            f"model {spec.name!r} needs {need} labelled months "
            f"({s.train_months} train + {s.valid_months} valid + {s.calibration_months} "
            f"calibration + {gap} embargo + {s.test_months} test) but the book has "
            f"{len(labelled)}; generate a longer book or shorten the split in the spec"
        )
    used = labelled[-need:]
    cut1 = s.train_months
    cut2 = cut1 + s.valid_months
    cut3 = cut2 + s.calibration_months
    return {
        "train": used[:cut1],
        "valid": used[cut1:cut2],
        "calibration": used[cut2:cut3],
        "test": used[cut3 + gap :],
    }


def training_sets(
    book: Path,
    specs: Sequence[ModelSpec],
    months: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, pd.DataFrame]:
    """For each spec: keys, its features and its label, stacked over `months`.

    Features are built once per month and shared by the specs. Without `months`, each spec
    gets the months of its split. A month outside a spec's labelled months is refused."""
    meta = io.read_meta(book)
    book_months = meta["months"]
    wanted: dict[str, list[str]] = {}
    for spec in specs:
        labelled = set(labels.labelled_months(book_months, spec.target))
        if months is None:
            chosen = [m for part in split_months(spec, book_months).values() for m in part]
        else:
            chosen = [io.month_key(m) for m in months]
            unlabelled = [m for m in chosen if m not in labelled]
            if unlabelled:
                raise io.BookError(
                    f"{spec.name}: no labels for {', '.join(unlabelled)} (the outcome window "
                    f"runs past the book's end or the month is not in the book)"
                )
        wanted[spec.name] = chosen
    parts: dict[str, list[pd.DataFrame]] = {spec.name: [] for spec in specs}
    # each month-end's label columns read once for every spec and every window it falls in
    columns = [
        c for s in specs if s.target.horizon_months for c in labels.snapshot_columns(s.target)
    ]
    snapshots = labels.BookSnapshots(book, list(dict.fromkeys(columns)))
    sliced = load_feature_catalog().slice_columns()
    cards = None
    if any(s.target.kind == "first_use" for s in specs):
        cards = io.read_static(book, "cards", ["card_id", "issue_date", "first_use_date"])
    for month in sorted({m for ms in wanted.values() for m in ms}):
        if progress:
            progress(month)
        snapshots.forget_before(month)
        customers, card_rows = build_features(read_frames(book, month), month)
        for spec in specs:
            if month not in wanted[spec.name]:
                continue
            key = spec.id_column
            frame = customers if spec.entity == "customer" else card_rows
            lab = labels.label_month(spec.target, month, book_months, snapshots, cards)
            rows = frame[[key, "as_of", *spec.features]].merge(
                lab[[key, spec.target.label]], on=key, how="inner", validate="one_to_one"
            )
            parts[spec.name].append(with_slices(rows, frame, customers, spec, sliced))
    return {name: pd.concat(p, ignore_index=True) for name, p in parts.items()}


def with_slices(
    rows: pd.DataFrame,
    frame: pd.DataFrame,
    customers: pd.DataFrame,
    spec: ModelSpec,
    sliced: Sequence[str],
) -> pd.DataFrame:
    """`rows` with the customer columns the weak-spot and fairness tables break figures down by
    (`sliced`), those the model does not read already: a customer's own, a card's holder's (by
    `customer_id`; a holder no longer active has them missing). The model never reads them."""
    extra = [c for c in sliced if c not in rows.columns]
    if not extra:
        return rows
    if spec.entity == "customer":
        return rows.merge(frame[[spec.id_column, *extra]], on=spec.id_column, how="left")
    holders = frame[[spec.id_column, "customer_id"]].merge(
        customers[["customer_id", *extra]], on="customer_id", how="left"
    )
    return rows.merge(holders[[spec.id_column, *extra]], on=spec.id_column, how="left")


def training_set(book: Path, spec: ModelSpec, months: Sequence[str] | None = None) -> pd.DataFrame:
    return training_sets(book, [spec], months)[spec.name]


# --- uplift: the rows of past lists, with their assignment and outcome ----------------------


class NoContacts(io.BookError):
    """The book holds no contacts for a list: its uplift model cannot be trained."""


def contacts_of(book: Path, list_name: str, action: str) -> pd.DataFrame:
    """Every recorded contact of one list and action (any month the book has), or refused with
    a message when there is none or when no row was held out."""
    months = io.available_months(book, "contacts")
    if not months:
        raise NoContacts(
            f"the book at {book} has no contacts table: uplift models learn from past lists "
            "worked with a randomised hold-out (contacts/month=YYYY-MM/)"
        )
    rows = io.read_monthly(book, "contacts", months)
    rows = rows.loc[rows["list"].astype(str).eq(list_name) & rows["action"].astype(str).eq(action)]
    if rows.empty:
        raise NoContacts(f"the book's contacts hold no {action!r} on the {list_name!r} list")
    if not rows["assignment"].astype(str).eq("control").any():
        raise io.BookError(
            f"the {list_name!r} list's contacts have no held-out (control) rows: an uplift "
            "model needs a randomised hold-out, customers picked for the list at random and "
            "not contacted, to compare the contacted ones with"
        )
    rows = rows.assign(card_id=pd.array(rows["card_id"], dtype="Int64"))
    return rows


def uplift_set(
    book: Path,
    outcome: ModelSpec,
    features: Sequence[str],
    contacts: pd.DataFrame,
    months: Sequence[str],
    progress: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """The rows of the lists drawn up at the month-ends `months`: id, as_of (the list's
    month-end), `features` as of then, the outcome label of `outcome` over the window after it,
    assignment and reached. Only the listed customers (and those they are linked to) are read."""
    from bookpulse.features.history import with_linked

    book_months = io.read_meta(book)["months"]
    key = outcome.id_column
    snapshots = labels.BookSnapshots(book, labels.snapshot_columns(outcome.target))
    cards = None
    if outcome.target.kind == "first_use":
        cards = io.read_static(book, "cards", ["card_id", "issue_date", "first_use_date"])
    parts = []
    for month in months:
        if progress:
            progress(month)
        snapshots.forget_before(month)
        listed = contacts.loc[contacts["list_month"].eq(io.month_end(month))]
        if listed.empty:
            continue
        twice = listed[key].duplicated(keep=False)
        if twice.any():
            raise io.BookError(
                f"{int(twice.sum())} contacts name the same {key.removesuffix('_id')} twice "
                f"for the list drawn up at {month} (e.g. {key} {listed.loc[twice, key].iloc[0]}): "
                "a listed row has one assignment; keep one contact per list and month"
            )
        ids = listed["customer_id"].unique()
        rel = io.read_static(book, "relationships", where=("customer_id", ids))
        frames = read_frames(book, month, customer_ids=with_linked(rel, ids))
        customers, card_rows = build_features(frames, month)
        frame = customers if outcome.entity == "customer" else card_rows
        lab = labels.label_month(outcome.target, month, book_months, snapshots, cards)
        rows = (
            frame[[key, "as_of", *features]]
            .merge(lab[[key, outcome.target.label]], on=key, how="inner", validate="one_to_one")
            .merge(
                listed[[key, "assignment", "reached"]].astype({key: "int64"}),
                on=key,
                how="inner",
                validate="one_to_one",
            )
        )
        parts.append(rows)
    if not parts:
        raise NoContacts(f"no listed rows in {', '.join(months)}")
    return pd.concat(parts, ignore_index=True)


def uplift_months(outcome: ModelSpec, book_months: Sequence[str], contacts: pd.DataFrame, split):
    """(train, test) list months: those with contacts whose outcome window has closed, the
    last `split.test_months` of them for the test, up to `split.train_months` before them and
    the embargo (`embargo_months`: no training outcome falls in the test's outcome period)."""
    labelled = set(labels.labelled_months(list(book_months), outcome.target))
    drawn = sorted({io.month_key(t) for t in contacts["list_month"].unique()})
    usable = [m for m in drawn if m in labelled]
    gap = embargo_months(outcome)
    need = split.test_months + gap + 1
    if len(usable) < need:
        raise io.BookError(
            f"{len(usable)} month(s) of lists with a closed outcome window; the split needs at "
            f"least {need} ({split.test_months} to test, {gap} embargo and one to train)"
        )
    test = usable[-split.test_months :]
    train = usable[: len(usable) - split.test_months - gap][-split.train_months :]
    return train, test
