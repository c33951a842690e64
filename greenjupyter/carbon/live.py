"""Opt-in live grid carbon intensity: Electricity Maps, or the UK Carbon Intensity API.

``LiveIntensity.current()`` never touches the network on the caller's thread: it answers from
a cache and, when the cache is stale, starts one short fetch on a daemon thread. Every failure
keeps the last good value and is told once per kind. ``urllib.request`` is imported only inside
a fetch, so importing greenjupyter loads no network code.

The Electricity Maps token is read from the environment at each fetch and goes only into the
request header: it is never kept on an object, printed, or put in a message. Requests go over
https only (plain http only to a loopback address such as 127.0.0.1, which never leaves the
machine: local tests and mirrors), a redirect is followed only within the configured origin
(scheme, host and port), and a value is taken only from that origin, within 0 to 2,000 g/kWh.
Each fetch has one deadline, ``timeout_s``, for connecting, TLS, headers and body together
(name resolution aside), and an answer over ``MAX_BODY`` bytes is refused.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from ..errors import ConfigError
from ..notices import notice
from ..settings import LIMITS

TOKEN_VARS = ("ELECTRICITYMAPS_TOKEN", "GREENJUPYTER_ELECTRICITYMAPS_TOKEN")
MAX_BODY = 1 << 20  # a real answer is well under 1 KiB; never read an unbounded body
MAX_RETRY_AFTER_S = 3600.0  # a server asking for more is not taken at its word
PLAUSIBLE = LIMITS["intensity_g_per_kwh"]  # what a grid may emit: the range the setting itself accepts


@dataclass(frozen=True)
class LiveReading:
    """One grid carbon intensity fetched from a live provider."""

    g_per_kwh: float
    provider: str  # human name, e.g. "Electricity Maps"
    zone: str
    basis: str  # "lifecycle" (gCO2e/kWh) or "direct emissions only, actual|forecast" (gCO2/kWh)
    fetched_at: datetime  # UTC
    observed_at: str | None  # the provider's own timestamp for the value, as it sent it


class LiveFailure(Exception):
    """Why a fetch gave no reading. ``kind`` keys the one notice; ``detail`` is safe to show."""

    def __init__(self, kind: str, detail: str, retry_after_s: float | None = None):
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.retry_after_s = retry_after_s


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _intensity(value, field: str) -> float:
    """``value`` as g/kWh, or LiveFailure: a JSON number (not a string or boolean) within PLAUSIBLE."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LiveFailure("bad-response", f"{field} missing or not a number")
    try:
        g_per_kwh = float(value)
    except OverflowError:  # an integer of hundreds of digits
        g_per_kwh = math.inf
    if not PLAUSIBLE.holds(g_per_kwh):
        low, high = PLAUSIBLE.low, PLAUSIBLE.high
        raise LiveFailure("implausible", f"{field} = {g_per_kwh:g} g/kWh refused; accepted: {low:,g} to {high:,g} g/kWh")
    return g_per_kwh


def _token() -> str:
    for name in TOKEN_VARS:
        token = os.environ.get(name, "").strip()
        if token:
            return token
    return ""


class ElectricityMaps:
    """``GET {base}/v3/carbon-intensity/latest?zone=Z`` with an ``auth-token`` header; lifecycle gCO2e/kWh."""

    key = "electricitymaps"
    name = "Electricity Maps"
    default_base = "https://api.electricitymaps.com"
    path = "/v3/carbon-intensity/latest"  # the forecast (greenjupyter.carbon.forecast) asks another path
    needs_token = True

    def __init__(self, zone: str, base: str | None = None):
        if not isinstance(zone, str) or not zone.strip():
            raise ConfigError(f"Electricity Maps needs a zone such as 'FR' or 'US-CAL-CISO', not {zone!r}")
        self.zone = zone.strip()
        self.base = (base or self.default_base).rstrip("/")

    def request(self) -> tuple[str, dict[str, str]]:
        """(url, headers) for one fetch; LiveFailure('token-missing') before any request without a token."""
        from urllib.parse import quote

        token = _token()
        if not token:
            raise LiveFailure("token-missing", f"no API token: set {TOKEN_VARS[0]} (or {TOKEN_VARS[1]})")
        url = f"{self.base}{self.path}?zone={quote(self.zone, safe='')}"
        return url, {"auth-token": token, "Accept": "application/json"}

    def parse(self, payload) -> LiveReading:
        if not isinstance(payload, dict):
            raise LiveFailure("bad-response", "answer is not a JSON object")
        value = _intensity(payload.get("carbonIntensity"), "carbonIntensity")
        observed = payload.get("datetime")
        observed = observed if isinstance(observed, str) else None
        return LiveReading(value, self.name, self.zone, "lifecycle", _now(), observed)


