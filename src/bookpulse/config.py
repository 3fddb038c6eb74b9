"""Settings from the environment (or a `.env` file). Nothing is done at import time."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Where bookpulse keeps its data. Every file it writes lives under `home`."""

    model_config = SettingsConfigDict(env_prefix="BOOKPULSE_", env_file=".env", extra="ignore")

    home: Path = Path("data")
    specs_root: Path = Field(
        default_factory=lambda: Path(__file__).resolve().parents[2],
        description="folder holding features/ and models/ (the project root by default)",
    )

    @cached_property
    def book_dir(self) -> Path:
        """The default book: `$BOOKPULSE_HOME/book`."""
        return self.home / "book"


def get_settings() -> Settings:
    return Settings()
