"""Live grid intensity against a real HTTP server on 127.0.0.1 that answers like each API, or fails."""

import json
import socket
import subprocess
import sys
import threading
import time
from datetime import timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from greenjupyter.carbon import live
from greenjupyter.errors import ConfigError

TOKEN = "tok-SECRET-7f3a9c"
TTL = 0.1  # seconds a good reading stays fresh in the tests that go on to fail
EM_OK = {"zone": "FR", "carbonIntensity": 56, "datetime": "2024-05-01T10:00:00.000Z", "isEstimated": False}
UK_OK = {"data": [{"from": "2024-05-01T09:30Z", "to": "2024-05-01T10:00Z", "intensity": {"forecast": 120, "actual": 131, "index": "moderate"}}]}


class Api:
    """What the local server answers (per test) and what it received."""

    def __init__(self):
        self.em = (200, EM_OK, {})  # (status, body: dict -> JSON or bytes, extra headers)
        self.uk = (200, UK_OK, {})
        self.slow = False  # hold the answer until released, far past the client's timeout
        self.release = threading.Event()
        self.requests = []  # (path, headers)
        self.base = ""


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        api = self.server.api
        api.requests.append((self.path, self.headers))
        status, body, headers = api.em if self.path.startswith("/v3/") else api.uk
        if api.slow:
            api.release.wait(3)
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the client gave up (slow case)
            pass

    def log_message(self, *args):
        pass


class Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass


@pytest.fixture
def api(monkeypatch):
    # Never through a proxy: the server is local.
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")
    for name in live.TOKEN_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ELECTRICITYMAPS_TOKEN", TOKEN)
    state = Api()
    server = Server(("127.0.0.1", 0), Handler)
    server.api = state
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state
    state.release.set()
    server.shutdown()
    server.server_close()
    thread.join(2)


@pytest.fixture
def said(monkeypatch):
    """Notices live.py gives, as (key, message); still printed through the real notice()."""
    seen = []
    real = live.notice

    def record(key, message):
        if real(key, message):
            seen.append((key, message))

    monkeypatch.setattr(live, "notice", record)
    return seen


