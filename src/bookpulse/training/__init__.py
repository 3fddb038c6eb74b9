"""Kept for models registered before the package was layered: their pickled pyfunc names
`bookpulse.training.tracking.CalibratedProbability`. Nothing in bookpulse imports this package."""
