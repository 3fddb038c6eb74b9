"""bookpulse: scores a retail bank's customer book (churn, tier upgrade, card activation)."""

__version__ = "0.1.0"
