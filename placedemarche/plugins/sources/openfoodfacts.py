"""The `openfoodfacts` source: full-text product search on Open Food Facts."""

from __future__ import annotations

from typing import Iterator

from placedemarche import __version__, hookimpl
from placedemarche.core.base import SourcePage
from placedemarche.data.http import HttpSource
from placedemarche.core.errors import SourceError

FIELDS = ("code", "product_name", "categories", "categories_tags", "ingredients_text", "image_url",
          "brands", "quantity", "countries")


class OpenFoodFactsSource(HttpSource):
    """Products matching a full-text query on Open Food Facts (``/cgi/search.pl``).

    The API asks clients to identify themselves (``user_agent``) and to keep searches to
    about 10 per minute: ``min_interval`` (seconds between requests) enforces that.

    Args:
        base_url: the instance to query (another country or a mirror).
        user_agent: "app/version (contact)" sent with every request.
        page_size: products per page (the API allows up to 100).
        timeout: seconds per request; max_retries / backoff_factor: retries with
            exponential backoff on 429, 5xx, timeouts, resets and responses cut short (an
            unresolvable host or a refused connection fails at once); time_budget: total seconds.

    Usage::

        for page in OpenFoodFactsSource().pages("champagne"):
            print(len(page.records))
    """

    name = "openfoodfacts"
    aliases = ("off",)
    description = "Open Food Facts full-text product search (no key needed)"
    columns = {"foodId": "code", "label": "product_name", "category": "categories",
               "foodContentsLabel": "ingredients_text", "image": "image_url"}
    record_keys = FIELDS

    def __init__(self, base_url: str = "https://world.openfoodfacts.org",
                 user_agent: str = f"placedemarche/{__version__} (https://pypi.org/project/placedemarche)",
                 page_size: int = 50, timeout: float = 30.0, max_retries: int = 5,
                 backoff_factor: float = 2.0, min_interval: float = 6.0, time_budget: float = 900.0):
        self.base_url = base_url
        self.user_agent = user_agent
        self.page_size = page_size
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_factor = backoff_factor
        self.min_interval = min_interval
        self.time_budget = time_budget

    def pages(self, query: str, start_page: int = 1) -> Iterator[SourcePage]:
        url = self.base_url.rstrip("/") + "/cgi/search.pl"
        number = start_page
        while True:
            data = self._client().get_json(url, {
                "search_terms": query, "search_simple": 1, "action": "process", "json": 1,
                "page": number, "page_size": self.page_size, "fields": ",".join(FIELDS),
            }, what=f"openfoodfacts page {number}")
            if not isinstance(data, dict) or not isinstance(data.get("products", []), list):
                raise SourceError(f"openfoodfacts page {number}: unexpected response (no products list)")
            products = data.get("products") or []
            total = _int(data.get("count"))
            # the server may cap page_size (100): count pages in its unit, not ours
            size = _int(data.get("page_size")) or self.page_size
            records = [_record(p) for p in products if isinstance(p, dict)]
            last = not records or (total is not None and number * size >= total)
            yield SourcePage(number, records, total, last)
            if last:
                return
            number += 1


def _int(value) -> int | None:
    return int(value) if str(value).isdigit() else None


def _record(product: dict) -> dict:
    record = {k: product.get(k) for k in FIELDS}
    tags = product.get("categories_tags")
    if isinstance(tags, list):
        record["categories_tags"] = ",".join(str(t) for t in tags)
    if not record.get("categories") and record.get("categories_tags"):
        record["categories"] = record["categories_tags"]
    return {k: ("" if v is None else v) for k, v in record.items()}


@hookimpl
def register_sources(register):
    register(OpenFoodFactsSource)
