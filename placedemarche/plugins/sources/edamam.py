"""The `edamam` source: the Edamam food-database parser API used by the original study."""

from __future__ import annotations

import os
from typing import Iterator

from placedemarche import __version__, hookimpl
from placedemarche.core.base import SourcePage
from placedemarche.data.http import HttpSource
from placedemarche.core.errors import SourceError

FOOD_KEYS = ("foodId", "label", "knownAs", "category", "categoryLabel", "foodContentsLabel", "image")


class EdamamSource(HttpSource):
    """Foods matching an ingredient query on Edamam (``/api/food-database/v2/parser``).

    Credentials come from ``app_id`` / ``app_key`` or the environment variables
    ``EDAMAM_APP_ID`` / ``EDAMAM_APP_KEY`` (free keys at developer.edamam.com).
    Pages follow the API's ``_links.next.href`` (an opaque session link), so resuming at page
    N walks pages 1..N-1 again without writing them. ``min_interval`` (1.2 s) keeps under 50 requests
    a minute (Edamam throttles per minute, by plan); a 429 is retried after its Retry-After.

    Usage::

        EdamamSource(app_id="...", app_key="...").pages("champagne")
    """

    name = "edamam"
    description = "Edamam food-database parser API (needs app_id and app_key)"
    columns = {k: k for k in ("foodId", "label", "category", "foodContentsLabel", "image")}
    record_keys = FOOD_KEYS

    def __init__(self, app_id: str | None = None, app_key: str | None = None,
                 base_url: str = "https://api.edamam.com",
                 user_agent: str = f"placedemarche/{__version__}", timeout: float = 30.0,
                 max_retries: int = 5, backoff_factor: float = 2.0, min_interval: float = 1.2,
                 time_budget: float = 900.0):
        self.app_id = app_id
        self.app_key = app_key
        self.base_url = base_url
        self.user_agent = user_agent
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_factor = backoff_factor
        self.min_interval = min_interval
        self.time_budget = time_budget

    def _credentials(self) -> tuple[str, str]:
        app_id = self.app_id or os.environ.get("EDAMAM_APP_ID")
        app_key = self.app_key or os.environ.get("EDAMAM_APP_KEY")
        if not app_id or not app_key:
            raise SourceError("edamam needs credentials: set EDAMAM_APP_ID and EDAMAM_APP_KEY, or "
                              "pass --option app_id=... --option app_key=...")
        return app_id, app_key

    def check(self) -> None:
        self._credentials()

    def pages(self, query: str, start_page: int = 1) -> Iterator[SourcePage]:
        app_id, app_key = self._credentials()
        url = self.base_url.rstrip("/") + "/api/food-database/v2/parser"
        params: dict | None = {"app_id": app_id, "app_key": app_key, "ingr": query,
                               "nutrition-type": "cooking"}
        number = 1
        while url:
            data = self._client().get_json(url, params or {}, what=f"edamam page {number}")
            if not isinstance(data, dict) or not isinstance(data.get("hints", []), list):
                raise SourceError(f"edamam page {number}: unexpected response (no hints list)")
            records = [_record(h.get("food") or {}) for h in data.get("hints") or [] if isinstance(h, dict)]
            url = (((data.get("_links") or {}).get("next") or {}).get("href")) or ""
            params = None  # the next link carries every parameter, credentials included
            if number >= start_page:
                yield SourcePage(number, records, None, last=not url or not records)
            if not records:
                return
            number += 1


def _record(food: dict) -> dict:
    return {k: ("" if food.get(k) is None else food.get(k)) for k in FOOD_KEYS}


@hookimpl
def register_sources(register):
    register(EdamamSource)
