"""HTTP for sources: a requests session with retries, backoff, a rate limit and a time budget."""

from __future__ import annotations

import errno
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

from placedemarche.core.base import Source
from placedemarche.core.errors import SourceError

RETRY_STATUSES = (429, 500, 502, 503, 504)
#: Longest backoff between two retries (a server's Retry-After may ask for more).
BACKOFF_MAX = 120.0


def default_sleep(seconds: float) -> None:
    """Every wait of a client goes through here unless it was given ``sleep``; tests patch it."""
    time.sleep(seconds)


def default_clock() -> float:
    """The clock of a client not given ``clock``; tests patch it to move on with their sleeps."""
    return time.monotonic()


@dataclass(frozen=True)
class RetryNotice:
    """A retry about to happen: ``attempt`` of ``max_retries``, after ``seconds``, because of
    ``reason``. ``str()`` gives the line the CLI shows."""

    what: str
    attempt: int
    max_retries: int
    seconds: float
    reason: str

    def __str__(self) -> str:
        return (f"{self.what}: retry {self.attempt}/{self.max_retries} in {_seconds(self.seconds)} s: "
                f"{self.reason}")


RetryListener = Callable[[RetryNotice], None]
_retry_listener: ContextVar[RetryListener | None] = ContextVar("placedemarche_retry_listener", default=None)


@contextmanager
def reporting_retries(listener: RetryListener | None) -> Iterator[None]:
    """Send a RetryNotice to ``listener`` before each retry of the clients used in the block,
    so a minute of backoff is never silent (the core never prints; the CLI shows them)."""
    token = _retry_listener.set(listener)
    try:
        yield
    finally:
        _retry_listener.reset(token)


@dataclass(frozen=True)
class Failure:
    """Why a request failed, in a few words, whether trying again can help, what to do, and
    whether the host could not be reached at all (no network, or a wrong address)."""

    reason: str
    transient: bool
    hint: str = ""
    unreachable: bool = False