class UKCarbonIntensity:
    """``GET {base}/intensity``, no key; Great Britain only; direct emissions only, gCO2/kWh."""

    key = "ukci"
    name = "UK Carbon Intensity API"
    default_base = "https://api.carbonintensity.org.uk"
    needs_token = False

    def __init__(self, zone: str = "GB", base: str | None = None):
        if not isinstance(zone, str) or zone.strip().upper() not in ("GB", "UK"):
            raise ConfigError(f"the UK Carbon Intensity API covers Great Britain only (zone 'GB'), not {zone!r}")
        self.zone = "GB"
        self.base = (base or self.default_base).rstrip("/")

    def request(self) -> tuple[str, dict[str, str]]:
        return f"{self.base}/intensity", {"Accept": "application/json"}

    def parse(self, payload) -> LiveReading:
        try:
            entry = payload["data"][0]
            intensity = entry["intensity"]
        except (KeyError, IndexError, TypeError):
            raise LiveFailure("bad-response", "no data[0].intensity in the answer") from None
        if not isinstance(intensity, dict):
            raise LiveFailure("bad-response", "data[0].intensity is not an object")
        # The settled value when there is one; the half-hour's forecast until then.
        which = "actual" if intensity.get("actual") is not None else "forecast"
        value = _intensity(intensity.get(which), f"intensity.{which}")
        observed = entry.get("from")
        observed = observed if isinstance(observed, str) else None
        return LiveReading(value, self.name, self.zone, f"direct emissions only, {which}", _now(), observed)


PROVIDERS = {ElectricityMaps.key: ElectricityMaps, UKCarbonIntensity.key: UKCarbonIntensity}


def _http_failure(provider, code: int, retry_after: str | None) -> LiveFailure:
    if code in (401, 403):
        what = "token rejected" if provider.needs_token else "access refused"
        return LiveFailure("token-rejected", f"HTTP {code}: {what}")
    if code == 429:
        try:
            seconds = min(max(float(retry_after), 0.0), MAX_RETRY_AFTER_S) if retry_after else None
        except ValueError:  # an HTTP date instead of seconds: fall back on our own back-off
            seconds = None
        return LiveFailure("rate-limited", "HTTP 429: rate limited", retry_after_s=seconds)
    return LiveFailure("http-error", f"HTTP {code}")


def is_loopback(host: str) -> bool:
    """True for an address literal of this machine (127.0.0.0/8, ::1); names are never resolved to decide."""
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of ``url``, the default port filled in; None when it has no usable one."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        scheme, host = parts.scheme.lower(), parts.hostname or ""
        port = parts.port or {"https": 443, "http": 80}.get(scheme)
    except ValueError:  # a port that is not a number, or out of range
        return None
    return (scheme, host, port) if host and port else None


def _trusted_origin(url: str) -> tuple[str, str, int]:
    """The origin of ``url`` if requests may go there, else LiveFailure('insecure') before anything is sent."""
    origin = _origin(url)
    if origin is None or not (origin[0] == "https" or (origin[0] == "http" and is_loopback(origin[1]))):
        where = url.partition("?")[0]
        raise LiveFailure("insecure", f"{where!r} refused: accepted are https:// URLs, and http:// only to a loopback address")
    return origin


