"""Live grid intensity against a real HTTP server on 127.0.0.1 that answers like each API, or fails."""

import contextlib
import json
import os
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
        self.paths = {}  # exact path -> (status, body, headers), before em/uk
        self.raw = None  # a function(handler) that writes the whole answer itself, for hostile servers


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        api = self.server.api
        api.requests.append((self.path, self.headers))
        if api.raw is not None:
            try:
                api.raw(self)
            except OSError:  # the client cut the connection, as it should
                pass
            return
        status, body, headers = api.paths.get(self.path) or (api.em if self.path.startswith("/v3/") else api.uk)
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


@contextlib.contextmanager
def serving():
    """A local server on its own port of 127.0.0.1; two of them stand for two hosts."""
    state = Api()
    server = Server(("127.0.0.1", 0), Handler)
    server.api = state
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    state.server = server
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(2)


@pytest.fixture
def api(monkeypatch):
    # Never through a proxy: the server is local.
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")
    for name in live.TOKEN_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ELECTRICITYMAPS_TOKEN", TOKEN)
    with serving() as state:
        yield state


@pytest.fixture
def other():
    """A second server: another origin (same address, another port)."""
    with serving() as state:
        yield state


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
    intensity = live.make_live("electricitymaps", "FR", base=api.base)
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
    # 1 s covers the whole good fetch on a busy machine (the deadline includes connecting).
    intensity = live.make_live("electricitymaps", "FR", base=api.base, ttl_s=TTL, retry_s=0.0, timeout_s=1.0)
    good = stale(intensity)
    api.slow = True
    slowest = 0.0
    threads = set()
    deadline = time.monotonic() + 0.3  # well inside the 1 s timeout: the one fetch still hangs
    while time.monotonic() < deadline:
        t0 = time.perf_counter()
        assert intensity.current() is good
        slowest = max(slowest, time.perf_counter() - t0)
        threads.update(t for t in threading.enumerate() if t.name == "greenjupyter-live")
        time.sleep(0.001)
    # Waiting for the fetch would take up to 1 s; 0.1 s is left for a busy machine's scheduling.
    assert slowest < 0.1, f"current() took {slowest * 1000:.1f} ms"
    assert len(threads) == 1 and len(api.requests) == 2  # one hanging fetch, not one per call
    assert intensity.wait(3)
    intensity.close()  # else current() starts one more fetch (retry_s=0) that outlives the server
    assert intensity.current() is good
    assert intensity.wait(3) and len(api.requests) == 2
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
    "negative": ((200, {**EM_OK, "carbonIntensity": -5}, {}), "implausible", "-5"),
    "string": ((200, {**EM_OK, "carbonIntensity": "56"}, {}), "bad-response", "not a number"),
    "slow": (None, "timeout", "no answer within 0.5 s"),
    "refused": (None, "unreachable", "cannot connect"),
}


@pytest.mark.parametrize("case", FAILURES)
def test_failure_keeps_last_value_and_says_so_once(api, said, capsys, case):
    answer, kind, words = FAILURES[case]
    # The deadline covers the whole fetch, connecting included: 2 s for one that should answer on a busy
    # machine, 0.5 s (far below the server's 3 s hold) for the one that must time out.
    timeout_s = 0.5 if case == "slow" else 2.0
    intensity = live.make_live("electricitymaps", "FR", base=api.base, ttl_s=TTL, retry_s=0.0, timeout_s=timeout_s)
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


def test_a_reading_too_old_to_trust_gives_way_to_the_embedded_average(api, said, capsys):
    intensity = live.make_live("electricitymaps", "FR", base=api.base, ttl_s=TTL, retry_s=10.0, max_age_s=0.3)
    assert fetched(intensity).g_per_kwh == 56.0
    api.em = (500, b"down", {})
    time.sleep(0.35)
    assert intensity.current() is None  # no fetch could refresh it in time
    # That call started a fetch: it ends here, with its notice, not after the server is gone.
    assert intensity.wait(3)
    [(key, message)] = said
    assert key == "live:electricitymaps:http-error" and "HTTP 500" in message
    assert message in capsys.readouterr().err


# --- a hostile or broken server ---------------------------------------------------------------


def failure_of(provider, timeout_s=3.0):
    """The LiveFailure one synchronous fetch ends with."""
    with pytest.raises(live.LiveFailure) as caught:
        live.fetch(provider, timeout_s)
    return caught.value


