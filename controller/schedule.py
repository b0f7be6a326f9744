"""``spec.schedule``: weekly windows of local wall time in which a VM is wanted — pure, no I/O.

Why wall time, and why this much care: people write "weekdays 08:00 to 18:30 in Berlin" and
expect it to mean that in July and in December, on the Sunday the clocks jump and on the one they
fall back. Schedulers that compute the weekday in UTC, cannot cross midnight, or open and close
twice across a DST change are what this replaces. So:

- Days and times are read in the schedule's own zone (IANA name, default ``UTC``): a window
  ``Mon 00:30`` in Asia/Tokyo opens on Sunday 15:30 UTC.
- ``end`` before ``start`` crosses midnight, and the window belongs to the day it *starts* on:
  ``Fri 22:00-06:00`` runs Friday 22:00 to Saturday 06:00. ``00:00-24:00`` is a whole day (23 or
  25 hours on DST days). ``start == end`` is refused as ambiguous, except that whole day.
- Day ranges may wrap around the week: ``Fri-Mon`` is Fri, Sat, Sun, Mon. ``Mon-Mon`` is refused
  (one day or seven?). Names are English three-letter abbreviations, in any case.
- DST (the contract): a start or end that does not exist (spring forward) happens at the first
  valid minute after it; one that exists twice (fall back) uses its first occurrence. A window
  lying wholly inside the skipped hour is empty that day.
- Overlapping or touching windows are one open period: no close/open pair between them.

Zones come from the pinned ``tzdata`` package only, never from the OS: the operator's image has
no ``/usr/share/zoneinfo``, and every build computes the same transitions (the OS copy and the
package could disagree after a zone's rules change).

The patterns below are what the CRD's schema can check; the zone's existence and the semantic
rules (``start != end``, ranges of two different days) need :func:`parse_schedule`.
"""

from __future__ import annotations

import datetime as dt
import difflib
import functools
import importlib.resources
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from controller.reasons import SpecError

UTC = dt.timezone.utc
DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MAX_WINDOWS = 32
MAX_TIME_ZONE_LENGTH = 64
MAX_EDGES = 64
MINUTES_PER_DAY = 24 * 60

_DAY = "(?i:mon|tue|wed|thu|fri|sat|sun)"
_DAY_TERM = f"{_DAY}(?: *- *{_DAY})?"
DAYS_PATTERN = f"^ *{_DAY_TERM}(?: *, *{_DAY_TERM})* *$"
START_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
END_PATTERN = r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$"
TIME_ZONE_PATTERN = r"^[A-Za-z][-+_A-Za-z0-9]*(/[-+_A-Za-z0-9]+)*$"

_START = re.compile(START_PATTERN, re.ASCII)
_END = re.compile(END_PATTERN, re.ASCII)
_TIME_ZONE = re.compile(TIME_ZONE_PATTERN, re.ASCII)
_DAY_INDEX = {name.lower(): i for i, name in enumerate(DAY_NAMES)}
_EXAMPLE = '{days: Mon-Fri, start: "08:00", end: "18:30"}'


@dataclass(frozen=True)
class Window:
    """One weekly window: the days it starts on (0 = Monday, local), start and end in minutes
    after local midnight. ``end <= start`` crosses midnight; ``end`` 1440 is 24:00."""

    days: frozenset[int]
    start: int
    end: int


@dataclass(frozen=True)
class Schedule:
    time_zone: str
    windows: tuple[Window, ...]

    @property
    def zone(self) -> ZoneInfo:
        return _zone(self.time_zone)


@dataclass(frozen=True)
class Edge:
    """A change between closed and open: ``at`` (UTC) the schedule opens (or closes)."""

    at: dt.datetime
    opens: bool


# ---- zones, from the tzdata package only ----


@functools.lru_cache(maxsize=1)
def _zone_names() -> frozenset[str]:
    names = importlib.resources.files("tzdata").joinpath("zones").read_text(encoding="utf-8").split()
    return frozenset(names) - {"Factory"}  # a placeholder zone ("-00"), not a place


@functools.lru_cache(maxsize=None)
def _zone(name: str) -> ZoneInfo:
    """The zone ``name`` from the tzdata package (as zoneinfo's own fallback reads it)."""
    *folders, file = name.split("/")
    package = ".".join(["tzdata.zoneinfo", *folders])
    with importlib.resources.files(package).joinpath(file).open("rb") as data:
        return ZoneInfo.from_file(data, key=name)


def _check_zone(name: str) -> str | None:
    """What is wrong with ``name`` as a time zone, or None."""
    if len(name) > MAX_TIME_ZONE_LENGTH or not _TIME_ZONE.fullmatch(name) or name not in _zone_names():
        hint = ""
        names = _zone_names()
        by_case = {n.lower(): n for n in names}
        guess = by_case.get(name.lower()) or next(iter(difflib.get_close_matches(name, names, n=1, cutoff=0.8)), None)
        if guess:
            hint = f' (did you mean "{guess}"?)'
        return (
            f'unknown time zone "{name}"{hint}: give an IANA name such as "Europe/Berlin", "America/New_York" '
            'or "UTC" (the tz database, case-sensitive)'
        )
    return None