class _Deadline:
    """One deadline for a whole fetch: when it passes, the connection is shut, whatever read is waiting.

    A socket timeout only bounds each read, so a server sending a byte a second would hold a fetch
    for ever. The socket is watched through a duplicate: shutdown() acts on the connection, which the
    duplicate shares, even after TLS wrapping has detached the original socket object.
    """

    def __init__(self, seconds: float):
        self._end = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._watched: list = []
        self.expired = False
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.name, self._timer.daemon = "greenjupyter-live-deadline", True
        self._timer.start()

    def left(self) -> float:
        return max(self._end - time.monotonic(), 0.001)

    def watch(self, sock):
        with self._lock:
            self._watched.append(sock.dup())
            if self.expired:
                self._cut(self._watched[-1])
        return sock

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._watched:
                self._cut(sock)

    @staticmethod
    def _cut(sock) -> None:
        import socket

        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:  # already closed by the other side
            pass

    def close(self) -> None:
        self._timer.cancel()
        with self._lock:
            for sock in self._watched:
                sock.close()
            self._watched.clear()


def _opener(origin: tuple[str, str, int], deadline: _Deadline):
    """A urllib opener whose connections the deadline can cut, following redirects within ``origin`` only."""
    import urllib.request

    class Redirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req, fp, code, msg, headers, newurl):
            # urllib would resend every header, the token too, to wherever the server points.
            if _origin(newurl) != origin:
                fp.close()
                raise LiveFailure("redirect", f"HTTP {code} redirect to another origin, not followed")
            return super().redirect_request(req, fp, code, msg, headers, newurl)

    class Watched:
        def do_open(self, http_class, req, **kwargs):
            def connection(host, **options):
                conn = http_class(host, **options)
                create = conn._create_connection  # socket.create_connection, kept per connection by http.client

                def connect(address, timeout=None, source_address=None):
                    return deadline.watch(create(address, deadline.left(), source_address))

                conn._create_connection = connect
                return conn

            return super().do_open(connection, req, **kwargs)

    class HTTP(Watched, urllib.request.HTTPHandler):
        pass

    class HTTPS(Watched, urllib.request.HTTPSHandler):
        pass

    return urllib.request.build_opener(Redirect(), HTTP(), HTTPS())


def _read_capped(response) -> bytes:
    """The body, or LiveFailure('too-large') past MAX_BODY bytes, declared or read."""
    declared = (response.headers.get("Content-Length") or "").strip()
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise LiveFailure("too-large", f"an answer of {int(declared):,} bytes refused (at most {MAX_BODY:,} bytes)")
    body = response.read(MAX_BODY + 1)
    if len(body) > MAX_BODY:
        raise LiveFailure("too-large", f"an answer over {MAX_BODY:,} bytes refused")
    return body


def fetch(provider, timeout_s: float) -> LiveReading:
    """One blocking GET and parse, all within ``timeout_s``. Raises LiveFailure for every way it can go wrong."""
    import http.client
    import urllib.error
    import urllib.request

    url, headers = provider.request()
    origin = _trusted_origin(url)
    deadline = _Deadline(timeout_s)
    try:
        with _opener(origin, deadline).open(urllib.request.Request(url, headers=headers), timeout=timeout_s) as response:
            if _origin(response.geturl()) != origin:  # never expected: the redirect handler refuses first
                raise LiveFailure("redirect", "the answer came from another origin")
            body = _read_capped(response)
    except urllib.error.HTTPError as err:  # before URLError: it is one
        failure = _http_failure(provider, err.code, err.headers.get("Retry-After") if err.headers else None)
        err.close()
        raise failure from None
    except (urllib.error.URLError, TimeoutError, OSError, http.client.HTTPException) as err:
        # A connect timeout comes wrapped in URLError; a read timeout comes bare; a cut as a closed connection.
        reason = getattr(err, "reason", err)
        if deadline.expired or isinstance(reason, TimeoutError):
            raise LiveFailure("timeout", f"no answer within {timeout_s:g} s") from None
        raise LiveFailure("unreachable", f"cannot connect: {reason}") from None
    finally:
        deadline.close()
    if deadline.expired:  # a cut can also end a body of unknown length early, without an error
        raise LiveFailure("timeout", f"no answer within {timeout_s:g} s")
    try:
        payload = json.loads(body)
    except ValueError:
        raise LiveFailure("bad-response", "the answer is not JSON") from None
    return provider.parse(payload)