def describe_failure(exc: BaseException, url: str, timeout: float | None = None) -> Failure:
    """Classify a requests/urllib3 exception from the chain of causes it wraps.

    Retrying cannot fix a name that does not resolve, a refused connection, an unusable URL or
    a certificate that does not verify, so those are not transient: offline, they would
    otherwise cost minutes of backoff before the same error. Timeouts, resets and
    connections closed mid-response are.
    """
    import http.client
    import socket
    import ssl

    import requests
    from urllib3 import exceptions as u3

    host = _host(url)
    chain = _causes(exc)

    def find(*types):
        return next((e for e in chain if isinstance(e, types)), None)

    if find(requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
            requests.exceptions.InvalidSchema, u3.LocationValueError):
        return Failure(f"invalid URL {url.split('?')[0]}", False,
                       "give a full http(s):// address with --base-url")
    if find(u3.NameResolutionError, socket.gaierror):
        return Failure(f"cannot resolve host {urlsplit(url).hostname or host}", False,
                       "check your network connection or --base-url", unreachable=True)
    if find(ConnectionRefusedError):
        return Failure(f"connection refused by {host}", False,
                       "check --base-url, or that the server is running", unreachable=True)
    if any(isinstance(e, OSError) and e.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH) for e in chain):
        return Failure(f"network unreachable for {host}", False, "check your network connection",
                       unreachable=True)
    if find(ssl.SSLCertVerificationError) or any(
            "CERTIFICATE_VERIFY_FAILED" in str(e) for e in chain):
        return Failure(f"SSL certificate verification failed for {host}", False,
                       "the server's certificate is not trusted: check --base-url")
    incomplete = find(http.client.IncompleteRead)  # urllib3's counts bytes, http.client's keeps them
    if incomplete is not None:
        if isinstance(incomplete.partial, int) and isinstance(incomplete.expected, int):
            got = f"{incomplete.partial} of {incomplete.partial + incomplete.expected} bytes"
        else:
            got = f"{len(incomplete.partial)} bytes"
        return Failure(f"connection closed mid-response ({got} received)", True)
    # urllib3's NewConnectionError derives from its ConnectTimeoutError, yet is not a timeout
    if any(isinstance(e, (requests.exceptions.Timeout, u3.TimeoutError, TimeoutError))
           and not isinstance(e, u3.NewConnectionError) for e in chain):
        return Failure(f"timeout (no answer within {timeout:g} s)" if timeout else "timeout", True)
    if find(ConnectionResetError):
        return Failure("connection reset by the server", True)
    if find(ConnectionAbortedError, BrokenPipeError, u3.ProtocolError, u3.NewConnectionError):
        return Failure("connection closed by the server", True)
    if find(requests.exceptions.SSLError):  # a handshake cut short: the next one may succeed
        return Failure(f"SSL error with {host}", True)
    if find(requests.exceptions.ConnectionError):
        return Failure(f"connection to {host} failed", True)
    # anything else (too many redirects, undecodable content) would fail the same way again
    return Failure(f"request failed ({type(exc).__name__})", False)


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and every exception it wraps: urllib3 and requests keep them in ``args``,
    ``reason`` (MaxRetryError) or as the cause/context."""
    seen: list[BaseException] = []
    todo = [exc]
    while todo:
        current = todo.pop()
        if current is None or any(current is s for s in seen):
            continue
        seen.append(current)
        todo.extend(a for a in getattr(current, "args", ()) if isinstance(a, BaseException))
        for attribute in ("reason", "__cause__", "__context__"):
            inner = getattr(current, attribute, None)
            if isinstance(inner, BaseException):
                todo.append(inner)
    return seen


def _host(url: str) -> str:
    parts = urlsplit(url)
    if not parts.hostname:
        return url.split("?")[0]
    try:
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        port = None
    return f"{parts.hostname}:{port}" if port else parts.hostname


def _seconds(seconds: float) -> str:
    """8 -> "8", 0.5 -> "0.5", 61.7 -> "62": short, and exact for the small test backoffs."""
    return f"{seconds:.0f}" if seconds >= 10 else f"{seconds:.2g}"


def _retries(count: int) -> str:
    return f"{count} retr{'y' if count == 1 else 'ies'}"


class _BudgetSpent(Exception):
    """The next wait or request would pass the time budget."""


class RateLimitedClient:
    """GET JSON with retries (exponential backoff, honouring Retry-After) on 429/5xx,
    timeouts, resets and connections closed mid-response; at most one request per
    ``min_interval`` seconds; and a total time budget. Errors that retrying cannot fix (a
    name that does not resolve, a refused connection, an invalid URL, an untrusted
    certificate) fail at once.

    Every wait (rate limit or retry) goes through ``sleep`` and is recorded in ``waits`` as
    ``(reason, seconds)``; ``retries`` counts the retries; each retry is announced to the
    listener of :func:`reporting_retries`. ``sleep`` and ``clock`` are injectable so tests
    assert on the waits requested without waiting.

    Usage::

        client = RateLimitedClient(user_agent="placedemarche/0.1 (me@example.org)", min_interval=6)
        data = client.get_json("https://world.openfoodfacts.org/cgi/search.pl",
                               {"search_terms": "champagne", "json": 1}, what="page 1")
    """

    def __init__(self, *, user_agent: str, timeout: float = 30.0, max_retries: int = 5,
                 backoff_factor: float = 2.0, min_interval: float = 0.0, time_budget: float = 900.0,
                 sleep: Callable[[float], None] | None = None,
                 clock: Callable[[], float] | None = None):
        import requests
        from requests.adapters import HTTPAdapter

        self.timeout = timeout
        self.max_retries = max(0, int(max_retries))
        self.backoff_factor = backoff_factor
        self.min_interval = min_interval
        self.time_budget = time_budget
        self.sleep = sleep or default_sleep
        self.clock = clock or default_clock
        self.started = self.clock()
        self.last_request: float | None = None
        self.retries = 0
        self.waits: list[tuple[str, float]] = []
        self.session = requests.Session()
        self.session.headers["User-Agent"] = user_agent
        # retries are ours (get_json): urllib3's cannot retry a body cut short, which requests
        # reads after urllib3 has returned, nor tell a refused connection from a reset one
        adapter = HTTPAdapter(max_retries=0)
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
            raise _BudgetSpent(f"waiting {_seconds(seconds)} s ({reason}) would pass the time budget "
                               f"of {self.time_budget:g} s")
        self.waits.append((reason, seconds))
        self.sleep(seconds)

    def _backoff(self, attempt: int, response) -> float:
        """Retry-After when the server sent one, else ``backoff_factor * 2**(attempt-1)``."""
        if response is not None and response.headers.get("Retry-After"):
            from urllib3.exceptions import InvalidHeader
            from urllib3.util.retry import Retry

            try:
                return max(0.0, float(Retry(0).parse_retry_after(response.headers["Retry-After"])))
            except InvalidHeader:
                pass  # an unreadable Retry-After: fall back on our own backoff
        return float(min(BACKOFF_MAX, self.backoff_factor * 2 ** (attempt - 1)))

    def get_json(self, url: str, params: dict[str, Any], what: str) -> Any:
        """GET ``url`` and return its JSON; raise SourceError starting with ``what`` on failure."""
        response = self._get(url, params, what)
        if response.status_code >= 400:
            hint = " - check the credentials" if response.status_code in (401, 403) else ""
            raise SourceError(f"{what}: HTTP {response.status_code} from "
                              f"{response.url.split('?')[0]}{hint}")
        try:
            return response.json()
        except ValueError:
            raise SourceError(f"{what}: the response is not valid JSON "
                              f"(starts with {response.text[:40]!r})") from None

    def _get(self, url: str, params: dict[str, Any], what: str):
        """The response of the first attempt that is not worth retrying (it may be an HTTP
        error); SourceError when the retries, or the time budget, are spent."""
        import requests

        first = self.clock()
        attempt = 0
        try:
            while True:
                if self._left() <= 0:
                    raise _BudgetSpent(f"time budget of {self.time_budget:g} s spent")
                if self.last_request is not None and self.min_interval > 0:
                    self._wait(self.min_interval - (self.clock() - self.last_request), "rate limit")
                self.last_request = self.clock()
                response = None
                try:
                    response = self.session.get(url, params=params, timeout=self.timeout)
                except requests.RequestException as exc:  # the body is read here too
                    failure = describe_failure(exc, url, self.timeout)
                else:
                    if response.status_code not in RETRY_STATUSES:
                        return response
                    failure = Failure(f"HTTP {response.status_code}", True)
                if not failure.transient:
                    raise SourceError(f"{what}: {failure.reason}" + (f": {failure.hint}" if failure.hint else ""))
                if attempt >= self.max_retries:
                    where = f" from {response.url.split('?')[0]}" if response is not None else ""
                    after = (f" after {_retries(attempt)} over {_seconds(self.clock() - first)} s"
                             if attempt else "")
                    raise SourceError(f"{what}: {failure.reason}{where}{after}")
                attempt += 1
                self.retries += 1
                seconds = self._backoff(attempt, response)
                if seconds <= self._left():  # announced only if it will happen
                    listener = _retry_listener.get()
                    if listener is not None:
                        listener(RetryNotice(what, attempt, self.max_retries, seconds, failure.reason))
                self._wait(seconds, f"retry after {failure.reason}")
        except _BudgetSpent as exc:
            raise SourceError(f"{what}: {exc} (raise --option time_budget=...)") from None


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