def test_a_redirect_to_another_origin_gets_neither_the_token_nor_trust(api, other, said, capsys):
    other.em = (200, {**EM_OK, "carbonIntensity": 999}, {})
    api.em = (302, b"", {"Location": f"{other.base}/v3/carbon-intensity/latest?zone=FR"})
    intensity = live.make_live("electricitymaps", "FR", base=api.base)
    assert fetched(intensity) is None  # the other host's 999 is never used
    assert all(headers.get("auth-token") is None for _, headers in other.requests)
    [(key, message)] = said
    assert key == "live:electricitymaps:redirect" and "HTTP 302" in message and "embedded average for FR" in message
    # localhost on the same port is still another origin: names are not resolved to decide.
    api.em = (301, b"", {"Location": api.base.replace("127.0.0.1", "localhost") + "/v3/x"})
    assert failure_of(intensity.provider).kind == "redirect"
    assert TOKEN not in capsys.readouterr().err


def test_a_redirect_within_the_origin_is_followed(api):
    api.em = (302, b"", {"Location": "/v3/moved?zone=FR"})
    api.paths["/v3/moved?zone=FR"] = (200, {**EM_OK, "carbonIntensity": 42}, {})
    reading = live.fetch(live.ElectricityMaps("FR", api.base), 3.0)
    assert reading.g_per_kwh == 42.0
    assert [path for path, _ in api.requests] == ["/v3/carbon-intensity/latest?zone=FR", "/v3/moved?zone=FR"]


@pytest.mark.parametrize(
    "base",
    ["http://198.51.100.7", "http://api.electricitymaps.com", "file:///etc", "ftp://127.0.0.1", "http://[::ffff:198.51.100.7]"],
)
def test_the_token_is_never_sent_over_plain_http(base, api, said):
    # No connection is tried at all: 198.51.100.0/24 is a documentation range that would hang.
    t0 = time.monotonic()
    failure = failure_of(live.ElectricityMaps("FR", base))
    assert failure.kind == "insecure" and "https" in failure.detail and time.monotonic() - t0 < 0.5
    intensity = live.make_live("electricitymaps", "FR", base=base)
    assert fetched(intensity) is None
    [(key, message)] = said
    assert key == "live:electricitymaps:insecure" and TOKEN not in message


def test_plain_http_is_allowed_to_loopback_only(api):
    # What the other tests rely on: http to 127.0.0.0/8 or [::1] never leaves the machine.
    assert live.fetch(live.ElectricityMaps("FR", api.base), 3.0).g_per_kwh == 56.0
    assert live.fetch(live.UKCarbonIntensity("GB", api.base), 3.0).g_per_kwh == 131.0
    assert live.is_loopback("127.0.0.2") and live.is_loopback("::1") and not live.is_loopback("localhost")


def test_uk_over_plain_http_to_another_host_is_refused():
    assert failure_of(live.UKCarbonIntensity("GB", "http://198.51.100.7")).kind == "insecure"


def flood(chunks: int, declared: bool):
    """A raw answer of ``chunks`` MiB, with or without a Content-Length; stops when the client hangs up."""
    def answer(handler):
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        if declared:
            handler.send_header("Content-Length", str(chunks << 20))
        handler.end_headers()
        block = b'{"carbonIntensity": 56, "pad": "' + b"x" * ((1 << 20) - 33)
        for _ in range(chunks):
            handler.wfile.write(block)
    return answer


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "no-length"])
def test_a_50_mb_answer_is_refused_after_at_most_1_mib(api, said, declared):
    api.raw = flood(50, declared)
    failure = failure_of(live.ElectricityMaps("FR", api.base))
    assert failure.kind == "too-large" and "1,048,576 bytes" in failure.detail
    if declared:
        assert "52,428,800" in failure.detail
    intensity = live.make_live("electricitymaps", "FR", base=api.base)
    assert fetched(intensity) is None
    [(key, _)] = said
    assert key == "live:electricitymaps:too-large"


def drip(where: str):
    """A server that sends one byte a second, in its status line or in its body, for up to 60 s."""
    def answer(handler):
        head = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: 60\r\n\r\n"
        body = b'{"carbonIntensity": 56' + b" " * 37 + b"}"
        data = head + body if where == "status line" else body
        if where == "body":
            handler.wfile.write(head)
        for i in range(len(data)):
            handler.wfile.write(data[i : i + 1])
            handler.wfile.flush()
            if handler.server.api.release.wait(1.0):  # the test is over
                return
    return answer


# The deadline cuts the connection at timeout_s; what remains is waking a blocked thread and
# unwinding, milliseconds even on a busy 2-core machine, so 1 s of margin is generous, and far
# below the 60 s the drip would last with a per-read timeout (each byte arrives within 1 s < 2 s).
DRIP_TIMEOUT_S = 2.0
DRIP_MARGIN_S = 1.0


