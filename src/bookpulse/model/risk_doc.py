"""The model-risk document of a champion: what a bank's model-risk reviewer reads before signing
(the SR 11-7 pattern: development evidence, independent validation, ongoing monitoring).

Pure: plain data in (`facts`, gathered from what the training run and the registry logged, by
`bookpulse.adapters.risk_doc`), Markdown and HTML out. Nothing is recomputed from data here: a
figure the run did not log is shown as not logged. The keys of `facts`:

- `model`, `registered_name`, `version`, `aliases` (list), `run_id`, `experiment`,
  `trained_at`, `trained_by`, `generated_at`: who and what;
- `params`, `metrics`, `run_tags`: the training run's (params `window.*`, `rows.*`,
  `positive_rate.*`, `embargo_months`, `lgb.*`...; metrics of the out-of-time test window);
- `version_tags`: the registered version's (`promoted_at`, `book`, hashes...);
- `auc_by_month`: month (YYYY-MM) -> AUC, from the run's `auc_test_month` history;
- `spec`: the model spec as logged with the run (`validation/spec.json`), `spec_source` where
  it came from;
- `catalog`: the feature groups of the model's entity, each `{group, description, features:
  [{name, dtype, window_months, description, monitor}]}`;
- `reference`: `validation/reference.json` (None when not logged);
- `gains`, `slices`, `fairness`: rows (dicts) of `validation/gains_by_decile.csv`,
  `slices.csv`, `fairness.csv`, or None when the run did not log them;
- `artifacts`: the run's artifact paths; `plots`: PNG bytes by plot name (for the HTML);
- `decisions`: the registry's promotion and rollback decisions of the model, newest first;
- `monitoring`: the monitor's and review's thresholds (`monitoring_thresholds()`).
"""

from __future__ import annotations

import base64
import html
import math
import re
from dataclasses import dataclass, field

NOT_LOGGED = "not logged by this run"
PARTS = ("train", "valid", "calibration", "test")
PLOTS = {
    "roc": "ROC curve on the out-of-time test window",
    "pr": "precision-recall curve on the test window",
    "gains_lift": "lift by score decile and cumulative gains",
    "calibration": "observed event rate against mean probability, by decile",
    "feature_importance": "feature importance (total gain)",
    "shap_summary": "SHAP summary on a sample of test rows",
}
SECTIONS = (
    "Summary",
    "1. Purpose and population",
    "2. Data and windows",
    "3. Features",
    "4. Performance",
    "5. Calibration",
    "6. Stability",
    "7. Fairness",
    "8. Independent validation and promotion",
    "9. Limitations",
    "10. Ongoing monitoring plan",
    "11. Evidence and sign-off",
)


def monitoring_thresholds() -> dict:
    """The thresholds the monitor (drift), the early outcome read and the review (realised
    outcomes) apply to every champion, as the code holds them."""
    from bookpulse.model import drift, early, realised, slices

    return {
        "drift": {
            "watch": drift.WATCH,
            "act": drift.ACT,
            "missing_watch": drift.MISSING_WATCH,
            "missing_act": drift.MISSING_ACT,
            "volume_watch": drift.VOLUME_WATCH,
            "volume_act": drift.VOLUME_ACT,
            "level": drift.LEVEL,
            "top_features": drift.TOP_FEATURES,
        },
        "realised": {
            "auc_drop": realised.AUC_DROP,
            "oe_band": realised.OE_BAND,
            "oe_z": realised.OE_Z,
        },
        "early": {
            "oe_z": early.OE_Z,
            "oe_band": early.OE_BAND,
            "auc_drop": early.AUC_DROP,
            "timing_windows": early.TIMING_WINDOWS,
            "cbpe_note": early.CBPE_NOTE,
        },
        "slices": {
            "family_alpha": slices.FAMILY_ALPHA,
            "oe_band": slices.OE_BAND,
            "auc_drop": slices.AUC_DROP,
            "listing_band": slices.LISTING_BAND,
        },
    }


# --- a small document model, rendered twice ----------------------------------------------------


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    flagged: list[bool] = field(default_factory=list)  # rows to highlight


@dataclass
class Figure:
    name: str  # validation/plots/<name>.png
    caption: str


# a block: ("h2" | "h3", text) | ("p", text) | ("ul", [text]) | Table | Figure
Block = tuple | Table | Figure


def _num(x, fmt: str = "{:.3f}") -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "-"
    return "-" if not math.isfinite(v) else fmt.format(v)


def _pct(x, digits: int = 1) -> str:
    return _num(x, "{:." + str(digits) + "%}")


def _int(x) -> str:
    return _num(x, "{:,.0f}")


def _window(value: str | None) -> tuple[str, int]:
    """'2026-01..2026-03' -> (text, months)."""
    if not value or ".." not in value:
        return (value or "-", 0)
    a, b = value.split("..")
    try:
        ya, ma = (int(x) for x in a.split("-"))
        yb, mb = (int(x) for x in b.split("-"))
        n = (yb - ya) * 12 + mb - ma + 1
    except ValueError:
        n = 0
    return (value, n)


