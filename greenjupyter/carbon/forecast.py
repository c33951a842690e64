"""The cleaner hour: when, in the next 48 hours, a job of a given length would emit least.

From a live provider's forecast of the grid's intensity: the UK Carbon Intensity API's
``/intensity/{from}/fw48h`` (Great Britain, half-hour slots, no key) or Electricity Maps'
``/v3/carbon-intensity/forecast`` (a token). The request goes through ``live.fetch``, with all
its guards (https only, one origin, one deadline, a size cap, plausible values only); every
slot of the answer is checked, and one bad slot refuses the whole forecast. Forecasts are
cached per (provider, zone) and fetched on a daemon thread; a caller waits at most a bound.

The best start is that of the window of the job's length with the lowest time-weighted mean
intensity, among "now" and every slot start after it; ties go to the earliest.
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_right
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from ..errors import ConfigError, GreenJupyterError
from ..format import duration, short_repr
from . import live

MAX_HOURS = 48.0  # the longest job, and how far ahead a window may end
MAX_SLOTS = 1000  # 48 h in 5-minute slots is 576: more is not a forecast we need to read
MAX_LEAD = timedelta(hours=1)  # a forecast may begin at most this long after now (the next hour's slot)
MAX_DISTANCE = timedelta(days=366)  # how far from now a forecast's time may be
TTL_S = 1800.0  # providers publish new forecasts every 30 to 60 minutes
HOURS_ACCEPTED = f"a number of hours above 0, up to {MAX_HOURS:g} (e.g. --hours 4 or --hours 0.5)"
TURN_ON = ("turn on a live provider: %carbon config live_intensity=ukci (Great Britain, no key), or "
           f"live_intensity=electricitymaps with a token in {live.TOKEN_VARS[0]}")


class NoForecast(GreenJupyterError):
    """Why no best start can be given now; the message is one plain sentence for the user."""


@dataclass(frozen=True)
class Slot:
    start: datetime  # UTC
    end: datetime
    g_per_kwh: float


@dataclass(frozen=True)
class Forecast:
    provider: str  # human name
    zone: str
    basis: str
    fetched_at: datetime  # UTC
    slots: tuple[Slot, ...]  # sorted, not overlapping (there may be gaps)


@dataclass(frozen=True)
class CleanerStart:
    """The lowest-carbon start for a job of ``hours``, and what starting now would mean instead."""

    hours: float
    start: datetime  # UTC
    mean_g_per_kwh: float  # the forecast's time-weighted mean over the job, from ``start``
    now: datetime  # UTC: the earliest start the forecast covers (now, or its first slot if a little later)
    now_mean_g_per_kwh: float
    saving_pct: float  # of the job's CO2e, against starting now (0 when now is the best)
    until: datetime  # UTC: where the forecast's slots end (after the 48 h bound: that bound)
    forecast: Forecast

    def text(self) -> str:
        """Return the advice, times in this machine's time zone."""
        f = self.forecast
        lines = [f"greenjupyter forecast: the cleanest start for a {self.hours:g} h job on {f.zone}, from "
                 f"{f.provider} ({f.basis}, fetched {f.fetched_at:%H:%M} UTC)"]
        if self.start == self.now:
            lines.append(f"  start now ({_local(self.now)}): its mean, {self.mean_g_per_kwh:.4g} g/kWh, is already "
                         f"the lowest in the forecast up to {_local(self.until)}")
            return "\n".join(lines)
        lines += [
            f"  cleanest start  {_local(self.start)}  mean {self.mean_g_per_kwh:.4g} g/kWh",
            f"  starting now    {_local(self.now)}  mean {self.now_mean_g_per_kwh:.4g} g/kWh",
            f"  waiting {duration((self.start - self.now).total_seconds())} saves {self.saving_pct:.1f}% of the "
            f"job's CO2e (same energy); forecast up to {_local(self.until)}",
        ]
        return "\n".join(lines)


def _local(moment: datetime) -> str:
    return f"{moment.astimezone():%a %d %b %H:%M %Z}"


def parse_hours(value) -> float:
    """Return ``value`` (text or a number) as hours above 0 up to MAX_HOURS, or ConfigError naming it."""
    try:
        hours = float(value)
    except (TypeError, ValueError, OverflowError):
        hours = math.nan
    if not (math.isfinite(hours) and 0 < hours <= MAX_HOURS):
        raise ConfigError(f"--hours {short_repr(value)} is refused; accepted: {HOURS_ACCEPTED}")
    return hours


# --- the providers' forecast answers ----------------------------------------------------------


def _bad(detail: str) -> live.LiveFailure:
    return live.LiveFailure("bad-response", detail)


