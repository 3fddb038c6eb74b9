"""Training sets: feature frames stacked with labels over a range of as_of months."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from bookpulse import labels
from bookpulse.book import io
from bookpulse.features import build_features, read_frames
from bookpulse.specs import ModelSpec


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
            parts[spec.name].append(rows)
    return {name: pd.concat(p, ignore_index=True) for name, p in parts.items()}


def training_set(book: Path, spec: ModelSpec, months: Sequence[str] | None = None) -> pd.DataFrame:
    return training_sets(book, [spec], months)[spec.name]
