"""Publishing a folder (a scored month, a book): the path always holds the previous version or
the new one, never nothing, never half; what killed runs left is cleaned by the next run; runs
into one place take turns (on a lock of the folder itself: nothing is left beside the month)."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from bookpulse.book import io


def _publish(target: Path, text: str) -> None:
    with io.publishing(target, replace=True) as tmp:
        (tmp / "a.txt").write_text(text)
        (tmp / "b.txt").write_text(text)


def _siblings(target: Path) -> list[str]:
    return sorted(p.name for p in target.parent.iterdir())


class Killed(BaseException):
    """Stands for the process dying at that point."""


def test_a_run_killed_right_after_the_swap_leaves_the_new_version(tmp_path, monkeypatch):
    target = tmp_path / "2026-10"
    _publish(target, "old")
    real_rmtree = shutil.rmtree

    def dies(path, *a, **k):
        raise Killed  # killed before it could remove the previous version

    monkeypatch.setattr(io.shutil, "rmtree", dies)
    with pytest.raises(Killed):
        _publish(target, "new")
    monkeypatch.setattr(io.shutil, "rmtree", real_rmtree)
    assert (target / "a.txt").read_text() == "new"
    debris = [n for n in _siblings(target) if n != "2026-10"]
    assert debris and all(n.startswith(".2026-10.tmp-") for n in debris)
    _publish(target, "next")  # the next run cleans up
    assert _siblings(target) == ["2026-10"] and (target / "b.txt").read_text() == "next"


def test_a_run_killed_between_two_renames_is_repaired_by_the_next(tmp_path, monkeypatch):
    """Where the system cannot exchange two names in one step, the swap takes two renames; a
    run cut between them strands the previous version, and the next run puts it back first,
    even if that run itself then fails."""
    target = tmp_path / "2026-10"
    _publish(target, "old")
    monkeypatch.setattr(io, "_exchange", lambda a, b: False)
    real_replace = io.os.replace

    def second_rename_dies(src, dst):
        if Path(src).name.startswith(".2026-10.tmp-"):
            raise Killed
        real_replace(src, dst)

    monkeypatch.setattr(io.os, "replace", second_rename_dies)
    with pytest.raises(Killed):
        _publish(target, "new")
    monkeypatch.setattr(io.os, "replace", real_replace)
    assert not target.exists()  # the gap this fallback has
    with pytest.raises(RuntimeError), io.publishing(target, replace=True):
        raise RuntimeError("this run fails too")
    assert (target / "a.txt").read_text() == "old"
    assert _siblings(target) == ["2026-10"]


def test_the_swap_is_one_exchange_where_the_system_has_it(tmp_path, monkeypatch):
    target = tmp_path / "m"
    _publish(target, "old")
    calls = []
    real = io._exchange

    def spy(a, b):
        calls.append((Path(a).name, Path(b).name))
        return real(a, b)

    monkeypatch.setattr(io, "_exchange", spy)
    _publish(target, "new")
    assert len(calls) == 1 and calls[0][1] == "m"
    assert (target / "a.txt").read_text() == "new" and _siblings(target) == ["m"]


def test_runs_into_one_place_take_turns(tmp_path):
    target = tmp_path / "month"
    errors = []

    def worker(name: str) -> None:
        try:
            for i in range(25):
                _publish(target, f"{name}-{i}")
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in ("x", "y", "z")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert (target / "a.txt").read_text() == (target / "b.txt").read_text()  # one run's whole
    assert _siblings(target) == ["month"]


def test_a_run_that_must_wait_for_another_says_so(tmp_path, capsys):
    target = tmp_path / "month"
    target.parent.mkdir(exist_ok=True)
    inside, release = threading.Event(), threading.Event()

    def first() -> None:
        with io.publishing(target) as tmp:
            (tmp / "a.txt").write_text("first")
            inside.set()
            release.wait(10)

    t = threading.Thread(target=first)
    t.start()
    inside.wait(10)
    assert capsys.readouterr().err == ""
    waiting = threading.Thread(target=_publish, args=(target, "second"))
    waiting.start()
    for _ in range(200):  # the second run says it waits, and does not go on
        if "waiting for it to finish" in capsys.readouterr().err:
            break
        threading.Event().wait(0.05)
    else:
        raise AssertionError("the waiting run said nothing")
    assert not (target / "a.txt").exists()
    release.set()
    t.join()
    waiting.join()
    assert (target / "a.txt").read_text() == "second"