class LiveIntensity:
    """A cached live intensity, refreshed in the background, that never makes its caller wait.

    ``ttl_s``: how long a good reading is fresh. ``timeout_s``: the deadline of each fetch, all of it.
    ``retry_s``: the wait after a failed fetch. ``rate_limit_backoff_s``: the least wait after HTTP 429
    (longer if the server's Retry-After says so). ``max_age_s``: past this a reading no live fetch
    could refresh is dropped, and the embedded average applies again.
    """

    def __init__(
        self,
        provider,
        *,
        ttl_s: float = 900.0,
        timeout_s: float = 3.0,
        retry_s: float = 60.0,
        rate_limit_backoff_s: float = 300.0,
        max_age_s: float = 3600.0,
    ):
        self.provider = provider
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        self.rate_limit_backoff_s = rate_limit_backoff_s
        self.max_age_s = max_age_s
        self._reading_t = 0.0  # monotonic time of the last good reading
        self._lock = threading.Lock()
        self._reading: LiveReading | None = None
        self._next_fetch = 0.0  # monotonic time before which no fetch starts (fresh cache, or back-off)
        self._thread: threading.Thread | None = None
        self._closed = False
        self.failure: LiveFailure | None = None  # why the last fetch failed; None after a good one

    def current(self) -> LiveReading | None:
        """The last good reading (None before the first); starts a background refresh when one is due."""
        with self._lock:
            due = time.monotonic() >= self._next_fetch
            if due and self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._fetch, name="greenjupyter-live", daemon=True)
                self._thread.start()
            if self._reading is not None and time.monotonic() - self._reading_t > self.max_age_s:
                return None
            return self._reading

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for an in-flight fetch (tests, CLI); True when none is left running."""
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def close(self) -> None:
        """Start no more fetches. An in-flight one is short and finishes on its own."""
        with self._lock:
            self._closed = True

    def _fetch(self) -> None:
        failure = reading = None
        try:
            reading = fetch(self.provider, self.timeout_s)
        except LiveFailure as err:
            failure = err
        except Exception as err:  # a bug must neither pass silently nor escape the thread
            failure = LiveFailure("error", f"unexpected {type(err).__name__}")
        delay = self.ttl_s if failure is None else self._delay(failure)
        with self._lock:
            previous = self._reading
            if reading is not None:
                self._reading, self._reading_t = reading, time.monotonic()
            self._next_fetch = time.monotonic() + delay
            self._thread = None
            self.failure = failure
        if failure is not None:
            self._tell(failure, previous, delay)

    def _delay(self, failure: LiveFailure) -> float:
        if failure.kind == "rate-limited":
            return max(self.rate_limit_backoff_s, failure.retry_after_s or 0.0)
        return self.retry_s

    def _tell(self, failure: LiveFailure, previous: LiveReading | None, delay: float) -> None:
        if previous is not None:
            fallback = f"keeping the last live value ({previous.g_per_kwh:g} g/kWh)"
        else:
            fallback = f"using the embedded average for {self.provider.zone}"
        later = f"; next try in {delay:g} s" if failure.kind == "rate-limited" else ""
        what = f"live carbon intensity from {self.provider.name} unavailable ({failure.detail}); {fallback}{later}"
        notice(f"live:{self.provider.key}:{failure.kind}", what)


def make_live(provider: str, zone: str, *, base: str | None = None, **kwargs) -> LiveIntensity:
    """A LiveIntensity for ``provider`` ("electricitymaps" or "ukci") and ``zone``; kwargs go to LiveIntensity."""
    cls = PROVIDERS.get(str(provider).strip().lower())
    if cls is None:
        raise ConfigError(f"unknown live intensity provider {provider!r}; accepted: {', '.join(PROVIDERS)}")
    return LiveIntensity(cls(zone, base), **kwargs)
