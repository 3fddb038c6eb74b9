"""Bad input to `bookpulse score` is refused before any work, in one clear message, with
nothing published or overwritten. The home has no model at all: a refusal that came after the
models were loaded would say "no champion" instead (so the order is proven too)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from bookpulse.adapters.publish import Manifest, default_out
from bookpulse.book import io
from bookpulse.errors import BookpulseError, ScoringError
from bookpulse.jobs.score import ScoreRequest, score, score_month


@pytest.fixture()
def home(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("BOOKPULSE_ONLINE_STORE", raising=False)
    monkeypatch.setenv("BOOKPULSE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _nothing_published(home: Path) -> None:
    assert not (home / "scores").exists()
    assert not (home / "online").exists() or not any((home / "online").iterdir())


def test_a_month_with_short_history_is_refused_naming_the_earliest(home, trainable_book):
    months = io.read_meta(trainable_book)["months"]
    with pytest.raises(ScoringError) as err:
        score(ScoreRequest(home, trainable_book, months[5]))
    assert f"the earliest month of this book that can be scored is {months[12]}" in str(err.value)
    assert "6 month-end(s) of history" in str(err.value) and "--allow-short-history" in str(
        err.value
    )
    _nothing_published(home)
    # the 13th month-end has the whole window: it passes the checks (and then finds no model)
    with pytest.raises(BookpulseError, match="no champion"):
        score(ScoreRequest(home, trainable_book, months[12]))


def test_short_history_when_allowed_is_marked_in_the_manifest(
    tmp_path, trainable_book, champions, catalogs, playbook
):
    months = io.read_meta(trainable_book)["months"]
    out = tmp_path / "early"
    with pytest.raises(ScoringError, match="--allow-short-history"):
        score_month(trainable_book, months[8], champions, catalogs, playbook, out)
    assert not out.exists()
    m = score_month(
        trainable_book, months[8], champions, catalogs, playbook, out, allow_short_history=True
    )
    assert m.short_history and Manifest.read(out).short_history
    full = score_month(trainable_book, months[-2], champions, catalogs, playbook, tmp_path / "x")
    assert not full.short_history


def test_an_output_path_that_cannot_be_a_folder_is_refused(home, trainable_book, tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("keep me")
    for out, says in ((a_file, "is a file"), (a_file / "month", "is a file, not a folder")):
        with pytest.raises(BookpulseError, match=says):
            score(ScoreRequest(home, trainable_book, out=out))
    assert a_file.read_text() == "keep me"
    _nothing_published(home)


def test_an_online_store_path_that_is_a_file_is_refused_before_work(home, trainable_book):
    home.mkdir(parents=True)
    (home / "online").write_text("not a folder")
    with pytest.raises(BookpulseError, match="online store's folder .* is a file"):
        score(ScoreRequest(home, trainable_book))
    assert (home / "online").read_text() == "not a folder"
    assert not default_out(home, io.read_meta(trainable_book)["months"][-1]).exists()


def test_an_unreachable_tracking_server_is_named_at_once(home, trainable_book, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(BookpulseError, match=f"tracking server at {uri} does not answer"):
        score(ScoreRequest(home, trainable_book))
    _nothing_published(home)


def test_a_month_not_in_the_book_is_refused_before_the_models(home, trainable_book):
    with pytest.raises(ScoringError, match="2031-01 is not a month of the book"):
        score(ScoreRequest(home, trainable_book, "2031-01"))
    _nothing_published(home)
