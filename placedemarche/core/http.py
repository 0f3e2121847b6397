"""HTTP for sources: a requests session with retries, backoff, a rate limit and a time budget."""

from __future__ import annotations

import time
from typing import Any, Callable

from .errors import SourceError

RETRY_STATUSES = (429, 500, 502, 503, 504)


class RateLimitedClient:
    """GET JSON with urllib3 retries (exponential backoff, honouring Retry-After on 429/5xx
    and timeouts), at most one request per ``min_interval`` seconds, and a total time budget.

    ``sleep`` and ``clock`` are injectable so tests run without real waiting.
    """

    def __init__(self, *, user_agent: str, timeout: float = 30.0, max_retries: int = 5,
                 backoff_factor: float = 2.0, min_interval: float = 0.0, time_budget: float = 900.0,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic):
        import requests
        from requests.adapters import HTTPAdapter
        from urllib3.util.retry import Retry

        self.timeout = timeout
        self.min_interval = min_interval
        self.time_budget = time_budget
        self.sleep = sleep
        self.clock = clock
        self.started = clock()
        self.last_request: float | None = None
        self.retries = 0
        self.waited = 0.0
        self.session = requests.Session()
        self.session.headers["User-Agent"] = user_agent
        retry = Retry(total=max_retries, connect=max_retries, read=max_retries, status=max_retries,
                      backoff_factor=backoff_factor, status_forcelist=RETRY_STATUSES,
                      allowed_methods=frozenset({"GET"}), respect_retry_after_header=True,
                      raise_on_status=False)
        adapter = HTTPAdapter(max_retries=retry)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def get_json(self, url: str, params: dict[str, Any], what: str) -> Any:
        import requests

        if self.clock() - self.started > self.time_budget:
            raise SourceError(f"{what}: time budget of {self.time_budget:.0f} s spent")
        if self.last_request is not None and self.min_interval > 0:
            wait = self.min_interval - (self.clock() - self.last_request)
            if wait > 0:
                self.waited += wait
                self.sleep(wait)
        self.last_request = self.clock()
        try:
            response = self.session.get(url, params=params, timeout=self.timeout)
        except requests.exceptions.RetryError as exc:
            raise SourceError(f"{what}: gave up after retries ({_reason(exc)})") from None
        except requests.exceptions.RequestException as exc:
            if isinstance(exc, requests.exceptions.Timeout) or "timed out" in str(exc):
                raise SourceError(f"{what}: timed out after {self.timeout:g} s (and retries)") from None
            raise SourceError(f"{what}: request failed ({_reason(exc)})") from None
        history = getattr(getattr(response.raw, "retries", None), "history", ()) or ()
        self.retries += len(history)
        if response.status_code >= 400:
            raise SourceError(f"{what}: HTTP {response.status_code} from {response.url.split('?')[0]}")
        try:
            return response.json()
        except ValueError:
            raise SourceError(f"{what}: the response is not valid JSON "
                              f"(starts with {response.text[:40]!r})") from None


def _reason(exc: Exception) -> str:
    """The cause urllib3 gives (e.g. "too many 500 error responses"), on one line."""
    text = str(exc).replace("\n", " ")
    cause = text.split("Caused by ", 1)[-1].rstrip(")")
    return cause[:160]
