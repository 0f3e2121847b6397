"""HTTP for sources: a requests session with retries, backoff, a rate limit and a time budget."""

from __future__ import annotations

import time
from typing import Any, Callable

from .base import Source
from .errors import SourceError

RETRY_STATUSES = (429, 500, 502, 503, 504)


def default_sleep(seconds: float) -> None:
    """Every wait of a client goes through here unless it was given ``sleep``; tests patch it."""
    time.sleep(seconds)


class _BudgetSpent(Exception):
    """Raised from inside urllib3's retry loop when the next wait would pass the time budget."""


def _retry_class():
    from urllib3.util.retry import Retry

    class ClientRetry(Retry):
        """urllib3 Retry whose waits go through the client (its sleep, its budget, its count).

        The backoff is ``backoff_factor * 2**(n-1)`` from the first retry on (urllib3 retries
        the first time at once, which would hit a rate-limited API again straight away), and
        a server's ``Retry-After`` is honoured.
        """

        wait: Callable[[float, str], None] | None = None

        def new(self, **kw: Any):
            retry = super().new(**kw)
            retry.wait = self.wait
            return retry

        def get_backoff_time(self) -> float:
            errors = 0
            for entry in reversed(self.history):
                if entry.redirect_location is not None:
                    break
                errors += 1
            if errors == 0:
                return 0.0
            return float(min(self.backoff_max, self.backoff_factor * 2 ** (errors - 1)))

        def sleep(self, response=None) -> None:
            last = self.history[-1] if self.history else None
            reason = (f"HTTP {last.status}" if last is not None and last.status
                      else type(last.error).__name__ if last is not None and last.error else "retry")
            seconds = None
            if response is not None and self.respect_retry_after_header:
                seconds = self.get_retry_after(response)
            if seconds is None:
                seconds = self.get_backoff_time()
            if self.wait is not None:
                self.wait(seconds, reason)

    return ClientRetry


class RateLimitedClient:
    """GET JSON with retries (exponential backoff, honouring Retry-After on 429/5xx and
    timeouts), at most one request per ``min_interval`` seconds, and a total time budget.

    Every wait (rate limit or retry) goes through ``sleep`` and is recorded in ``waits`` as
    ``(reason, seconds)``; ``retries`` counts the retries. ``sleep`` and ``clock`` are
    injectable so tests assert on the waits requested without waiting.

    Usage::

        client = RateLimitedClient(user_agent="placedemarche/0.1 (me@example.org)", min_interval=6)
        data = client.get_json("https://world.openfoodfacts.org/cgi/search.pl",
                               {"search_terms": "champagne", "json": 1}, what="page 1")
    """

    def __init__(self, *, user_agent: str, timeout: float = 30.0, max_retries: int = 5,
                 backoff_factor: float = 2.0, min_interval: float = 0.0, time_budget: float = 900.0,
                 sleep: Callable[[float], None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        import requests
        from requests.adapters import HTTPAdapter

        self.timeout = timeout
        self.min_interval = min_interval
        self.time_budget = time_budget
        self.sleep = sleep or default_sleep
        self.clock = clock
        self.started = clock()
        self.last_request: float | None = None
        self.retries = 0
        self.waits: list[tuple[str, float]] = []
        self.session = requests.Session()
        self.session.headers["User-Agent"] = user_agent
        retry = _retry_class()(
            total=max_retries, connect=max_retries, read=max_retries, status=max_retries,
            backoff_factor=backoff_factor, status_forcelist=RETRY_STATUSES,
            allowed_methods=frozenset({"GET"}), respect_retry_after_header=True,
            raise_on_status=False)
        retry.wait = self._retry_wait
        adapter = HTTPAdapter(max_retries=retry)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    @property
    def waited(self) -> float:
        """Seconds spent waiting (rate limit and backoff) so far."""
        return sum(seconds for _, seconds in self.waits)

    def _left(self) -> float:
        return self.time_budget - (self.clock() - self.started)

    def _wait(self, seconds: float, reason: str) -> None:
        if seconds <= 0:
            return
        if seconds > self._left():
            raise _BudgetSpent(f"waiting {seconds:.0f} s ({reason}) would pass the time budget "
                               f"of {self.time_budget:g} s")
        self.waits.append((reason, seconds))
        self.sleep(seconds)

    def _retry_wait(self, seconds: float, reason: str) -> None:
        self.retries += 1
        self._wait(seconds, f"retry after {reason}")

    def get_json(self, url: str, params: dict[str, Any], what: str) -> Any:
        """GET ``url`` and return its JSON; raise SourceError starting with ``what`` on failure."""
        import requests

        try:
            if self._left() <= 0:
                raise _BudgetSpent(f"time budget of {self.time_budget:g} s spent")
            if self.last_request is not None and self.min_interval > 0:
                self._wait(self.min_interval - (self.clock() - self.last_request), "rate limit")
            self.last_request = self.clock()
            response = self.session.get(url, params=params, timeout=self.timeout)
        except _BudgetSpent as exc:
            raise SourceError(f"{what}: {exc} (raise --option time_budget=...)") from None
        except requests.exceptions.RetryError as exc:
            raise SourceError(f"{what}: gave up after retries ({_reason(exc)})") from None
        except requests.exceptions.RequestException as exc:
            if isinstance(exc, requests.exceptions.Timeout) or "timed out" in str(exc):
                raise SourceError(f"{what}: timed out after {self.timeout:g} s "
                                  f"({self.retries} retries so far)") from None
            raise SourceError(f"{what}: request failed ({_reason(exc)})") from None
        if response.status_code >= 400:
            hint = " - check the credentials" if response.status_code in (401, 403) else ""
            raise SourceError(f"{what}: HTTP {response.status_code} from "
                              f"{response.url.split('?')[0]}{hint}")
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


class HttpSource(Source):
    """A source that queries an HTTP API through one RateLimitedClient built from its
    ``user_agent``, ``timeout``, ``max_retries``, ``backoff_factor``, ``min_interval`` and
    ``time_budget`` parameters; it reports the client's retries and waits."""

    def _client(self) -> RateLimitedClient:
        if getattr(self, "client_", None) is None:
            self.client_ = RateLimitedClient(
                user_agent=self.user_agent, timeout=self.timeout, max_retries=self.max_retries,
                backoff_factor=self.backoff_factor, min_interval=self.min_interval,
                time_budget=self.time_budget)
        return self.client_

    def retries(self) -> int:
        return self._client().retries

    def waited(self) -> float:
        return self._client().waited
