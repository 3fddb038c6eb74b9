"""`bookpulse status`: which month the API serves, which months are published and with which
model versions, and what does not agree (a month whose online-store publish did not finish, a
newer scored month the API does not serve, champions newer than the served month's models)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from bookpulse.adapters import tracking
from bookpulse.adapters.publish import MANIFEST_FILE, Manifest
from bookpulse.adapters.store import open_store
from bookpulse.config import get_settings
from bookpulse.errors import BookpulseError
from bookpulse.specs import load_model_specs


@dataclass(frozen=True)
class Published:
    month: str
    folder: Path
    manifest: Manifest


@dataclass
class Status:
    serving: str | None  # the month the online store (the API) holds
    published: list[Published]  # newest first
    champions: dict[str, str | None]  # model -> champion version (None: none yet)
    warnings: list[str] = field(default_factory=list)


def published_months(home: Path) -> list[Published]:
    """Every month published under $BOOKPULSE_HOME/scores, newest first (a folder whose
    manifest cannot be read is named in a warning by `status`, not here)."""
    found = []
    for folder in sorted((Path(home) / "scores").glob("[0-9][0-9][0-9][0-9]-[0-9][0-9]")):
        if (folder / MANIFEST_FILE).is_file():
            found.append(Published(folder.name, folder, Manifest.read(folder)))
    return sorted(found, key=lambda p: p.month, reverse=True)


def status(home: Path) -> Status:
    home = Path(home)
    serving = open_store(home, get_settings().online_store).as_of()
    try:
        published = published_months(home)
    except BookpulseError as exc:
        published, broken = [], str(exc)
    else:
        broken = None
    tracking.configure(home)
    client = MlflowClient()
    champions: dict[str, str | None] = {}
    for spec in load_model_specs().values():
        try:
            mv = client.get_model_version_by_alias(spec.registered_name, tracking.CHAMPION)
            champions[spec.name] = str(mv.version)
        except MlflowException:
            champions[spec.name] = None
    result = Status(serving, published, champions)
    w = result.warnings
    if broken:
        w.append(broken)
    for p in published:
        if p.manifest.online_store == "pending":
            w.append(
                f"{p.month}: its files are published but its online-store publish did not "
                f"finish (the run was stopped): re-run `bookpulse score --as-of {p.month}`"
            )
    if published and serving is not None and published[0].month > serving:
        w.append(f"the newest scored month is {published[0].month} but the API serves {serving}")
    served = next((p for p in published if p.month == serving), None)
    if served is not None:
        for name, m in served.manifest.models.items():
            now = champions.get(name)
            if now is not None and now != m.version:
                w.append(
                    f"{name}: the API's month {serving} was scored with version {m.version}; "
                    f"the champion is now {now}: re-score {serving} to serve it"
                )
    return result
