"""The schema of a feature frame, built from the declared catalog (features/*.yaml)."""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa

from bookpulse.errors import BookpulseError
from bookpulse.specs import Entity, FeatureCatalog

KEY_COLUMNS: dict[Entity, dict[str, str]] = {
    "customer": {"customer_id": "int64", "as_of": "datetime64[ns]"},
    "card": {"card_id": "int64", "as_of": "datetime64[ns]", "customer_id": "int64"},
}


class FeatureSchemaError(BookpulseError):
    """A feature frame that does not match its declared schema."""


def feature_schema(catalog: FeatureCatalog, entity: Entity) -> pa.DataFrameSchema:
    columns: dict[str, pa.Column] = {
        name: pa.Column(pa.DateTime if name == "as_of" else dtype, nullable=False)
        for name, dtype in KEY_COLUMNS[entity].items()
    }
    for name, f in catalog.for_entity(entity).items():
        dtype = pd.CategoricalDtype() if f.dtype == "category" else f.dtype
        columns[name] = pa.Column(dtype, nullable=True, coerce=False, description=f.description)
    key = [k for k in KEY_COLUMNS[entity] if k != "customer_id" or entity == "customer"]
    return pa.DataFrameSchema(columns, strict=True, unique=key, name=f"{entity} features")


def validate_features(df: pd.DataFrame, catalog: FeatureCatalog, entity: Entity) -> None:
    """Raise FeatureSchemaError listing every column that breaks the declared schema."""
    try:
        feature_schema(catalog, entity).validate(df, lazy=True)
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
        lines = [f"{entity} feature frame does not match features/*.yaml:"]
        for (column, check), group in cases.groupby(["column", "check"], dropna=False, sort=False):
            sample = ", ".join(str(v) for v in group["failure_case"].head(3))
            lines.append(f"  {column}: {check} (e.g. {sample})")
        raise FeatureSchemaError("\n".join(lines)) from None
