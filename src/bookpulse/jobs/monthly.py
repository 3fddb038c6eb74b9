"""`bookpulse monthly`: the one command a scheduler runs each month.

It scores the month (the champions of every model, lists, online store), monitors it, and
reviews every scored month whose outcome windows have just closed (for a model of horizon h
months, the month h months before; for a card model counted in days, the month before).
It is idempotent: a month done with the same champions is not done again (its record under
`$BOOKPULSE_HOME/monthly/` answers, with the same exit code), and a month reviewed once is not
reviewed again.

Exit codes (`EXIT_*`): 0 done and calm; 3 done, but a monitor verdict is "act", an early
outcome read of a month whose window is still open finds more or fewer events than its scores
expect (beyond noise and band: the warning the review would give months later), or a review
finds a model off its promise: someone should look; 2 refused or failed (the CLI's code for
every error), with the message saying why.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bookpulse.adapters import tracking
from bookpulse.adapters.champions import available_champions
from bookpulse.adapters.publish import MANIFEST_FILE, default_out
from bookpulse.book import io
from bookpulse.config import get_settings
from bookpulse.errors import MonitorError
from bookpulse.jobs.monitor import MonitorRequest, monitor
from bookpulse.jobs.review import ReviewRequest, review
from bookpulse.jobs.score import ScoreRequest, latest_month, score
from bookpulse.specs import load_model_specs

EXIT_CALM, EXIT_ERROR, EXIT_ACTION = 0, 2, 3
STATE_FILE = "state.json"


@dataclass(frozen=True)
class MonthlyRequest:
    """One month's run. `None`: the home's book, the book's latest month."""

    home: Path
    as_of: str | None = None
    book: Path | None = None


@dataclass
class MonthlyResult:
    month: str
    champions: dict[str, str]  # registered name -> version used
    monitor: dict[str, str] = field(default_factory=dict)  # model -> verdict
    early: dict[str, str] = field(default_factory=dict)  # "model scored T" -> early verdict
    reviews: dict[str, dict[str, str]] = field(default_factory=dict)  # month -> model -> verdict
    notes: list[str] = field(default_factory=list)
    already_done: bool = False

    @property
    def needs_action(self) -> list[str]:
        """What asks a person to look: monitor verdicts "act", early reads more or fewer
        than expected, reviews "off promise"."""
        out = [
            f"{m}: drift in {self.month} says act" for m, v in self.monitor.items() if v == "act"
        ]
        out += [
            f"{read}: {v} in {self.month} (early read)"
            for read, v in self.early.items()
            if v != "as expected"
        ]
        for month, verdicts in self.reviews.items():
            out += [
                f"{m}: off its promise on {month}"
                for m, v in verdicts.items()
                if v == "off promise"
            ]
        return out

    @property
    def exit_code(self) -> int:
        return EXIT_ACTION if self.needs_action else EXIT_CALM


def _state_path(home: Path) -> Path:
    return Path(home) / "monthly" / STATE_FILE


def _read_state(home: Path) -> dict:
    path = _state_path(home)
    return json.loads(path.read_text()) if path.is_file() else {"done": {}, "reviewed": {}}


def _write_state(home: Path, state: dict) -> None:
    path = _state_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def just_closed(month: str, months: list[str]) -> list[str]:
    """The months whose outcome windows close with `month`: h months before it for each
    model's horizon h (a horizon in days closes within the month after)."""
    i = months.index(month)
    back = set()
    for spec in load_model_specs().values():
        t = spec.target
        back.add(int(t.horizon_months) if t.horizon_months else -(-int(t.horizon_days) // 31))
    return sorted(months[i - k] for k in back if i - k >= 0)


def monthly(
    request: MonthlyRequest, progress: Callable[[str], None] | None = None
) -> MonthlyResult:
    """Score, monitor and review as the module docstring says; return what was done."""
    home = Path(request.home)
    book = request.book or get_settings().book_dir
    month = io.month_key(request.as_of) if request.as_of else latest_month(book)
    tracking.configure(home)
    champions, _ = available_champions(list(load_model_specs().values()))
    used = {c.spec.registered_name: c.version for c in champions.values()}
    used |= {u.spec.registered_name: u.version for c in champions.values() for u in c.uplifts}
    state = _read_state(home)
    done = state["done"].get(month)
    if done and done["champions"] == used and (default_out(home, month) / MANIFEST_FILE).is_file():
        result = MonthlyResult(**{**done, "already_done": True})
        result.notes.append(f"{month} was done with these champions already: nothing to do")
        return result
    result = MonthlyResult(month, used)
    say = progress or (lambda _: None)
    say(f"scoring {month}")
    scored = score(ScoreRequest(home, book, month))
    result.notes += [f"{k}: {v}" for k, v in scored.not_scored.items()]
    say(f"monitoring {month}")
    monitored = monitor(MonitorRequest(home, book, month))
    result.monitor = {name: d.verdict for name, d in monitored.drifts.items()}
    result.early = {f"{r.model} scored {r.scored}": r.verdict for r in monitored.early}
    months = io.read_meta(book)["months"]
    for past in just_closed(month, months):
        if past == month or past in state["reviewed"]:
            continue
        if not (default_out(home, past) / MANIFEST_FILE).is_file():
            result.notes.append(f"{past} not reviewed: it was not scored")
            continue
        say(f"reviewing {past}")
        try:
            reviewed = review(ReviewRequest(home, past, book))
        except MonitorError as exc:  # nothing reviewable yet (in-sample, or windows open)
            result.notes.append(f"{past} not reviewed: {exc}")
            continue
        result.reviews[past] = {name: r.verdict for name, r in reviewed.results.items()}
        state["reviewed"][past] = {"by": month, "verdicts": result.reviews[past]}
    record = asdict(result)
    record.pop("already_done")
    state["done"][month] = record
    _write_state(home, state)
    return result
