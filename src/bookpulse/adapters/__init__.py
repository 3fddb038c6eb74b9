"""The edges: MLflow tracking and registry, the online stores, month publishing and its
manifest, HTML reports."""
