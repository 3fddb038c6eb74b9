"""What a book looks like: mixes, event rates and the ceiling AUCs of its truth."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from bookpulse import labels
from bookpulse.book import io
from bookpulse.domain import (
    ACTIVATION_WINDOW_DAYS,
    CHURN_HORIZON_MONTHS,
    SEGMENTS,
    TIERS,
    UPGRADE_HORIZON_MONTHS,
    tier_index,
)
from bookpulse.specs import Population

H = CHURN_HORIZON_MONTHS  # the simulator's truth is for 3-month windows (30 days for cards)
assert H == UPGRADE_HORIZON_MONTHS


@dataclass
class TargetSummary:
    """Realised event rate over the labelled months and the AUC of the true probabilities."""

    title: str
    rows: int
    rate: float
    ceiling_auc: float
    months: int
    by_group: dict[str, float] = field(default_factory=dict)


@dataclass
class BookSummary:
    meta: dict
    active_customers: int
    tier_mix: dict[str, float]
    segment_mix: dict[str, float]
    products_mix: dict[str, float]
    churn_by_products: dict[str, float]
    targets: dict[str, TargetSummary]


def _ceiling(y: np.ndarray, p: np.ndarray) -> float:
    ok = ~np.isnan(p)
    y, p = y[ok], p[ok]
    return float(roc_auc_score(y, p)) if 0 < y.sum() < y.size else float("nan")


def summarize(book: Path) -> BookSummary:
    """Summarise a generated book (reads snapshots, cards and the truth)."""
    meta = io.read_meta(book)
    months: list[str] = meta["months"]
    snaps = {
        m: io.read_monthly(
            book, "snapshots", [m], [*labels.BASE_COLUMNS, "products_held", "has_wealth"]
        )
        for m in months
    }
    last = labels.active_customers(snaps[months[-1]])
    tiers = pd.Series(np.asarray(TIERS)[tier_index(last["aum_total"])])
    tier_mix = tiers.value_counts(normalize=True).reindex(list(TIERS), fill_value=0.0)
    customers = io.read_static(book, "customers", ["customer_id", "segment"])
    seg_mix = (
        customers.loc[customers["customer_id"].isin(last["customer_id"]), "segment"]
        .astype(str)
        .value_counts(normalize=True)
        .reindex(list(SEGMENTS), fill_value=0.0)
    )
    prod = last["products_held"].clip(upper=6).map(lambda k: "6+" if k >= 6 else str(k))
    prod_mix = prod.value_counts(normalize=True).sort_index()

    targets: dict[str, TargetSummary] = {}
    churn_rows, upgrade_rows, wealth_rows = [], [], []
    below_top = Population(exclude_tiers=[TIERS[-1]])
    for i, m in enumerate(months[: max(0, len(months) - H)]):
        snap_t = snaps[m]
        window = pd.concat([snaps[k] for k in months[i + 1 : i + 1 + H]])
        truth = io.read_truth(book, [m]).drop(columns="month")
        ch = labels.attrition_labels(snap_t, window, "churned")
        ch = ch.merge(truth, on="customer_id", how="left")
        ch = ch.merge(snap_t[["customer_id", "products_held"]], on="customer_id")
        churn_rows.append(ch)
        up = labels.tier_up_labels(snap_t, snaps[months[i + H]], "upgraded", below_top)
        upgrade_rows.append(up.merge(truth, on="customer_id", how="left"))
        took = labels.take_up_labels(snap_t, window, "has_wealth", "took_up")
        took = took.merge(snap_t[["customer_id", "aum_total"]], on="customer_id")
        took["tier_at"] = tier_index(took["aum_total"])
        wealth_rows.append(took.merge(truth, on="customer_id", how="left"))
    ch = pd.concat(churn_rows, ignore_index=True)
    up = pd.concat(upgrade_rows, ignore_index=True)
    by_products = ch.groupby(ch["products_held"].clip(upper=6))["churned"].mean()
    targets["churn"] = TargetSummary(
        title="churn within 3 months",
        rows=len(ch),
        rate=float(ch["churned"].mean()),
        ceiling_auc=_ceiling(ch["churned"].to_numpy(), ch["p_churn_3m"].to_numpy(float)),
        months=len(churn_rows),
        by_group={
            "3 or fewer products": float(ch.loc[ch["products_held"] <= 3, "churned"].mean()),
            "4+ products": float(ch.loc[ch["products_held"] >= 4, "churned"].mean()),
        },
    )
    by_tier = up.groupby("tier_at")["upgraded"].mean()
    targets["tier_upgrade"] = TargetSummary(
        title="tier upgrade within 3 months",
        rows=len(up),
        rate=float(up["upgraded"].mean()),
        ceiling_auc=_ceiling(up["upgraded"].to_numpy(), up["p_upgrade_3m"].to_numpy(float)),
        months=len(upgrade_rows),
        by_group={f"from {TIERS[int(k)]}": float(v) for k, v in by_tier.items()},
    )

    cards = io.read_static(book, "cards", ["card_id", "issue_date", "first_use_date", "channel"])
    truth_cards = pd.read_parquet(book / io.TRUTH_DIR / "cards.parquet")
    card_rows = []
    end = io.month_end(months[-1])
    for m in months:
        if io.month_end(m) + pd.Timedelta(days=ACTIVATION_WINDOW_DAYS) > end:
            break
        card_rows.append(
            labels.first_use_labels(cards, io.month_end(m), ACTIVATION_WINDOW_DAYS, "activated")
        )
    ca = pd.concat(card_rows, ignore_index=True).merge(truth_cards, on="card_id", how="left")
    ca = ca.merge(cards[["card_id", "channel"]], on="card_id")
    by_channel = ca.groupby(ca["channel"].astype(str))["activated"].mean()
    targets["card_activation"] = TargetSummary(
        title="card first use within 30 days",
        rows=len(ca),
        rate=float(ca["activated"].mean()),
        ceiling_auc=_ceiling(ca["activated"].to_numpy(), ca["p_activate_30d"].to_numpy(float)),
        months=len(card_rows),
        by_group={f"{k}": float(v) for k, v in by_channel.items()},
    )
    wt = pd.concat(wealth_rows, ignore_index=True)
    truth_wealth = wt["p_wealth_3m"] if "p_wealth_3m" in wt else pd.Series(np.nan, index=wt.index)
    targets["wealth_take_up"] = TargetSummary(
        title="wealth product taken up within 3 months",
        rows=len(wt),
        rate=float(wt["took_up"].mean()),
        ceiling_auc=_ceiling(wt["took_up"].to_numpy(), truth_wealth.to_numpy(float)),
        months=len(wealth_rows),
        by_group={
            f"from {TIERS[int(k)]}": float(v)
            for k, v in wt.groupby("tier_at")["took_up"].mean().items()
        },
    )
    return BookSummary(
        meta=meta,
        active_customers=len(last),
        tier_mix=tier_mix.to_dict(),
        segment_mix=seg_mix.to_dict(),
        products_mix=prod_mix.to_dict(),
        churn_by_products={str(int(k)): float(v) for k, v in by_products.items()},
        targets=targets,
    )
