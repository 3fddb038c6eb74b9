"""`bookpulse serve`: how to start the BentoML service on this home (the CLI then hands the
process over to `bentoml serve`). Without configured keys, a key is made once under
$BOOKPULSE_HOME (mode 600) for the scoring routes, and another for /v1/admin."""

from __future__ import annotations

import os
import secrets
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from bookpulse.config import get_settings

SERVICE = "bookpulse.serving.service:Scoring"


@dataclass(frozen=True)
class ServePlan:
    argv: list[str]  # argv[0] is the bentoml executable
    env: dict[str, str]
    curl: str  # a call that works against it


def key_file(home: Path, name: str) -> Path:
    """A random key kept under $BOOKPULSE_HOME (mode 600), made once."""
    path = Path(home) / name
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(24) + "\n")
        path.chmod(0o600)
    return path


def curl_example(home: Path, port: int, customer_id: int | None = None) -> str:
    key = "$(cat " + str(Path(home) / "api_key") + ")"
    ident = customer_id if customer_id is not None else 100001
    return (
        f"curl -s -X POST http://127.0.0.1:{port}/v1/customers/score "
        f'-H "X-API-Key: {key}" -H "Content-Type: application/json" '
        f"-d '{{\"customer_ids\": [{ident}]}}'"
    )


def plan(home: Path, host: str = "127.0.0.1", port: int = 3000) -> ServePlan:
    settings = get_settings()
    env = dict(os.environ, BOOKPULSE_HOME=str(Path(home).resolve()))
    if not (settings.api_keys or settings.api_keys_file):
        env["BOOKPULSE_API_KEYS_FILE"] = str(key_file(home, "api_key").resolve())
    if not (settings.admin_keys or settings.admin_keys_file):
        env["BOOKPULSE_ADMIN_KEYS_FILE"] = str(key_file(home, "admin_key").resolve())
    bentoml = shutil.which("bentoml") or str(Path(sys.executable).with_name("bentoml"))
    argv = [bentoml, "serve", SERVICE, "--host", host, "--port", str(port)]
    return ServePlan(argv=argv, env=env, curl=curl_example(home, port))
