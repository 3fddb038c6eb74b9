"""Old import path of the registered pyfunc class (models registered before the layering)."""

from bookpulse.adapters.tracking import CalibratedProbability

__all__ = ["CalibratedProbability"]
