"""Files and online store agree, or `bookpulse status` says how they do not: a run killed
between publishing the month's files and its online store leaves the manifest saying so, the
API on the previous month, and a re-run completes it."""

from __future__ import annotations

from pathlib import Path

import pytest

from bookpulse.adapters import store as store_module
from bookpulse.adapters.publish import Manifest
from bookpulse.adapters.store import SqliteStore
from bookpulse.book import io
from bookpulse.jobs.score import score_month
from bookpulse.jobs.status import status


class Killed(BaseException):
    """Stands for the process dying at that point."""


def test_a_run_killed_before_the_online_store_is_seen_and_completed_by_a_rerun(
    tmp_path, trainable_book, champions, catalogs, playbook, monkeypatch
):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("BOOKPULSE_ONLINE_STORE", raising=False)
    home = tmp_path / "home"
    store = SqliteStore(home / "online" / "features.sqlite")
    months = io.read_meta(trainable_book)["months"]
    earlier, later = months[-3], months[-2]

    def run(month: str) -> Manifest:
        out = home / "scores" / month
        return score_month(trainable_book, month, champions, catalogs, playbook, out, online=store)

    assert run(earlier).online_store == "published"
    st = status(home)
    assert st.serving == earlier and st.warnings == []

    def dies(self, distributions, models=None):
        raise Killed

    with monkeypatch.context() as m:  # killed after the files are out, before the store is
        m.setattr(store_module._Month, "commit", dies)
        with pytest.raises(Killed):
            run(later)
    assert Manifest.read(home / "scores" / later).online_store == "pending"
    st = status(home)
    assert st.serving == earlier  # the API kept the month it had, whole
    assert [p.month for p in st.published] == [later, earlier]
    assert any(f"{later}: its files are published but its online-store" in w for w in st.warnings)
    assert any(f"the API serves {earlier}" in w for w in st.warnings)

    assert run(later).online_store == "published"  # the re-run completes it
    st = status(home)
    assert st.serving == later and st.warnings == []


def test_a_month_scored_without_the_store_says_why(
    tmp_path, trainable_book, champions, catalogs, playbook
):
    month = io.read_meta(trainable_book)["months"][-2]
    out: Path = tmp_path / month
    note = "online store left on 2031-01 (newer)"
    m = score_month(trainable_book, month, champions, catalogs, playbook, out, online_note=note)
    assert m.online_store == note == Manifest.read(out).online_store
