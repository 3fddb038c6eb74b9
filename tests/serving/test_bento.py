"""The built bento, served: `bentoml build` from the project root (no container, nothing
downloaded) into a BentoML home of its own, then `bentoml serve <tag>` from a folder outside the
repository, so only the bento's own copy of the code and the specs can answer."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from served_helpers import BENTOML, assert_scores_by_id_equal_the_batch, bentoml_serve, served_env

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Built:
    tag: str
    bentoml_home: Path
    path: Path  # the bento's folder in that home

    @property
    def service_bytecode(self) -> list[Path]:
        return list((self.path / "src/bookpulse/serving/__pycache__").glob("service.*.pyc"))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    home = tmp_path_factory.mktemp("bentoml")
    env = dict(os.environ, BENTOML_HOME=str(home), BENTOML_DO_NOT_TRACK="true")
    done = subprocess.run(
        [BENTOML, "build", "--output", "tag"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    tags = [x for x in done.stdout.splitlines() if x.startswith("__tag__:")]
    assert len(tags) == 1, done.stdout[-2000:]
    tag = tags[0].removeprefix("__tag__:")
    name, version = tag.split(":")
    return Built(tag=tag, bentoml_home=home, path=home / "bentos" / name / version)


@pytest.fixture(scope="module")
def served_bento(built: Built, served_home: Path, tmp_path_factory: pytest.TempPathFactory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    assert not built.service_bytecode  # the bento ships sources only
    env = served_env(served_home, built.bentoml_home)
    with bentoml_serve(built.tag, env, elsewhere / "serve.log", cwd=elsewhere) as url:
        yield url


def test_the_bento_carries_the_code_and_the_specs(built: Built, tmp_path, monkeypatch) -> None:
    src = built.path / "src"
    assert {p.name for p in src.iterdir()} == {
        "bookpulse",
        "features",
        "models",
        "bentofile.yaml",
        "pyproject.toml",
        "README.md",
    }
    assert (src / "bookpulse/serving/service.py").is_file()
    for folder in ("features", "models"):
        shipped = sorted(p.name for p in (src / folder).glob("*.yaml"))
        assert shipped and shipped == sorted(p.name for p in (ROOT / folder).glob("*.yaml"))
    # the bento's bookpulse.config finds the specs in the bento, wherever it is started from
    monkeypatch.delenv("BOOKPULSE_SPECS_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    spec = importlib.util.spec_from_file_location("bento_config", src / "bookpulse/config.py")
    config = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bento_config", config)  # for pydantic's annotations
    spec.loader.exec_module(config)
    assert config.Settings().specs_root == src


def test_the_served_bento_answers_like_the_batch(
    served_bento: str, built: Built, served_home: Path
) -> None:
    assert_scores_by_id_equal_the_batch(served_bento, served_home)
    # the code that answered is the bento's copy: importing it wrote its bytecode there
    assert built.service_bytecode
