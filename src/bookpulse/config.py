"""Settings from the environment (or a `.env` file). Nothing is done at import time."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_specs_root() -> Path:
    """features/ and models/ beside the package (a bento, built with `is_src_layout`, holds
    bookpulse/ next to them), else the project root of a checkout (src/bookpulse/config.py)."""
    beside_package = Path(__file__).resolve().parents[1]
    if (beside_package / "models").is_dir():
        return beside_package
    return beside_package.parent


class Settings(BaseSettings):
    """Where bookpulse keeps its data. Every file it writes lives under `home`."""

    model_config = SettingsConfigDict(env_prefix="BOOKPULSE_", env_file=".env", extra="ignore")

    home: Path = Path("data")
    specs_root: Path = Field(
        default_factory=_default_specs_root,
        description="folder holding features/ and models/ (default: the project root, or a "
        "bento's src/)",
    )

    online_store: str | None = Field(
        default=None,
        description="redis://host:port/db for the API's feature store; default: a SQLite file "
        "under home (BOOKPULSE_ONLINE_STORE)",
    )
    api_keys: str | None = Field(
        default=None, description="comma-separated API keys for the scoring routes"
    )
    api_keys_file: Path | None = Field(
        default=None, description="a file of API keys, one per line (a mounted secret)"
    )
    admin_keys: str | None = Field(default=None, description="keys for /v1/admin routes")
    admin_keys_file: Path | None = None

    @cached_property
    def book_dir(self) -> Path:
        """The default book: `$BOOKPULSE_HOME/book`."""
        return self.home / "book"


def get_settings() -> Settings:
    return Settings()