def _flag(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    try:
        return bool(value) and not (isinstance(value, float) and math.isnan(value))
    except (TypeError, ValueError):
        return False


def _metric(facts: dict, key: str) -> float:
    v = facts.get("metrics", {}).get(key)
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _auc_se(auc: float, positives: float, negatives: float) -> float:
    """Hanley and McNeil's standard error of an AUC, from logged counts."""
    from bookpulse.model.realised import auc_se

    if not (math.isfinite(auc) and positives >= 1 and negatives >= 1):
        return float("nan")
    return auc_se(auc, int(positives), int(negatives))


def _test_counts(facts: dict) -> tuple[float, float]:
    """Rows and events of the test window, from the logged rows and positive rate."""
    p = facts.get("params", {})
    try:
        rows = float(p.get("rows.test", "nan"))
        rate = float(p.get("positive_rate.test", "nan"))
    except ValueError:
        return float("nan"), float("nan")
    return rows, rows * rate


# --- sections ----------------------------------------------------------------------------------


def _summary(f: dict) -> list[Block]:
    m, spec = f.get("metrics", {}), f.get("spec", {})
    test, months = _window(f.get("params", {}).get("window.test"))
    gates = spec.get("gates", {})
    rows, events = _test_counts(f)
    auc = _metric(f, "auc")
    se = _auc_se(auc, events, rows - events)
    promoted = _promotion_of(f)
    items = [
        f"**Model**: {f['model']} (`{f['registered_name']}` version {f['version']}"
        + (f", aliases: {', '.join(f['aliases'])}" if f.get("aliases") else "")
        + f"), training run `{f['run_id']}`.",
        f"**Predicts**: {_oneline(spec.get('target', {}).get('event', '-'))}",
        f"**Out-of-time test window**: {test} ({months} months, {_int(rows)} rows, "
        f"{_int(events)} events).",
        f"**Discrimination**: AUC {_num(auc)} (standard error {_num(se)}), "
        f"minimum {_num(gates.get('min_auc'), '{}')}; top-decile lift "
        f"{_num(m.get('lift_top10'), '{:.2f}')}.",
        f"**Calibration**: ECE {_num(m.get('ece'), '{:.4f}')} against a sampling floor of "
        f"{_num(m.get('ece_noise'), '{:.4f}')}; excess {_num(m.get('ece_excess'), '{:.4f}')} "
        f"(allowed {_num(gates.get('max_calibration_error'), '{}')}).",
        f"**Stability**: score PSI train/test {_num(m.get('psi_train_test'))}; AUC by test "
        f"month {_num(m.get('auc_month_min'))} to {_num(m.get('auc_month_max'))}.",
        "**Weak spots**: " + _flag_count(f, "slices", "slices_flagged"),
        "**Fairness**: " + _flag_count(f, "fairness", "fairness_flagged"),
    ]
    if promoted is not None:
        items.append("**Promotion**: " + _decision_sentence(promoted))
    else:
        items.append("**Promotion**: no promotion of this version is recorded.")
    return [
        (
            "p",
            f"Generated {f.get('generated_at', '-')} by bookpulse from what the training run "
            "and the model registry logged; nothing in it is recomputed. The evidence follows "
            "the SR 11-7 pattern: development evidence (sections 1-7), independent validation "
            "(section 8), limitations (9) and ongoing monitoring (10).",
        ),
        ("ul", items),
    ]


def _flag_count(f: dict, key: str, metric: str) -> str:
    rows = f.get(key)
    if rows is None:
        return f"{NOT_LOGGED} (the run predates the {key} table)."
    flagged = [r for r in rows if _flag(r.get("flag"))]
    n = _metric(f, metric)
    count = int(n) if math.isfinite(n) else len(flagged)
    if not count:
        return f"{len(rows)} groups, none flagged beyond noise."
    names = ", ".join(f"{r.get('dimension')}={r.get('group')}" for r in flagged)
    return f"**{count} of {len(rows)} groups flagged** beyond noise: {names}."


def _oneline(text: str) -> str:
    return " ".join(str(text).split())


def _horizon(target: dict, months: str, days: str) -> str:
    """The outcome window's length, in months or days as the target has it."""
    if target.get("horizon_months"):
        return f"{target['horizon_months']}{months}"
    return f"{target.get('horizon_days', '-')}{days}"


def _purpose(f: dict) -> list[Block]:
    spec = f.get("spec", {})
    t = spec.get("target", {})
    horizon = f"{_horizon(t, ' months', ' days')} after month-end T"
    scored = t.get("scored") or {}
    rules = []
    if scored.get("exclude_tiers"):
        rules.append("tiers left out: " + ", ".join(scored["exclude_tiers"]))
    if scored.get("without_products"):
        rules.append("must not hold: " + ", ".join(scored["without_products"]))
    rows = [
        ["purpose", _oneline(spec.get("description", "-"))],
        ["score", f"{spec.get('score_noun', '-')}: a calibrated probability"],
        ["entity", f"{t.get('entity', '-')} (key `{_key(t.get('entity'))}`)"],
        ["population", _oneline(t.get("population", "-"))],
        ["population rules", "; ".join(rules) or "none beyond the entity's own"],
        ["event (target)", f"{_oneline(t.get('event', '-'))} (label `{t.get('label', '-')}`)"],
        ["horizon", horizon],
        ["early leavers", _oneline(t.get("leavers", "-"))],
        ["target kind", t.get("kind", "-")],
    ]
    return [
        Table(["", ""], rows),
        (
            "p",
            "Intended use: ranking the population at each month-end for the action lists "
            "(highest scores first) and, through calibration, expected counts of events. "
            "Not intended for: decisions on credit, pricing or eligibility, or as a causal "
            "estimate of any action's effect (the uplift models answer that).",
        ),
    ]


def _key(entity) -> str:
    return {"customer": "customer_id", "card": "card_id"}.get(entity, "-")


def _data(f: dict) -> list[Block]:
    p, tags, vt = f.get("params", {}), f.get("run_tags", {}), f.get("version_tags", {})
    rows = []
    for part in PARTS:
        text, n = _window(p.get(f"window.{part}"))
        rows.append(
            [
                part,
                text,
                str(n) if n else "-",
                _int(p.get(f"rows.{part}")),
                _pct(p.get(f"positive_rate.{part}"), 2),
            ]
        )
    embargo = p.get("embargo_months")
    blocks: list[Block] = [
        Table(["window", "months", "n months", "rows", "event rate"], rows),
        (
            "ul",
            [
                f"Book: `{tags.get('book') or vt.get('book') or '-'}` (generator "
                f"{tags.get('book_generator', '-')}, seed {tags.get('book_seed', '-')}).",
                "Split out of time, counted back from the latest labelled month: fitted on "
                "train, early-stopped on valid, calibrated (Platt) on calibration, judged on "
                f"test. Embargo: {embargo if embargo is not None else '-'} month(s) between "
                "calibration and test, so no calibration outcome falls in the test's outcome "
                "period.",
                "Point in time: a feature as of month-end T reads only data dated at or before "
                "T; the label reads only (T, T + horizon].",
                f"LightGBM: {p.get('num_boost_round', '-')} rounds at most, early stopping "
                f"{p.get('early_stopping_rounds', '-')}, best iteration "
                f"{p.get('best_iteration', '-')}; calibration {p.get('calibration', '-')}; "
                f"threads {p.get('threads', '-')}.",
                f"Spec hash `{p.get('spec_hash', '-')}`, feature-set hash "
                f"`{p.get('feature_set_hash', '-')}` (the spec as logged: "
                f"{f.get('spec_source', '-')}).",
            ],
        ),
    ]
    lgb = sorted((k.removeprefix("lgb."), v) for k, v in p.items() if k.startswith("lgb."))
    if lgb:
        blocks.append(
            ("p", "LightGBM parameters: " + ", ".join(f"`{k}={v}`" for k, v in lgb) + ".")
        )
    return blocks


def _features(f: dict) -> list[Block]:
    spec = f.get("spec", {})
    used = list(spec.get("features", []))
    ref = f.get("reference") or {}
    by_gain = ref.get("by_gain") or []
    rank = {name: i + 1 for i, name in enumerate(by_gain)}
    ref_features = ref.get("features") or {}
    blocks: list[Block] = [
        (
            "p",
            f"{len(used)} features, grouped as the feature catalog (`features/*.yaml`) groups "
            "them, with their plain descriptions. Gain rank: the feature's rank by total "
            "LightGBM gain (1 = most used), from the run's `validation/reference.json`"
            + ("" if by_gain else f" ({NOT_LOGGED}: gain ranks not shown)")
            + ". Usual PSI: how far the test window's own months moved from the whole, the "
            "floor under which the monitor does not count a feature's drift.",
        )
    ]
    declared: set[str] = set()
    for group in f.get("catalog", []):
        mine = [x for x in group.get("features", []) if x["name"] in used]
        declared |= {x["name"] for x in group.get("features", [])}
        if not mine:
            continue
        mine.sort(key=lambda x: (rank.get(x["name"], 10_000), used.index(x["name"])))
        blocks.append(("h3", f"{group['group']} ({len(mine)})"))
        blocks.append(("p", _oneline(group.get("description", ""))))
        rows = []
        for x in mine:
            r = ref_features.get(x["name"], {})
            rows.append(
                [
                    str(rank.get(x["name"], "-")),
                    f"`{x['name']}`",
                    _oneline(x.get("description", "")),
                    x.get("dtype", "-"),
                    str(x.get("window_months", "-")),
                    _num(r.get("usual_psi")) if r else "-",
                    "yes" if x.get("monitor", True) else "no (changes by design)",
                ]
            )
        blocks.append(
            Table(
                [
                    "gain rank",
                    "feature",
                    "description",
                    "type",
                    "months read",
                    "usual PSI",
                    "monitored",
                ],
                rows,
            )
        )
    stray = [x for x in used if x not in declared]
    if stray:
        blocks.append(
            (
                "p",
                "Not in today's feature catalog (described nowhere): "
                + ", ".join(f"`{x}`" for x in stray)
                + ".",
            )
        )
    blocks.append(Figure("feature_importance", PLOTS["feature_importance"]))
    blocks.append(Figure("shap_summary", PLOTS["shap_summary"]))
    return blocks


def _performance(f: dict) -> list[Block]:
    m = f.get("metrics", {})
    rows, events = _test_counts(f)
    auc = _metric(f, "auc")
    se = _auc_se(auc, events, rows - events)
    table = [
        ["AUC", _num(auc), f"standard error {_num(se)} (Hanley-McNeil, {_int(events)} events)"],
        ["PR-AUC", _num(m.get("pr_auc")), f"base rate {_pct(m.get('event_rate'), 2)}"],
        ["KS", _num(m.get("ks")), "largest gap between events' and non-events' scores"],
        ["Brier score", _num(m.get("brier"), "{:.4f}"), "mean squared error of probabilities"],
    ]
    for share in (5, 10, 20):
        table.append(
            [
                f"top {share}%",
                f"lift {_num(m.get(f'lift_top{share}'), '{:.2f}')}",
                f"captures {_pct(m.get(f'capture_top{share}'))} of events",
            ]
        )
    if "ceiling_auc" in m:
        table.append(
            [
                "ceiling AUC",
                _num(m.get("ceiling_auc")),
                f"the simulator's true probabilities (synthetic book); gap "
                f"{_num(m.get('gap_to_ceiling'))}",
            ]
        )
    blocks: list[Block] = [
        ("p", "All on the out-of-time test window, which no fitting step saw."),
        Table(["metric", "value", "note"], table),
    ]
    gains = f.get("gains")
    if gains:
        blocks.append(("h3", "Gains by score decile (1 = highest scores)"))
        blocks.append(
            Table(
                ["decile", "rows", "events", "event rate", "mean probability", "lift", "capture"],
                [
                    [
                        _int(g.get("decile")),
                        _int(g.get("rows")),
                        _int(g.get("events")),
                        _pct(g.get("event_rate"), 2),
                        _pct(g.get("mean_p"), 2),
                        _num(g.get("lift"), "{:.2f}"),
                        _pct(g.get("cum_capture")),
                    ]
                    for g in gains
                ],
            )
        )
    else:
        blocks.append(("p", f"Gains by decile: {NOT_LOGGED}."))
    blocks += [Figure("roc", PLOTS["roc"]), Figure("pr", PLOTS["pr"])]
    blocks.append(Figure("gains_lift", PLOTS["gains_lift"]))
    blocks.append(("h3", "Slices: weak spots by tier, segment, region and age band"))
    blocks += _group_table(f, "slices", "slices_flagged")
    return blocks


GROUP_COLUMNS = [
    ("dimension", "dimension", str),
    ("group", "group", str),
    ("rows", "rows", _int),
    ("events", "events", _int),
    ("event_rate", "event rate", lambda v: _pct(v, 2)),
    ("mean_probability", "mean probability", lambda v: _pct(v, 2)),
    ("observed_over_expected", "O/E", lambda v: _num(v, "{:.2f}")),
    ("oe_z", "O/E z", lambda v: _num(v, "{:+.1f}")),
    ("auc", "AUC", _num),
    ("auc_se", "AUC se", _num),
    ("listing_rate", "listing rate", _pct),
    ("events_listed", "events listed", _pct),
]


def _blank(v) -> bool:
    if v is None:
        return True
    if isinstance(v, str):
        return v.strip() == "" or v.strip().lower() == "nan"
    try:
        return math.isnan(float(v))
    except (TypeError, ValueError):
        return False


def _group_table(f: dict, key: str, metric: str) -> list[Block]:
    rows = f.get(key)
    what = {"slices": "validation/slices.csv", "fairness": "validation/fairness.csv"}[key]
    if rows is None:
        return [
            (
                "p",
                f"**{NOT_LOGGED}**: `{what}` is absent (the run was logged before bookpulse "
                "wrote it). Retrain the model to produce it; until then this evidence is "
                "missing from the pack.",
            )
        ]
    if not rows:
        return [("p", f"`{what}` was logged with no groups.")]
    cols = [
        c
        for c in GROUP_COLUMNS
        if c[0] in ("dimension", "group") or any(not _blank(r.get(c[0])) for r in rows)
    ]
    flagged = [_flag(r.get("flag")) for r in rows]
    body = []
    for r, fl in zip(rows, flagged, strict=True):
        cells = [fmt(r.get(k)) if not _blank(r.get(k)) else "-" for k, _, fmt in cols]
        cells.append("**FLAGGED**" if fl else "")
        cells.append(_oneline(r.get("note") or "") if not _blank(r.get("note")) else "")
        body.append(cells)
    header = [label for _, label, _ in cols] + ["flag", "note"]
    n = sum(flagged)
    rule = (
        "A group is flagged when it departs from the book both materially and beyond noise, "
        "after a correction for the number of groups tested (the rule of the run that logged "
        "the table)."
    )
    lead = (
        f"{n} group(s) flagged: "
        + "; ".join(
            f"**{r.get('dimension')}={r.get('group')}** ({_oneline(r.get('note') or '')})"
            for r, fl in zip(rows, flagged, strict=True)
            if fl
        )
        + "."
        if n
        else "No group flagged."
    )
    logged = _metric(f, metric)
    if math.isfinite(logged) and int(logged) != n:
        lead += f" (The run's metric `{metric}` says {int(logged)}.)"
    return [("p", rule + " " + lead), Table(header, body, flagged)]


def _calibration(f: dict) -> list[Block]:
    m, gates = f.get("metrics", {}), f.get("spec", {}).get("gates", {})
    excess = _metric(f, "ece_excess")
    allowed = gates.get("max_calibration_error")
    verdict = "-"
    if math.isfinite(excess) and allowed is not None:
        verdict = "within the gate" if excess <= float(allowed) else "**beyond the gate**"
    mean_p, rate = _metric(f, "mean_probability"), _metric(f, "event_rate")
    oe = rate / mean_p if mean_p > 0 else float("nan")
    rows = [
        ["ECE (10 equal-count bins)", _num(m.get("ece"), "{:.4f}")],
        [
            "ECE a perfectly calibrated model shows on these rows (noise)",
            _num(m.get("ece_noise"), "{:.4f}"),
        ],
        [
            "ECE beyond noise",
            f"{_num(excess, '{:.4f}')} (gate {_num(allowed, '{}')}: {verdict})",
        ],
        [
            "event rate / mean probability (O/E, test window)",
            f"{_pct(rate, 2)} / {_pct(mean_p, 2)} = {_num(oe, '{:.2f}')}",
        ],
        ["largest single-month O/E departure", _num(m.get("oe_month_max_dev"), "{:.1%}")],
    ]
    if "ece_truth" in m:
        rows.append(
            [
                "ECE against the true probabilities (synthetic book)",
                _num(m.get("ece_truth"), "{:.4f}"),
            ]
        )
    return [
        (
            "p",
            "Probabilities are LightGBM scores mapped through a Platt (logistic) calibration "
            "fitted on the calibration window; calibration moves the level, never the order.",
        ),
        Table(["measure", "value"], rows),
        Figure("calibration", PLOTS["calibration"]),
    ]


def _stability(f: dict) -> list[Block]:
    m, mon = f.get("metrics", {}), f.get("monitoring", {}).get("drift", {})
    psi = _metric(f, "psi_train_test")
    watch, act = mon.get("watch", 0.10), mon.get("act", 0.25)
    band = "-"
    if math.isfinite(psi):
        band = "act" if psi >= act else "watch" if psi >= watch else "stable"
    blocks: list[Block] = [
        (
            "p",
            f"Score PSI of the test window against the training window: **{_num(psi)}** "
            f"({band}; bands: below {watch} stable, {watch}-{act} watch, {act} and above act).",
        )
    ]
    by_month = f.get("auc_by_month") or {}
    if by_month:
        blocks.append(
            Table(
                ["test month", "AUC"],
                [[month, _num(auc)] for month, auc in sorted(by_month.items())],
            )
        )
        blocks.append(
            (
                "p",
                f"AUC by test month ranges {_num(m.get('auc_month_min'))} to "
                f"{_num(m.get('auc_month_max'))}.",
            )
        )
    else:
        blocks.append(("p", f"AUC by test month: {NOT_LOGGED}."))
    ref = f.get("reference") or {}
    if ref.get("months"):
        counts = ref.get("rows_by_month") or []
        blocks.append(
            (
                "p",
                "Rows by test month (the monitor's volume reference): "
                + ", ".join(f"{mo} {_int(c)}" for mo, c in zip(ref["months"], counts, strict=False))
                + f"; the score's usual month-to-month PSI is "
                f"{_num((ref.get('score') or {}).get('usual_psi'))}.",
            )
        )
    return blocks


def _fairness(f: dict) -> list[Block]:
    blocks: list[Block] = [
        (
            "p",
            "Listing rate, calibration (O/E) and AUC by gender and age band. At training no "
            "list is drawn, so a group's listing rate is the share of its rows in the top of "
            "their month's scores, the usual depth of a list.",
        )
    ]
    blocks += _group_table(f, "fairness", "fairness_flagged")
    used = set(f.get("spec", {}).get("features", []))
    proxies = []
    if "age" in used or "age_band" in used:
        proxies.append("age is an input of the model, so scores may differ by age band by design")
    if "segment" in used:
        proxies.append(
            "segment is an input, and its 'women' segment stands in for gender: the model can "
            "treat gender groups differently although gender itself is not an input"
        )
    if "gender" in used:
        proxies.append("gender is an input of the model: a reviewer must judge that it is lawful")
    if proxies:
        blocks.append(("ul", [p[0].upper() + p[1:] + "." for p in proxies]))
    return blocks


def _promotion_of(f: dict) -> dict | None:
    """The decision that made this version champion (the latest, if several)."""
    for d in f.get("decisions", []):
        if d.get("outcome") == "promoted" and str(d.get("champion_after")) == str(f["version"]):
            return d
    return None


_AGAINST = {"equivalent": "to", "inconclusive": "against"}  # else "than"


def _decision_sentence(d: dict) -> str:
    m = d.get("metrics", {}) or {}
    window = d.get("window") or []
    where = f" on {window[0]}..{window[-1]}" if window else ""
    rows = f", {_int(m.get('rows'))} rows" if "rows" in m else ""
    head = f"{d.get('outcome', '-')} {d.get('time', '')}{where}{rows}"
    if d.get("verdict"):
        return (
            f"{head}: {d['verdict']} {_AGAINST.get(d['verdict'], 'than')} champion version "
            f"{d.get('champion_before')}, AUC "
            f"{_num(m.get('challenger_auc'))} against {_num(m.get('champion_auc'))}, "
            f"difference {_num(m.get('auc_diff'), '{:+.4f}')} (95% interval "
            f"{_num(m.get('auc_diff_low'), '{:+.4f}')} to {_num(m.get('auc_diff_high'), '{:+.4f}')}"
            f", DeLong p {_num(m.get('auc_diff_p'), '{:.3g}')})."
        )
    if d.get("outcome") == "promoted" and not d.get("champion_before"):
        return (
            f"{head}: the first champion, judged on the absolute gates only (AUC "
            f"{_num(m.get('challenger_auc'))}, ECE {_num(m.get('challenger_ece'), '{:.4f}')})."
        )
    return f"{head}: {d.get('reason', '')}"


def _validation(f: dict) -> list[Block]:
    spec = f.get("spec", {})
    g = spec.get("gates", {})
    auc, excess = _metric(f, "auc"), _metric(f, "ece_excess")

    def ok(passed: bool) -> str:
        return "passes" if passed else "**fails**"

    rows = [
        [
            "minimum AUC",
            _num(g.get("min_auc"), "{}"),
            _num(auc),
            ok(auc >= float(g.get("min_auc", 1))) if math.isfinite(auc) else "-",
        ],
        [
            "calibration error beyond noise at most",
            _num(g.get("max_calibration_error"), "{}"),
            _num(excess, "{:.4f}"),
            ok(excess <= float(g.get("max_calibration_error", 0)))
            if math.isfinite(excess)
            else "-",
        ],
        [
            "against the champion (DeLong, paired)",
            f"margin {_num(g.get('max_auc_drop'), '{}')}",
            "see the decision below",
            "better, equivalent or not worse is promoted",
        ],
    ]
    blocks: list[Block] = [
        (
            "p",
            "The checks below are automated and outside the developer's hands: the registry "
            "loads the registered challenger itself, scores it on the book's latest "
            "out-of-time window, and moves the champion alias only when the spec's gates "
            "pass; against a sitting champion the two are compared on the same rows by "
            "DeLong's paired test. Every decision is an MLflow run in the experiment "
            "`bookpulse-promotions`. They are evidence for the independent validation, not a "
            "substitute for it: the validator's own review and sign-off close this document "
            "(section 11).",
        ),
        Table(["gate (spec)", "threshold", "this run's test window", "result"], rows),
    ]
    promoted = _promotion_of(f)
    blocks.append(("h3", "The promotion of this version"))
    if promoted is None:
        blocks.append(("p", "No promotion of this version is recorded."))
    else:
        pm = promoted.get("metrics", {}) or {}
        blocks.append(("p", _decision_sentence(promoted)))
        stats = [
            ["verdict", promoted.get("verdict") or "- (no champion to compare)"],
            ["challenger AUC", _num(pm.get("challenger_auc"))],
            ["champion AUC", _num(pm.get("champion_auc"))],
            ["AUC difference", _num(pm.get("auc_diff"), "{:+.4f}")],
            [
                "95% interval",
                f"{_num(pm.get('auc_diff_low'), '{:+.4f}')} to "
                f"{_num(pm.get('auc_diff_high'), '{:+.4f}')}",
            ],
            ["z", _num(pm.get("auc_diff_z"), "{:+.2f}")],
            ["p (two-sided)", _num(pm.get("auc_diff_p"), "{:.3g}")],
            [
                "challenger ECE (noise)",
                f"{_num(pm.get('challenger_ece'), '{:.4f}')} "
                f"({_num(pm.get('challenger_ece_noise'), '{:.4f}')})",
            ],
            ["rows compared", _int(pm.get("rows"))],
            ["reason", _oneline(promoted.get("reason", ""))],
        ]
        blocks.append(Table(["", ""], [r for r in stats if r[1] not in ("-", "- to -")]))
    history = f.get("decisions", [])[:8]
    if history:
        blocks.append(("h3", "Recent decisions for this model (newest first)"))
        blocks.append(
            Table(
                ["when", "action", "outcome", "challenger", "champion before", "after", "verdict"],
                [
                    [
                        d.get("time", "") or "-",
                        d.get("action", ""),
                        d.get("outcome", ""),
                        str(d.get("challenger") or "-"),
                        str(d.get("champion_before") or "-"),
                        str(d.get("champion_after") or "-"),
                        d.get("verdict") or "-",
                    ]
                    for d in history
                ],
            )
        )
    return blocks


def _limitations(f: dict) -> list[Block]:
    tags = f.get("run_tags", {})
    mon = f.get("monitoring", {}).get("drift", {})
    out = []
    if "synthetic" in str(tags.get("book_generator", "")):
        out.append(
            "Developed and validated on a synthetic book (bookpulse's simulator): the figures "
            "show the method works, not how the model does on a bank's customers; validate "
            "on the bank's own book before use."
        )
    rows, events = _test_counts(f)
    if math.isfinite(events) and events < 200:
        out.append(
            f"The test window holds only {_int(events)} events: the AUC's standard error is "
            f"{_num(_auc_se(_metric(f, 'auc'), events, rows - events))} and small groups' "
            "figures are noisy."
        )
    gap = _metric(f, "gap_to_ceiling")
    if math.isfinite(gap) and gap > 0.02:
        out.append(f"The model trails the simulator's true probabilities by {gap:.3f} AUC.")
    if _metric(f, "ece_excess") > _metric(f, "ece_noise"):  # ECE above twice its noise
        out.append(
            f"Calibration error {_metric(f, 'ece'):.4f} is more than twice its sampling noise "
            f"({_metric(f, 'ece_noise'):.4f}): the probabilities are off in places."
        )
    psi = _metric(f, "psi_train_test")
    if math.isfinite(psi) and psi >= mon.get("watch", 0.10):
        out.append(
            f"The score distribution moved between training and test (PSI {psi:.3f}): the "
            "population is changing under the model."
        )
    lo, hi = _metric(f, "auc_month_min"), _metric(f, "auc_month_max")
    if math.isfinite(lo) and math.isfinite(hi) and hi - lo > 0.03:
        out.append(f"AUC varies from {lo:.3f} to {hi:.3f} across test months.")
    seen = set()
    for key in ("slices", "fairness"):
        rows_ = f.get(key)
        if rows_ is None:
            out.append(f"No {key} table: {NOT_LOGGED}; weak spots by group are unassessed.")
        else:
            for r in rows_:
                group = (r.get("dimension"), r.get("group"), _oneline(r.get("note") or ""))
                if _flag(r.get("flag")) and group not in seen:
                    seen.add(group)
                    out.append(
                        f"Flagged {key[:-1] if key == 'slices' else 'fairness group'} "
                        f"{r.get('dimension')}={r.get('group')}: {_oneline(r.get('note') or '')}."
                    )
    out += [
        "Scores rank customers within a month-end snapshot; they are associations, not causal "
        "effects of any action.",
        "Probabilities are calibrated on the calibration window: campaigns that change "
        "behaviour (the lists themselves) and shocks (a rate cut) change the base rate.",
        "Drift checks on scores and features cannot see a change in how features relate to "
        "the outcome (concept drift): a shock can leave the score PSI near zero while the "
        "model's probabilities go wrong. Only outcome reads (early and realised) see it.",
        "Features depend on the bank's feeds: a feed that breaks shows as missing values, "
        "which the model treats as a level of its own.",
    ]
    return [("ul", out)]


def _monitoring(f: dict) -> list[Block]:
    mon = f.get("monitoring", {})
    d, r, early = mon.get("drift", {}), mon.get("realised", {}), mon.get("early")
    spec = f.get("spec", {})
    t = spec.get("target", {})
    horizon = _horizon(t, "-month", "-day")
    auc = _metric(f, "auc")
    usual = _metric(f, "oe_month_max_dev")
    band = max(r.get("oe_band", 0.2), usual if math.isfinite(usual) else 0.0)
    score_ref = (f.get("reference") or {}).get("score") or {}
    rows = [
        [
            "monthly, `bookpulse monitor`",
            "score PSI against the test window's profile",
            f"watch {d.get('watch')}, act {d.get('act')}; counts only above the larger of its "
            f"{d.get('level', 0.999):.1%} sampling bound and the usual PSI "
            f"({_num(score_ref.get('usual_psi'))} for this score)",
        ],
        [
            "monthly, `bookpulse monitor`",
            f"PSI of the top {d.get('top_features')} features by gain",
            f"watch {d.get('watch')}, act {d.get('act')}; each above its own usual PSI "
            "(section 3) and sampling bound",
        ],
        [
            "monthly, `bookpulse monitor`",
            "missing rate of every feature",
            f"a change of {d.get('missing_watch', 0):.0%} watch, {d.get('missing_act', 0):.0%} "
            "act, beyond sampling noise and the usual movement",
        ],
        [
            "monthly, `bookpulse monitor`",
            "rows scored against the test window's average month",
            f"{d.get('volume_watch')}x (or 1/{d.get('volume_watch')}) watch, "
            f"{d.get('volume_act')}x (or 1/{d.get('volume_act')}) act, outside the test "
            "months' own range",
        ],
    ]
    if early:
        e_band = max(early.get("oe_band", 0.2), usual if math.isfinite(usual) else 0.0)
        rows += [
            [
                "monthly, `bookpulse monitor`",
                f"early outcome read: events so far in each scored month whose {horizon} "
                "window is still open, against what the calibrated probabilities expect for "
                "the time elapsed (the timing of events measured on the book's last "
                f"{early.get('timing_windows')} closed windows)",
                f"more (fewer) than expected when |z| >= {early.get('oe_z')} and O/E is "
                f"outside 1 +/- {e_band:.0%} (as the review)",
            ],
            [
                "monthly, `bookpulse monitor`",
                "expected performance without labels (CBPE): the AUC and event rate the "
                "month's calibrated scores expect",
                "below promise when the expected AUC is under "
                f"{_num(auc - early.get('auc_drop', 0.05))} (the test AUC less "
                f"{early.get('auc_drop')}); {early.get('cbpe_note', '')}",
            ],
        ]
    rows += [
        [
            f"when the {horizon} outcome window closes, `bookpulse review`",
            "realised AUC",
            f"off promise below {_num(auc - r.get('auc_drop', 0.05))} (the test AUC "
            f"{_num(auc)} less {r.get('auc_drop')}), and more than 3 standard errors under "
            "it",
        ],
        [
            f"when the {horizon} outcome window closes, `bookpulse review`",
            "observed / expected events",
            f"off promise outside 1 +/- {band:.0%} (the larger of {r.get('oe_band', 0):.0%} and "
            f"the largest test-month departure) and |z| >= {r.get('oe_z')}",
        ],
    ]
    sl = mon.get("slices")
    if sl:
        low, high = sl.get("listing_band", (0.8, 1.25))
        rows.append(
            [
                f"when the {horizon} outcome window closes, `bookpulse review`",
                "weak spots (by tier, age band, segment and region) and fairness (by gender and "
                "age band, with the list's listing rate)",
                f"a group flagged when its O/E is off 1 by more than {sl.get('oe_band', 0):.0%} "
                "(fairness: off the book's own O/E), its AUC "
                f"{sl.get('auc_drop')} under the book's, or its listing rate outside "
                f"{low}-{high}x the rest's, each beyond chance (Benjamini-Hochberg at "
                f"{sl.get('family_alpha', 0.05):.0%} over the table's tests)",
            ]
        )
    blocks: list[Block] = [
        (
            "p",
            "Every month the champion's drift is judged against the reference profile logged "
            "with this run (its out-of-time test window); once a scored month's outcome window "
            "closes, its realised outcomes are judged against this document's figures. Each "
            "monitor and review is an MLflow run in `bookpulse-monitoring` with an HTML report.",
        ),
        Table(["when", "what", "threshold for this model"], rows),
    ]
    blocks.append(
        (
            "p",
            "The early read sees a change in the level of outcomes (a shock) within a "
            "month or two, long before the review; the label-free estimate sees only a "
            "change in who is in the book, never a change in how features relate to the "
            "outcome.",
        )
    )
    blocks.append(
        (
            "ul",
            [
                "Response to a watch: the model owner looks into it within the month and "
                "notes the cause.",
                "Response to an act: the owner retrains (`bookpulse train`, then `bookpulse "
                "promote`: the gates and DeLong's test apply again) or rolls back (`bookpulse "
                "rollback`), and tells the model-risk team.",
                "Off promise at review: as act; two consecutive months off promise call for "
                "a revalidation of this document.",
                "Revalidation at least yearly, and whenever the spec (its hash above) changes.",
            ],
        )
    )
    return blocks


def _evidence(f: dict) -> list[Block]:
    arts = f.get("artifacts", [])
    items = [
        f"Training run `{f['run_id']}` (experiment `{f.get('experiment', '-')}`), trained "
        f"{f.get('trained_at', '-')} by {f.get('trained_by', '-')}.",
        f"Registered model `{f['registered_name']}` version {f['version']}; version tags: "
        + (", ".join(f"`{k}={v}`" for k, v in sorted(f.get("version_tags", {}).items())) or "none")
        + ".",
    ]
    if arts:
        items.append("Run artifacts: " + ", ".join(f"`{a}`" for a in arts) + ".")
    return [
        ("ul", items),
        ("h3", "Sign-off"),
        Table(
            ["role", "name", "date", "decision"],
            [
                ["model owner", "", "", ""],
                ["independent validator", "", "", "approve / approve with conditions / reject"],
                ["model-risk committee", "", "", ""],
            ],
        ),
    ]


def document(facts: dict) -> tuple[str, list[Block]]:
    """The title and the blocks of the document, in order."""
    title = (
        f"Model-risk document: {facts['model']} "
        f"({facts['registered_name']} version {facts['version']})"
    )
    parts = [
        _summary,
        _purpose,
        _data,
        _features,
        _performance,
        _calibration,
        _stability,
        _fairness,
        _validation,
        _limitations,
        _monitoring,
        _evidence,
    ]
    blocks: list[Block] = []
    for heading, part in zip(SECTIONS, parts, strict=True):
        blocks.append(("h2", heading))
        blocks += part(facts)
    return title, blocks


# --- Markdown ----------------------------------------------------------------------------------


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(facts: dict) -> str:
    title, blocks = document(facts)
    out = [f"# {title}", ""]
    for b in blocks:
        if isinstance(b, Table):
            out.append("| " + " | ".join(_md_cell(h) for h in b.header) + " |")
            out.append("|" + "---|" * len(b.header))
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
        elif isinstance(b, Figure):
            present = b.name in facts.get("plots", {}) or (
                f"validation/plots/{b.name}.png" in facts.get("artifacts", [])
            )
            where = (
                f"run artifact `validation/plots/{b.name}.png`"
                if present
                else f"`validation/plots/{b.name}.png` {NOT_LOGGED}"
            )
            out.append(f"*Figure: {b.caption} ({where}).*")
        elif b[0] in ("h2", "h3"):
            out.append(("## " if b[0] == "h2" else "### ") + b[1])
        elif b[0] == "p":
            out.append(b[1])
        elif b[0] == "ul":
            out += [f"- {item}" for item in b[1]]
        out.append("")
    return "\n".join(out).rstrip() + "\n"


# --- HTML --------------------------------------------------------------------------------------

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222;
       line-height: 1.45; }
