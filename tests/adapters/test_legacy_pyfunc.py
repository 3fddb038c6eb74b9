"""Models registered before the package was layered keep loading.

`tests/fixtures/pyfunc_v0` was saved by the code as it stood before the layering (the same
`CalibratedProbability` and `scoring_model.json` that `bookpulse train` logs); its pickle names
the class at its old path, `bookpulse.training.tracking.CalibratedProbability`."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

FIXTURES = Path(__file__).parents[1] / "fixtures"


def test_the_fixture_names_the_old_import_path() -> None:
    pickled = (FIXTURES / "pyfunc_v0" / "python_model.pkl").read_bytes()
    assert b"bookpulse.training.tracking" in pickled
    assert b"bookpulse.adapters" not in pickled


def test_a_pyfunc_registered_before_the_layering_loads_and_predicts_the_same() -> None:
    model = mlflow.pyfunc.load_model(str(FIXTURES / "pyfunc_v0"))
    probe = pd.read_csv(FIXTURES / "pyfunc_v0_probe.csv")
    want = pd.read_csv(FIXTURES / "pyfunc_v0_expected.csv")["probability"].to_numpy()
    got = model.predict(probe)["probability"].to_numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


def test_its_scoring_model_reads_with_todays_code() -> None:
    """What `bookpulse score` and the API load of a registered version: the JSON artifact."""
    from bookpulse.adapters.tracking import MODEL_FILE
    from bookpulse.model.fit import ScoringModel

    text = (FIXTURES / "pyfunc_v0" / "artifacts" / MODEL_FILE).read_text()
    model = ScoringModel.from_json(text, threads=1)
    probe = pd.read_csv(FIXTURES / "pyfunc_v0_probe.csv")
    want = pd.read_csv(FIXTURES / "pyfunc_v0_expected.csv")["probability"].to_numpy()
    np.testing.assert_allclose(model.predict(probe), want, rtol=1e-12, atol=1e-15)