def refused_base():
    """A local port with nothing listening."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def fetched(intensity):
    """Kick a fetch, wait for it, return current(); and wait for any fetch that call started in turn."""
    intensity.current()
    assert intensity.wait(3)
    reading = intensity.current()
    assert intensity.wait(3)
    return reading


def stale(intensity, ttl_s=TTL):
    """Fetch a good reading with a short ttl, then let it go stale."""
    reading = fetched(intensity)
    time.sleep(ttl_s + 0.01)
    return reading


def test_electricitymaps_reading_and_token_header(api, said, capsys):
    intensity = live.make_live("electricitymaps", "FR", base=api.base, timeout_s=0.3)
    assert intensity.current() is None  # nothing yet; the fetch runs in the background
    reading = fetched(intensity)
    assert reading.g_per_kwh == 56.0 and isinstance(reading.g_per_kwh, float)
    assert (reading.provider, reading.zone, reading.basis) == ("Electricity Maps", "FR", "lifecycle")
    assert reading.observed_at == "2024-05-01T10:00:00.000Z"
    assert reading.fetched_at.tzinfo == timezone.utc
    [(path, headers)] = api.requests
    assert path == "/v3/carbon-intensity/latest?zone=FR"
    assert headers.get("auth-token") == TOKEN
    # The token lives only in the request: not on the objects, not in anything said.
    assert TOKEN not in repr(vars(intensity)) + repr(vars(intensity.provider)) + repr(reading)
    out = capsys.readouterr()
    assert TOKEN not in out.out + out.err and not said


def test_second_token_variable(api, monkeypatch):
    monkeypatch.delenv("ELECTRICITYMAPS_TOKEN")
    monkeypatch.setenv("GREENJUPYTER_ELECTRICITYMAPS_TOKEN", TOKEN)
    assert fetched(live.make_live("electricitymaps", "DE", base=api.base)).g_per_kwh == 56.0
    assert api.requests[0][1].get("auth-token") == TOKEN


def test_missing_token_says_which_variable_and_sends_nothing(api, said, monkeypatch):
    monkeypatch.delenv("ELECTRICITYMAPS_TOKEN")
    assert fetched(live.make_live("electricitymaps", "FR", base=api.base)) is None
    assert api.requests == []
    [(key, message)] = said
    assert key == "live:electricitymaps:token-missing"
    assert "ELECTRICITYMAPS_TOKEN" in message and "embedded average for FR" in message


@pytest.mark.parametrize(
    ("actual", "value", "which"),
    [(131, 131.0, "actual"), (None, 120.0, "forecast")],
)
def test_uk_actual_else_forecast(api, actual, value, which):
    api.uk = (200, {"data": [{"from": "2024-05-01T09:30Z", "intensity": {"forecast": 120, "actual": actual}}]}, {})
    reading = fetched(live.make_live("ukci", "GB", base=api.base))
    assert (reading.g_per_kwh, reading.zone, reading.provider) == (value, "GB", "UK Carbon Intensity API")
    assert reading.basis == f"direct emissions only, {which}"
    assert reading.observed_at == "2024-05-01T09:30Z"
    [(path, headers)] = api.requests
    assert path == "/intensity" and headers.get("auth-token") is None


def test_current_never_waits_and_one_fetch_at_a_time(api, said):
    intensity = live.make_live("electricitymaps", "FR", base=api.base, ttl_s=TTL, retry_s=0.0, timeout_s=0.3)
    good = stale(intensity)
    api.slow = True
    slowest = 0.0
    threads = set()
    deadline = time.monotonic() + 0.15  # well inside the 0.3 s timeout: the one fetch still hangs
    while time.monotonic() < deadline:
        t0 = time.perf_counter()
        assert intensity.current() is good
        slowest = max(slowest, time.perf_counter() - t0)
        threads.update(t for t in threading.enumerate() if t.name == "greenjupyter-live")
        time.sleep(0.001)
    assert slowest < 0.02, f"current() took {slowest * 1000:.1f} ms"
    assert len(threads) == 1 and len(api.requests) == 2  # one hanging fetch, not one per call
    assert intensity.wait(3)
    assert intensity.current() is good
    assert [key for key, _ in said] == ["live:electricitymaps:timeout"]


def test_fresh_reading_is_not_fetched_again_until_ttl(api):
    intensity = live.make_live("electricitymaps", "FR", base=api.base, ttl_s=0.3)
    assert fetched(intensity).g_per_kwh == 56.0
    for _ in range(20):
        intensity.current()
    assert len(api.requests) == 1
    api.em = (200, {**EM_OK, "carbonIntensity": 60.5}, {})
    time.sleep(0.35)
    assert fetched(intensity).g_per_kwh == 60.5
    assert len(api.requests) == 2


FAILURES = {
    "401": ((401, {"message": "bad token"}, {}), "token-rejected", "HTTP 401: token rejected"),
    "403": ((403, b"", {}), "token-rejected", "HTTP 403: token rejected"),
    "500": ((500, b"oops", {}), "http-error", "HTTP 500"),
    "garbage": ((200, b"<html>not json", {}), "bad-response", "not JSON"),
    "no-field": ((200, {"zone": "FR"}, {}), "bad-response", "carbonIntensity missing"),
    "negative": ((200, {**EM_OK, "carbonIntensity": -5}, {}), "bad-response", "-5"),
    "string": ((200, {**EM_OK, "carbonIntensity": "56"}, {}), "bad-response", "not a number"),
    "slow": (None, "timeout", "no answer within 0.3 s"),
    "refused": (None, "unreachable", "cannot connect"),
}


@pytest.mark.parametrize("case", FAILURES)
def test_failure_keeps_last_value_and_says_so_once(api, said, capsys, case):
    answer, kind, words = FAILURES[case]
    intensity = live.make_live("electricitymaps", "FR", base=api.base, ttl_s=TTL, retry_s=0.0, timeout_s=0.3)
    good = stale(intensity)
    if case == "slow":
        api.slow = True
    elif case == "refused":
        intensity.provider.base = refused_base()
    else:
        api.em = answer
    for _ in range(2):  # four failed fetches (retry_s=0), one notice
        assert fetched(intensity) is good
    assert case == "refused" or len(api.requests) == 5
    [(key, message)] = said
    assert key == f"live:electricitymaps:{kind}"
    assert words in message and "Electricity Maps" in message and "keeping the last live value (56 g/kWh)" in message
    out = capsys.readouterr()
    assert TOKEN not in message + out.out + out.err


def test_rate_limit_backs_off(api, said):
    intensity = live.make_live(
        "electricitymaps", "FR", base=api.base, ttl_s=TTL, retry_s=0.0, rate_limit_backoff_s=0.4
    )
    good = stale(intensity)
    api.em = (429, b"", {})
    assert fetched(intensity) is good
    asked = len(api.requests)
    deadline = time.monotonic() + 0.25
    while time.monotonic() < deadline:  # inside the back-off: no request at all
        assert intensity.current() is good
        time.sleep(0.01)
    assert len(api.requests) == asked
    time.sleep(0.2)
    api.em = (200, EM_OK, {})
    assert fetched(intensity) is not good and len(api.requests) == asked + 1
    [(key, message)] = said
    assert key == "live:electricitymaps:rate-limited" and "HTTP 429: rate limited" in message and "0.4 s" in message


def test_rate_limit_honours_longer_retry_after(api):
    intensity = live.make_live("electricitymaps", "FR", base=api.base, ttl_s=0.0, retry_s=0.0, rate_limit_backoff_s=0.0)
    api.em = (429, b"", {"Retry-After": "30"})
    assert fetched(intensity) is None
    intensity.current()
    assert intensity.wait(1) and len(api.requests) == 1


def test_close_stops_new_fetches(api):
    intensity = live.make_live("electricitymaps", "FR", base=api.base, ttl_s=TTL)
    good = stale(intensity)
    intensity.close()
    assert fetched(intensity) is good
    assert len(api.requests) == 1


def test_make_live_rejects_unknown_provider_and_non_gb_uk():
    with pytest.raises(ConfigError) as caught:
        live.make_live("watttime", "CAISO")
    assert "'watttime'" in str(caught.value) and "electricitymaps" in str(caught.value) and "ukci" in str(caught.value)
    with pytest.raises(ConfigError, match="Great Britain"):
        live.make_live("ukci", "FR")
    assert live.make_live(" UKCI ", "gb").provider.zone == "GB"


def test_import_loads_no_network_code():
    code = "import sys, greenjupyter.carbon.live; print('urllib.request' in sys.modules, 'http.client' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]


def test_a_reading_too_old_to_trust_gives_way_to_the_embedded_average(api):
    intensity = live.make_live("electricitymaps", "FR", base=api.base, ttl_s=TTL, retry_s=10.0, max_age_s=0.3)
    assert fetched(intensity).g_per_kwh == 56.0
    api.em = (500, b"down", {})
    time.sleep(0.35)
    assert intensity.current() is None  # no fetch could refresh it in time