h1 { font-size: 1.6em; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .6em 0 1.2em; font-size: .85em; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
tr.flagged td { background: #fdecea; } .flag { color: #c62828; font-weight: 700; }
code { background: #f4f4f4; padding: 0 .2em; font-size: .92em; }
figure { margin: 1em 0; } figcaption { color: #555; font-size: .9em; }
img { max-width: 100%; } .missing { color: #c62828; }
@media print { body { max-width: none; } figure, table { break-inside: avoid; } }
"""


def _inline(text: str) -> str:
    """Escape, then `code` and **bold**, the only inline marks the document uses."""
    out = html.escape(str(text), quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def to_html(facts: dict) -> str:
    title, blocks = document(facts)
    plots = facts.get("plots", {})
    toc = "".join(
        f'<li><a href="#{_slug(b[1])}">{html.escape(b[1])}</a></li>'
        for b in blocks
        if isinstance(b, tuple) and b[0] == "h2"
    )
    body = [f"<nav><ul>{toc}</ul></nav>"]
    for b in blocks:
        if isinstance(b, Table):
            head = "".join(f"<th>{_inline(h)}</th>" for h in b.header)
            rows = []
            for i, row in enumerate(b.rows):
                flagged = i < len(b.flagged) and b.flagged[i]
                cells = "".join(
                    '<td class="flag">flagged</td>'
                    if c == "**FLAGGED**"
                    else f"<td>{_inline(c)}</td>"
                    for c in row
                )
                rows.append(f'<tr class="flagged">{cells}</tr>' if flagged else f"<tr>{cells}</tr>")
            thead = f"<thead><tr>{head}</tr></thead>" if any(b.header) else ""
            body.append(f"<table>{thead}<tbody>{''.join(rows)}</tbody></table>")
        elif isinstance(b, Figure):
            png = plots.get(b.name)
            if png:
                data = base64.b64encode(png).decode()
                body.append(
                    f'<figure><img alt="{html.escape(b.caption)}" '
                    f'src="data:image/png;base64,{data}"><figcaption>'
                    f"{html.escape(b.caption)} (<code>validation/plots/{b.name}.png</code>)"
                    "</figcaption></figure>"
                )
            else:
                body.append(
                    f'<p class="missing">Figure: {html.escape(b.caption)}: '
                    f"<code>validation/plots/{b.name}.png</code> {NOT_LOGGED}.</p>"
                )
        elif b[0] in ("h2", "h3"):
            body.append(f'<{b[0]} id="{_slug(b[1])}">{html.escape(b[1])}</{b[0]}>')
        elif b[0] == "p":
            body.append(f"<p>{_inline(b[1])}</p>")
        elif b[0] == "ul":
            body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b[1]) + "</ul>")
    return (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{''.join(body)}</body></html>\n"
    )
