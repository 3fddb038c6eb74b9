"""The one base of every error bookpulse raises on purpose. Its message says what is wrong and
what to do; the CLI prints it (no traceback) and exits 2."""

from __future__ import annotations


class BookpulseError(Exception):
    """A request bookpulse cannot carry out; the message says what to do instead."""


class ScoringError(BookpulseError):
    """The month cannot be scored; the message says what is wrong and what to do."""


class MonitorError(BookpulseError):
    """The month cannot be monitored or reviewed; the message says what to do."""
