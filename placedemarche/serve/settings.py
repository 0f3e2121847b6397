"""What a service is started with: :class:`ServeSettings` (the model directory, batching,
limits, access key, database), as `pm serve` options or built in code and tests."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from placedemarche.core.errors import PlaceDeMarcheError

#: The environment variable holding the API key when no --api-key-file is given.
API_KEY_ENV = "PM_API_KEY"
#: How `pm serve --workers N` hands the settings to the worker processes it starts.
SETTINGS_ENV = "PM_SERVE_SETTINGS"


@dataclass
class ServeSettings:
    """A service's settings.

    ``max_batch`` products at most are extracted and predicted together, after waiting at most
    ``max_wait_ms`` for more to arrive (dynamic batching); ``batch_limit`` products at most per
    ``/v1/categorise/batch`` request. ``max_upload_mb`` bounds one photo (and the body of a
    single-product request), ``max_batch_mb`` the body of a batch request. Texts longer than
    ``max_text_chars`` are cut there (past what any extractor reads). ``target_precision``
    picks another point of the model's stored risk-coverage curve (None: the one trained for).
    ``api_key``: every endpoint but the health checks requires ``Authorization: Bearer KEY``.
    ``db``: where answers and feedback are written (None: nothing is written).
    """

    model_dir: str
    target_precision: float | None = None
    max_batch: int = 32
    max_wait_ms: float = 5.0
    batch_limit: int = 256
    max_upload_mb: float = 10.0
    max_batch_mb: float = 64.0
    max_text_chars: int = 20_000
    top_k: int = 3
    api_key: str | None = field(default=None, repr=False)
    db: str | None = None
    reload_on_sighup: bool = False

    def check(self) -> "ServeSettings":
        for name in ("max_batch", "batch_limit", "max_text_chars", "top_k"):
            if getattr(self, name) < 1:
                raise PlaceDeMarcheError(f"--{name.replace('_', '-')} must be 1 or more, got {getattr(self, name)}")
        for name in ("max_upload_mb", "max_batch_mb"):
            if getattr(self, name) <= 0:
                raise PlaceDeMarcheError(f"--{name.replace('_', '-')} must be above 0, got {getattr(self, name)}")
        if self.max_wait_ms < 0:
            raise PlaceDeMarcheError(f"--max-wait-ms must be 0 or more, got {self.max_wait_ms}")
        if self.api_key is not None and not self.api_key.strip():
            raise PlaceDeMarcheError("the API key is empty: put a key in the --api-key-file (or PM_API_KEY)")
        return self

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> "ServeSettings":
        raw = os.environ.get(SETTINGS_ENV)
        if not raw:
            raise PlaceDeMarcheError(f"{SETTINGS_ENV} is not set: start the service with pm serve")
        return cls(**json.loads(raw)).check()


def read_api_key(path: str | Path | None) -> str | None:
    """The key of ``--api-key-file`` (its first line, stripped), else ``$PM_API_KEY``, else None."""
    if path is not None:
        try:
            key = Path(path).read_text(encoding="utf-8").strip().splitlines()
        except OSError as exc:
            raise PlaceDeMarcheError(f"cannot read the API key file {path}: {exc.strerror or exc}") from None
        if not key or not key[0].strip():
            raise PlaceDeMarcheError(f"the API key file {path} is empty: write the key on its first line")
        return key[0].strip()
    key = os.environ.get(API_KEY_ENV, "").strip()
    return key or None