@pytest.mark.parametrize("where", ["status line", "body"])
def test_one_deadline_per_fetch_even_if_bytes_keep_trickling(api, where):
    api.raw = drip(where)
    t0 = time.monotonic()
    failure = failure_of(live.ElectricityMaps("FR", api.base), DRIP_TIMEOUT_S)
    took = time.monotonic() - t0
    assert failure.kind == "timeout" and failure.detail == "no answer within 2 s"
    assert took < DRIP_TIMEOUT_S + DRIP_MARGIN_S, f"gave up after {took:.2f} s"


def open_sockets():
    return sum("socket:" in os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd") if fd.isdigit()
               and os.path.exists(f"/proc/self/fd/{fd}"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts sockets through /proc")
def test_the_deadline_leaves_no_thread_or_connection_behind(api):
    before = {t.ident for t in threading.enumerate()}
    sockets = open_sockets()
    api.em = (200, EM_OK, {})
    for _ in range(3):
        live.fetch(live.ElectricityMaps("FR", api.base), 3.0)
    api.raw = drip("body")
    assert failure_of(live.ElectricityMaps("FR", api.base), 0.3).kind == "timeout"

    def left():
        return [t.name for t in threading.enumerate() if t.ident not in before and t.name.startswith("greenjupyter")]

    # A cancelled timer's thread ends at once; the server's side of the drip notices the cut at its
    # next byte, within 1 s. 3 s allow for a busy machine.
    deadline = time.monotonic() + 3
    while (left() or open_sockets() > sockets) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert left() == [] and open_sockets() <= sockets


EM_BODY = b'{"zone": "FR", "carbonIntensity": %s}'
UK_BODY = b'{"data": [{"from": "2024-05-01T09:30Z", "intensity": {"forecast": 100, "actual": %s}}]}'
IMPLAUSIBLE = {
    "NaN": (b"NaN", "implausible", "nan"),
    "Infinity": (b"Infinity", "implausible", "inf"),
    "1e308": (b"1e308", "implausible", "1e+308"),
    "1e999": (b"1e999", "implausible", "inf"),
    "huge-int": (b"1" + b"0" * 400, "implausible", "inf"),
    "negative": (b"-5", "implausible", "-5"),
    "above-2000": (b"2000.5", "implausible", "2000.5"),
    "string": (b'"12"', "bad-response", "not a number"),
    "true": (b"true", "bad-response", "not a number"),
}


@pytest.mark.parametrize("provider", ["electricitymaps", "ukci"])
@pytest.mark.parametrize("case", IMPLAUSIBLE)
def test_implausible_values_are_refused_with_one_notice(api, said, provider, case):
    value, kind, shown = IMPLAUSIBLE[case]
    body = (EM_BODY if provider == "electricitymaps" else UK_BODY) % value
    api.em = api.uk = (200, body, {})
    intensity = live.make_live(provider, "FR" if provider == "electricitymaps" else "GB", base=api.base, retry_s=0.0)
    for _ in range(2):
        assert fetched(intensity) is None  # the embedded figure stays in force
    [(key, message)] = said
    assert key == f"live:{provider}:{kind}" and shown in message and "embedded average" in message
    if kind == "implausible":
        assert "accepted: 0 to 2,000 g/kWh" in message


@pytest.mark.parametrize("value", [0, 2000, 0.5])
def test_the_bounds_themselves_are_plausible(api, value):
    api.em = (200, {**EM_OK, "carbonIntensity": value}, {})
    assert live.fetch(live.ElectricityMaps("FR", api.base), 3.0).g_per_kwh == value


@pytest.fixture
def tls(tmp_path, monkeypatch, api):
    """The local server behind TLS, with a self-signed certificate for 127.0.0.1 trusted through SSL_CERT_FILE."""
    import shutil
    import ssl

    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with serving() as state:
        server_socket = state.server.socket
        state.server.socket = context.wrap_socket(server_socket, server_side=True)
        state.base = state.base.replace("http://", "https://")
        yield state


def test_https_answers_and_a_redirect_from_https_to_http_is_another_origin(tls, api):
    reading = live.fetch(live.ElectricityMaps("FR", tls.base), 3.0)
    assert reading.g_per_kwh == 56.0 and tls.requests[0][1].get("auth-token") == TOKEN
    # Same address, other scheme and port: the token must not follow, even to loopback.
    tls.em = (302, b"", {"Location": f"{api.base}/v3/carbon-intensity/latest?zone=FR"})
    assert failure_of(live.ElectricityMaps("FR", tls.base)).kind == "redirect"
    assert api.requests == []


def test_https_keeps_the_one_deadline(tls):
    tls.raw = drip("body")
    t0 = time.monotonic()
    assert failure_of(live.ElectricityMaps("FR", tls.base), DRIP_TIMEOUT_S).kind == "timeout"
    assert time.monotonic() - t0 < DRIP_TIMEOUT_S + DRIP_MARGIN_S