def _time(value, field: str) -> datetime:
    """An ISO 8601 time with its offset (``Z`` too, which Python 3.10 does not read), as UTC."""
    if not isinstance(value, str):
        raise _bad(f"{field} missing or not a time")
    text = value.strip()
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            raise _bad(f"{field} = {short_repr(value)} has no time zone")
        moment = moment.astimezone(timezone.utc)
    except (ValueError, OverflowError):  # not a time, or one at the calendar's edge
        raise _bad(f"{field} = {short_repr(value)} is not an ISO 8601 time") from None
    if abs(moment - live._now()) > MAX_DISTANCE:  # a lie, and arithmetic on it could leave the calendar
        raise _bad(f"{field} = {short_repr(value)} is more than a year from now")
    return moment


def _entries(payload, key: str) -> list:
    entries = payload.get(key) if isinstance(payload, dict) else None
    if not isinstance(entries, list) or not entries:
        raise _bad(f"no {key} list in the answer")
    if len(entries) > MAX_SLOTS:
        raise _bad(f"{len(entries):,} forecast entries refused (at most {MAX_SLOTS:,})")
    if not all(isinstance(e, dict) for e in entries):
        raise _bad(f"{key} holds something that is not an object")
    return entries


def _checked(slots: list[Slot]) -> tuple[Slot, ...]:
    """The slots in time order; LiveFailure when one ends before it starts or two overlap."""
    slots = sorted(slots, key=lambda s: s.start)
    for before, after in zip([None, *slots], slots):
        if after.end <= after.start:
            raise _bad(f"a forecast slot from {after.start:%Y-%m-%d %H:%M} UTC ends before it starts")
        if before is not None and after.start < before.end:
            raise _bad(f"forecast slots overlap at {after.start:%Y-%m-%d %H:%M} UTC")
    return tuple(slots)


