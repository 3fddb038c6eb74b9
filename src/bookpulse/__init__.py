"""bookpulse: scores a retail bank's customer book (churn, tier upgrade, card activation)."""

import warnings

__version__ = "0.1.0"

# pandera imports PySpark's pandas API when PySpark is installed, and PySpark 4.3 warns that
# it has not caught up with pandas 3; bookpulse passes PySpark plain columns (scoring/spark.py).
warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas")