# ---- parsing ----


class _Invalid(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.error = SpecError(field, message)


def _parse_days(text: str, field: str) -> frozenset[int]:
    if not text.strip(" "):
        raise _Invalid(field, 'must name at least one day, e.g. "Mon-Fri", "Sat,Sun" or "Mon,Wed-Fri"')
    days: set[int] = set()
    for term in text.split(","):
        ends = [part.strip(" ") for part in term.split("-")]
        if any(not part for part in ends) or len(ends) > 2:
            raise _Invalid(
                field,
                f'"{text}" is not a list of days: write days (Mon … Sun) or ranges of two days ("Mon-Fri"), '
                'separated by commas, e.g. "Mon,Wed-Fri"',
            )
        for part in ends:
            if part.lower() not in _DAY_INDEX:
                raise _Invalid(field, f'"{part}" is not a day: use {", ".join(DAY_NAMES)}')
        first, last = (_DAY_INDEX[part.lower()] for part in (ends[0], ends[-1]))
        if len(ends) == 2 and first == last:
            raise _Invalid(
                field, f'"{term.strip(" ")}" is ambiguous: write "{DAY_NAMES[first]}" for one day or "Mon-Sun" for every day'
            )
        days.update((first + i) % 7 for i in range((last - first) % 7 + 1))  # ranges wrap: Fri-Mon
    return frozenset(days)


def _parse_time(value: Any, field: str, *, end: bool) -> int:
    shape = '"HH:MM" (00:00-23:59' + (", or 24:00 for the end of the day)" if end else ")")
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _Invalid(field, f"must be a string {shape}, got {type(value).__name__}")
    if isinstance(value, int):
        hours, minutes = divmod(value, 60)
        if not 0 < value <= MINUTES_PER_DAY:
            raise _Invalid(field, f"must be a quoted string {shape}, got the number {value}")
        # YAML 1.1 reads an unquoted 18:30 as the base-60 number 1110.
        raise _Invalid(field, f'must be a quoted string {shape}, got the number {value}: YAML reads an unquoted '
                              f'{hours}:{minutes:02d} as a number; write "{hours:02d}:{minutes:02d}"')
    if not (_END if end else _START).fullmatch(value):
        if value == "24:00":
            raise _Invalid(field, '"24:00" is only an end; a window starting at midnight starts at "00:00"')
        raise _Invalid(field, f'"{value}" is not a time: write {shape}, e.g. "08:00"')
    hours, minutes = value.split(":")
    return int(hours) * 60 + int(minutes)


def _required(window: Mapping[str, Any], name: str, field: str, example: str) -> Any:
    if window.get(name) is None:
        raise _Invalid(f"{field}.{name}", f"required, e.g. {example}")
    return window[name]


def _parse_window(window: Any, field: str) -> Window:
    if not isinstance(window, Mapping):
        raise _Invalid(field, f"must be an object with days, start and end, e.g. {_EXAMPLE}")
    days = _required(window, "days", field, '"Mon-Fri", "Sat,Sun" or "Mon,Wed-Fri"')
    if not isinstance(days, str):
        raise _Invalid(f"{field}.days", f'must be a string such as "Mon-Fri", got {type(days).__name__}')
    parsed_days = _parse_days(days, f"{field}.days")
    start = _parse_time(_required(window, "start", field, '"08:00"'), f"{field}.start", end=False)
    end = _parse_time(_required(window, "end", field, '"18:30" (or "24:00")'), f"{field}.end", end=True)
    if start == end:
        text = window["start"]
        raise _Invalid(
            f"{field}.end",
            f'start and end are both "{text}": a window cannot be empty; for a whole day write start "00:00" and '
            'end "24:00" (an end before the start crosses midnight)',
        )
    return Window(days=parsed_days, start=start, end=end)


def parse_schedule(raw: Any) -> Schedule | SpecError:
    """Turn ``spec.schedule`` into a Schedule, or say which field is wrong and what is allowed."""
    try:
        if not isinstance(raw, Mapping):
            raise _Invalid("spec.schedule", f"must be an object with windows and an optional timeZone, got {type(raw).__name__}")
        zone = raw.get("timeZone")
        if zone is None:
            zone = "UTC"
        elif not isinstance(zone, str):
            raise _Invalid("spec.schedule.timeZone", f'must be a string such as "Europe/Berlin", got {type(zone).__name__}')
        problem = _check_zone(zone)
        if problem:
            raise _Invalid("spec.schedule.timeZone", problem)
        windows = raw.get("windows")
        if windows is None:
            raise _Invalid("spec.schedule.windows", f"required: a list of windows such as {_EXAMPLE}")
        if not isinstance(windows, list):
            raise _Invalid("spec.schedule.windows", f"must be a list of windows such as {_EXAMPLE}, got {type(windows).__name__}")
        if not windows:
            raise _Invalid("spec.schedule.windows", "must have at least one window (or leave spec.schedule out)")
        if len(windows) > MAX_WINDOWS:
            raise _Invalid("spec.schedule.windows", f"at most {MAX_WINDOWS} windows, got {len(windows)}")
        parsed = tuple(_parse_window(w, f"spec.schedule.windows[{i}]") for i, w in enumerate(windows))
        return Schedule(time_zone=zone, windows=parsed)
    except _Invalid as e:
        return e.error


# ---- evaluation ----


def _instant(zone: ZoneInfo, day: dt.date, minute: int) -> dt.datetime:
    """Local wall time ``day`` + ``minute`` as a UTC instant, by the contract's DST rules.

    fold=0 is the first occurrence of an ambiguous time. A time in a gap round-trips to another
    wall time; then the first minute after it that exists is taken (gaps are an hour or two;
    the loop's bound is a day).
    """
    wall = dt.datetime.combine(day, dt.time()) + dt.timedelta(minutes=minute)
    for step in range(MINUTES_PER_DAY):
        candidate = wall + dt.timedelta(minutes=step)
        utc = candidate.replace(tzinfo=zone).astimezone(UTC)
        if utc.astimezone(zone).replace(tzinfo=None) == candidate:
            return utc
    raise ValueError(f"no valid wall time within a day after {wall} in {zone.key}")


def _intervals(
    schedule: Schedule, first_day: dt.date, last_day: dt.date
) -> Iterator[tuple[dt.datetime, dt.datetime]]:
    """(start, end) of every non-empty window starting on a local day from ``first_day`` to
    ``last_day``, in order of start: a day's windows all start before the next day's."""
    zone = schedule.zone
    day = first_day
    while day <= last_day:
        found = []
        following = day + dt.timedelta(days=1)
        for w in schedule.windows:
            if day.weekday() not in w.days:
                continue
            start = _instant(zone, day, w.start)
            end = _instant(zone, day if w.end > w.start else following, w.end)  # 24:00 is the next 00:00
            if end > start:  # empty when both ends fall into the same DST gap
                found.append((start, end))
        yield from sorted(found)
        day = following


def _local_day(schedule: Schedule, at: dt.datetime) -> dt.date:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{at!r} has no time zone: give an aware datetime")
    return at.astimezone(schedule.zone).date()


def is_open(schedule: Schedule, at: dt.datetime) -> bool:
    """Whether ``at`` lies in a window: open from its start (inclusive) to its end (exclusive)."""
    day = _local_day(schedule, at)
    # A window lasts at most a day (25 h on a fall-back day): only the two days before can reach.
    return any(start <= at < end for start, end in _intervals(schedule, day - dt.timedelta(days=2), day))


def lookahead_days(count: int) -> int:
    """How many local days after ``after``'s day :func:`edges` looks at: a week per edge asked
    for, and one more (28 days for 3).

    A schedule that changes state at all changes at least twice a week (DST can merge two
    windows in one week, not in every week), so fewer edges than asked within this many days
    means it does not change again: it is always open, or it has no windows.
    """
    return 7 * (count + 1)


def edges(schedule: Schedule, after: dt.datetime, count: int) -> tuple[Edge, ...]:
    """The next ``count`` changes between closed and open strictly after ``after``, in order.

    Windows are merged into open periods first, so every edge is a real change: overlapping or
    touching windows give one open and one close. Only windows starting within
    :func:`lookahead_days` are considered; a period still open at the end of that gives no close.
    """
    if not 0 <= count <= MAX_EDGES:
        raise ValueError(f"count must be between 0 and {MAX_EDGES}, not {count}")
    day = _local_day(schedule, after)
    last = day + dt.timedelta(days=lookahead_days(count))
    found: list[Edge] = []

    def full(at: dt.datetime, opens: bool) -> bool:
        if at > after:
            found.append(Edge(at, opens))
        return len(found) >= count

    if count == 0:
        return ()
    current: tuple[dt.datetime, dt.datetime] | None = None  # the open period being merged
    for start, end in _intervals(schedule, day - dt.timedelta(days=2), last):
        if current is not None and start <= current[1]:
            current = (current[0], max(current[1], end))
            continue
        if current is not None and full(current[1], False):
            return tuple(found)
        current = (start, end)
        if full(start, True):
            return tuple(found)
    # Windows of later days start at their day's midnight or after: an earlier end is final.
    if current is not None and current[1] < _instant(schedule.zone, last + dt.timedelta(days=1), 0):
        full(current[1], False)
    return tuple(found)