class UKForecast(live.UKCarbonIntensity):
    """``GET {base}/intensity/{from}/fw48h``: 48 h of half-hour forecasts for Great Britain, no key."""

    def request(self) -> tuple[str, dict[str, str]]:
        # From the half-hour before the current one, so that the answer surely covers now.
        now = live._now()
        start = now.replace(minute=now.minute // 30 * 30, second=0, microsecond=0) - timedelta(minutes=30)
        return f"{self.base}/intensity/{start:%Y-%m-%dT%H:%MZ}/fw48h", {"Accept": "application/json"}

    def parse(self, payload) -> Forecast:
        slots = []
        for i, entry in enumerate(_entries(payload, "data")):
            intensity = entry.get("intensity")
            if not isinstance(intensity, dict):
                raise _bad(f"data[{i}].intensity missing or not an object")
            value = live._intensity(intensity.get("forecast"), f"data[{i}].intensity.forecast")
            slots.append(Slot(_time(entry.get("from"), f"data[{i}].from"), _time(entry.get("to"), f"data[{i}].to"), value))
        return Forecast(self.name, self.zone, "direct emissions only", live._now(), _checked(slots))


class ElectricityMapsForecast(live.ElectricityMaps):
    """``GET {base}/v3/carbon-intensity/forecast?zone=Z`` with the token: hourly lifecycle forecasts."""

    path = "/v3/carbon-intensity/forecast"

    def parse(self, payload) -> Forecast:
        points = []
        for i, entry in enumerate(_entries(payload, "forecast")):
            value = live._intensity(entry.get("carbonIntensity"), f"forecast[{i}].carbonIntensity")
            points.append((_time(entry.get("datetime"), f"forecast[{i}].datetime"), value))
        points.sort(key=lambda p: p[0])
        # Each value holds until the next one; the last for as long as the one before it (an hour alone).
        ends = [p[0] for p in points[1:]]
        ends.append(points[-1][0] + (points[-1][0] - points[-2][0] if len(points) > 1 else timedelta(hours=1)))
        slots = [Slot(start, end, value) for (start, value), end in zip(points, ends)]
        return Forecast(self.name, self.zone, "lifecycle", live._now(), _checked(slots))


PROVIDERS = {UKForecast.key: UKForecast, ElectricityMapsForecast.key: ElectricityMapsForecast}


# --- the best window --------------------------------------------------------------------------


def cleaner_start(forecast: Forecast, hours: float, now: datetime) -> CleanerStart:
    """Return the start, from ``now`` on, of the job's window with the lowest mean forecast intensity."""
    length = timedelta(hours=hours)
    slots = [s for s in forecast.slots if s.end > now]
    if not slots:
        raise NoForecast(f"the forecast from {forecast.provider} ends before now ({_local(forecast.slots[-1].end)}); "
                         "run %carbon forecast again later")
    earliest = max(now, slots[0].start)
    if earliest - now > MAX_LEAD:
        raise NoForecast(f"the forecast from {forecast.provider} begins only at {_local(earliest)}; "
                         "run %carbon forecast again later")
    until = min(_covered_until(slots, earliest), now + timedelta(hours=MAX_HOURS))
    if earliest + length > until:
        fits = max((until - earliest).total_seconds() / 3600, 0.0)
        raise NoForecast(f"a {hours:g} h job does not fit in the forecast, which covers the next {fits:.1f} h "
                         f"(up to {_local(until)}); give --hours {math.floor(fits * 2) / 2:g} or less")
    index = [s.start for s in slots]
    starts = [earliest] + [s.start for s in slots if earliest < s.start and s.start + length <= until]
    means = [(_mean(slots, index, start, start + length), start) for start in starts]
    best_mean, best = min(means, key=lambda m: m[0])  # min keeps the first (earliest) of equal means
    now_mean = means[0][0]
    saving = (now_mean - best_mean) / now_mean * 100 if now_mean > 0 else 0.0
    return CleanerStart(hours, best, best_mean, earliest, now_mean, saving, until, forecast)


def _covered_until(slots: list[Slot], start: datetime) -> datetime:
    """Where the slots run without a gap from ``start`` (inside the first slot) to."""
    end = slots[0].end
    for slot in slots[1:]:
        if slot.start > end:
            break
        end = slot.end
    return end


def _mean(slots: list[Slot], index: list[datetime], start: datetime, end: datetime) -> float:
    """The time-weighted mean intensity over [start, end], which the slots cover without a gap
    (``index``: the slots' starts, to find the first one at once)."""
    total = 0.0
    for slot in slots[max(bisect_right(index, start) - 1, 0):]:
        if slot.start >= end:
            break
        overlap = (min(slot.end, end) - max(slot.start, start)).total_seconds()
        total += max(overlap, 0.0) * slot.g_per_kwh
    return total / (end - start).total_seconds()


# --- cached, in the background ----------------------------------------------------------------


class ForecastCache(live.LiveIntensity):
    """A provider's forecast, fetched and kept like a live reading; a failure is told to whoever
    asks (``failure``), not as a notice, since a forecast is only ever asked for by a user."""

    def _tell(self, failure, previous, delay) -> None:
        pass


def make_cache(provider: str, zone: str, *, base: str | None = None, **kwargs) -> ForecastCache:
    """A ForecastCache for ``provider`` ("ukci" or "electricitymaps") and ``zone``; kwargs go to LiveIntensity."""
    cls = PROVIDERS.get(provider)
    if cls is None:
        raise ConfigError(f"unknown forecast provider {provider!r}; accepted: {', '.join(PROVIDERS)}")
    options = {"ttl_s": TTL_S, "max_age_s": 3 * TTL_S, **kwargs}
    return ForecastCache(cls(zone, base), **options)


_caches: dict[tuple[str, str], ForecastCache] = {}
_caches_lock = threading.Lock()


def cache_for(provider: str, zone: str) -> ForecastCache:
    """The process's one ForecastCache for (provider, zone)."""
    with _caches_lock:
        if (provider, zone) not in _caches:
            _caches[(provider, zone)] = make_cache(provider, zone)
        return _caches[(provider, zone)]


def forget() -> None:
    """Drop every cached forecast (tests; a new kernel starts with none anyway)."""
    with _caches_lock:
        for cache in _caches.values():
            cache.close()
        _caches.clear()


def source_for(settings, grid) -> tuple[str, str]:
    """(provider, zone) to ask for ``grid``'s forecast under ``settings``, or NoForecast saying why none."""
    provider = settings.live_intensity
    if not provider:
        raise NoForecast("no forecast is available offline: the embedded intensities are annual averages, "
                         f"with no hours; {TURN_ON}")
    if provider == "ukci":
        if grid.country != "GB":
            raise NoForecast(f"live_intensity=ukci forecasts Great Britain only, and the grid in force is "
                             f"{grid.name} ({grid.region}); for other grids use live_intensity=electricitymaps "
                             f"with a token in {live.TOKEN_VARS[0]}")
        return provider, "GB"
    if not grid.country:
        raise NoForecast(f"Electricity Maps needs a country or zone, and the grid in force is {grid.name}; "
                         "set one with %carbon config region=FR")
    return provider, grid.country


def best_start(hours: float, settings, grid, wait_s: float | None = None) -> CleanerStart:
    """Return the cleanest start for a job of ``hours`` on ``grid``, from the cached forecast or a new fetch.

    Waits at most ``wait_s`` (default: the fetch's own deadline and a second) for a first
    forecast; raises NoForecast, in words, when there is none (offline, failed, still fetching).
    """
    provider, zone = source_for(settings, grid)
    cache = cache_for(provider, zone)
    forecast = cache.current()
    if forecast is None:
        cache.wait(cache.timeout_s + 1.0 if wait_s is None else wait_s)
        forecast = cache.current()
    if forecast is None:
        failure = cache.failure
        name = cache.provider.name
        if failure is None:
            raise NoForecast(f"the forecast is being fetched from {name}; run %carbon forecast again in a moment")
        raise NoForecast(f"no forecast from {name} ({failure.detail}); run %carbon forecast again later")
    return cleaner_start(forecast, hours, datetime.now(timezone.utc))
