"""spec.schedule: parsing, wall-time windows and their edges, DST on real 2026 transitions.

Every instant below was worked out by hand from the zones' 2026 rules (and is what the report's
DST table lists): Europe/Berlin springs forward on Sun 29 Mar at 01:00 UTC (02:00 CET -> 03:00
CEST) and falls back on Sun 25 Oct at 01:00 UTC (03:00 CEST -> 02:00 CET); America/New_York
springs forward on Sun 8 Mar at 07:00 UTC (02:00 EST -> 03:00 EDT) and falls back on Sun 1 Nov
at 06:00 UTC (02:00 EDT -> 01:00 EST).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.reasons import SpecError
from controller.schedule import (
    DAYS_PATTERN,
    END_PATTERN,
    MAX_WINDOWS,
    START_PATTERN,
    TIME_ZONE_PATTERN,
    Edge,
    Schedule,
    Window,
    edges,
    is_open,
    lookahead_days,
    parse_schedule,
)

UTC = dt.timezone.utc


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def schedule(zone: str | None, *windows: tuple[str, str, str]) -> Schedule:
    raw: dict[str, Any] = {"windows": [{"days": d, "start": s, "end": e} for d, s, e in windows]}
    if zone is not None:
        raw["timeZone"] = zone
    parsed = parse_schedule(raw)
    assert isinstance(parsed, Schedule), parsed
    return parsed


def error(raw: Any) -> SpecError:
    parsed = parse_schedule(raw)
    assert isinstance(parsed, SpecError), parsed
    return parsed


def window(days: Any = "Mon-Fri", start: Any = "08:00", end: Any = "18:30") -> dict[str, Any]:
    return {"days": days, "start": start, "end": end}


# ---- parsing ----


def test_a_full_schedule() -> None:
    got = schedule("Europe/Berlin", ("Mon-Fri", "08:00", "18:30"), ("Sat,Sun", "10:00", "24:00"), ("Fri-Mon", "22:00", "06:00"))
    assert got.time_zone == "Europe/Berlin"
    assert got.windows == (
        Window(frozenset({0, 1, 2, 3, 4}), 480, 1110),
        Window(frozenset({5, 6}), 600, 1440),
        Window(frozenset({4, 5, 6, 0}), 1320, 360),  # ranges wrap around the week
    )


def test_time_zone_defaults_to_utc() -> None:
    assert schedule(None, ("Mon", "00:00", "24:00")).time_zone == "UTC"


@pytest.mark.parametrize(
    ("days", "expected"),
    [
        ("Mon-Fri", {0, 1, 2, 3, 4}),
        ("Sat,Sun", {5, 6}),
        ("Mon,Wed-Fri", {0, 2, 3, 4}),
        ("Fri-Mon", {4, 5, 6, 0}),
        ("Sun-Tue", {6, 0, 1}),
        ("Mon-Sun", set(range(7))),
        ("mon - fri, SUN", {0, 1, 2, 3, 4, 6}),
        ("Tue", {1}),
        ("Mon,Mon-Tue", {0, 1}),
    ],
)
def test_days(days: str, expected: set[int]) -> None:
    assert schedule(None, (days, "08:00", "09:00")).windows[0].days == expected


@pytest.mark.parametrize(
    ("raw", "field", "fragment"),
    [
        (None, "spec.schedule", "must be an object with windows"),
        ("Mon-Fri 08:00-18:00", "spec.schedule", "got str"),
        ({"windows": [window()], "timeZone": 1}, "spec.schedule.timeZone", "must be a string"),
        ({"windows": [window()], "timeZone": "Europe/Berln"}, "spec.schedule.timeZone", 'did you mean "Europe/Berlin"'),
        ({"windows": [window()], "timeZone": "europe/berlin"}, "spec.schedule.timeZone", 'did you mean "Europe/Berlin"'),
        ({"windows": [window()], "timeZone": "../../etc/passwd"}, "spec.schedule.timeZone", "unknown time zone"),
        ({"windows": [window()], "timeZone": "Mars/Olympus_Mons"}, "spec.schedule.timeZone", "IANA name"),
        ({"windows": [window()], "timeZone": ""}, "spec.schedule.timeZone", "unknown time zone"),
        ({"windows": [window()], "timeZone": "Factory"}, "spec.schedule.timeZone", "unknown time zone"),
        ({}, "spec.schedule.windows", "required"),
        ({"windows": window()}, "spec.schedule.windows", "must be a list"),
        ({"windows": []}, "spec.schedule.windows", "at least one window"),
        ({"windows": [window()] * (MAX_WINDOWS + 1)}, "spec.schedule.windows", f"at most {MAX_WINDOWS} windows, got 33"),
        ({"windows": [window(), "Mon 08:00"]}, "spec.schedule.windows[1]", "must be an object with days, start and end"),
        ({"windows": [{"start": "08:00", "end": "09:00"}]}, "spec.schedule.windows[0].days", "required"),
        ({"windows": [{"days": "Mon", "end": "09:00"}]}, "spec.schedule.windows[0].start", "required"),
        ({"windows": [{"days": "Mon", "start": "08:00"}]}, "spec.schedule.windows[0].end", "required"),
        ({"windows": [window(days=["Mon"])]}, "spec.schedule.windows[0].days", "must be a string"),
        ({"windows": [window(days="")]}, "spec.schedule.windows[0].days", "at least one day"),
        ({"windows": [window(days="  ")]}, "spec.schedule.windows[0].days", "at least one day"),
        ({"windows": [window(days="Mox")]}, "spec.schedule.windows[0].days", '"Mox" is not a day'),
        ({"windows": [window(days="Monday")]}, "spec.schedule.windows[0].days", '"Monday" is not a day'),
        ({"windows": [window(days="Mon,,Fri")]}, "spec.schedule.windows[0].days", "not a list of days"),
        ({"windows": [window(days="Mon-")]}, "spec.schedule.windows[0].days", "not a list of days"),
        ({"windows": [window(days="Mon-Wed-Fri")]}, "spec.schedule.windows[0].days", "ranges of two days"),
        ({"windows": [window(days="Mon-Mon")]}, "spec.schedule.windows[0].days", "ambiguous"),
        ({"windows": [window(start="8:00")]}, "spec.schedule.windows[0].start", '"8:00" is not a time'),
        ({"windows": [window(start="08:60")]}, "spec.schedule.windows[0].start", "is not a time"),
        ({"windows": [window(start="24:00")]}, "spec.schedule.windows[0].start", "only an end"),
        ({"windows": [window(end="24:01")]}, "spec.schedule.windows[0].end", "or 24:00"),
        ({"windows": [window(end="25:00")]}, "spec.schedule.windows[0].end", "is not a time"),
        ({"windows": [window(start=True)]}, "spec.schedule.windows[0].start", "got bool"),
        ({"windows": [window(start=8.5)]}, "spec.schedule.windows[0].start", "got float"),
        ({"windows": [window(start=-5)]}, "spec.schedule.windows[0].start", "got the number -5"),
        ({"windows": [window(end=1110)]}, "spec.schedule.windows[0].end", 'unquoted 18:30 as a number; write "18:30"'),
        ({"windows": [window(), window(start="09:15", end="09:15")]}, "spec.schedule.windows[1].end", "cannot be empty"),
        ({"windows": [window(start="00:00", end="00:00")]}, "spec.schedule.windows[0].end", 'end "24:00"'),
    ],
)
def test_every_malformed_field_is_named(raw: Any, field: str, fragment: str) -> None:
    got = error(raw)
    assert got.field == field
    assert fragment in got.message


def test_the_first_bad_window_is_reported() -> None:
    got = error({"windows": [window(), window(days="Mox"), window(end="99:00")]})
    assert got.field == "spec.schedule.windows[1].days"


# The patterns the CRD uses must accept exactly what the parser accepts (the apiserver and the
# operator must never disagree about a format).
_DAYS = re.compile(DAYS_PATTERN, re.ASCII)
_START = re.compile(START_PATTERN, re.ASCII)
_END = re.compile(END_PATTERN, re.ASCII)
_ZONE = re.compile(TIME_ZONE_PATTERN, re.ASCII)


def _days_ok(text: str) -> bool:
    return isinstance(parse_schedule({"windows": [window(days=text)]}), Schedule)


@given(st.text(alphabet=list("MonTuesWdhFriSatu-, mOnX\t"), max_size=14))
@settings(max_examples=400, deadline=None)
def test_days_pattern_agrees_with_the_parser(text: str) -> None:
    same_day_range = re.search(r"(?i)\b(\w{3}) *- *\1\b", text)
    assert bool(_DAYS.fullmatch(text)) == (_days_ok(text) or bool(same_day_range))


@pytest.mark.parametrize("text", ["Mon-Fri", "Sat,Sun", "Mon,Wed-Fri", "fri-mon", "Mon , Tue", " Sun "])
def test_days_pattern_examples(text: str) -> None:
    assert _DAYS.fullmatch(text) and _days_ok(text)


@given(st.text(alphabet=list("0123456789:4"), min_size=0, max_size=6))
@settings(max_examples=400, deadline=None)
def test_time_patterns_agree_with_the_parser(text: str) -> None:
    start_ok = isinstance(parse_schedule({"windows": [window(start=text, end="24:00" if text != "24:00" else "01:00")]}), Schedule)
    end_ok = isinstance(parse_schedule({"windows": [window(start="00:00" if text != "00:00" else "01:00", end=text)]}), Schedule)
    assert bool(_START.fullmatch(text)) == start_ok
    assert bool(_END.fullmatch(text)) == (end_ok or text == "00:00")  # "00:00-00:00" is refused, not the format


def test_every_tzdata_zone_fits_the_zone_pattern() -> None:
    import importlib.resources

    names = importlib.resources.files("tzdata").joinpath("zones").read_text().split()
    assert len(names) > 500
    assert all(_ZONE.fullmatch(n) and len(n) <= 64 for n in names)


# ---- evaluation: fixed instants ----


def assert_edges(s: Schedule, after: str, expected: list[tuple[str, bool]]) -> None:
    got = edges(s, utc(after), len(expected))
    assert [(e.at, e.opens) for e in got] == [(utc(at), opens) for at, opens in expected]
    for e in got:
        assert e.at.tzinfo is UTC


def test_weekday_is_local_not_utc() -> None:
    tokyo = schedule("Asia/Tokyo", ("Mon", "00:30", "01:00"))  # UTC+9: Monday 00:30 is Sunday 15:30 UTC
    assert_edges(tokyo, "2026-03-28T00:00:00", [("2026-03-29T15:30:00", True), ("2026-03-29T16:00:00", False)])
    assert is_open(tokyo, utc("2026-03-29T15:45:00"))  # a Sunday in UTC
    assert not is_open(tokyo, utc("2026-03-30T15:45:00"))  # a Monday in UTC, Tuesday in Tokyo


def test_zone_without_dst_keeps_its_offset_all_year() -> None:
    kolkata = schedule("Asia/Kolkata", ("Mon-Fri", "09:00", "17:30"))  # UTC+5:30, no DST
    for monday in ("2026-03-30", "2026-10-26", "2026-12-28"):
        assert_edges(kolkata, f"{monday}T00:00:00", [(f"{monday}T03:30:00", True), (f"{monday}T12:00:00", False)])


def test_utc_by_default() -> None:
    plain = schedule(None, ("Sat", "10:00", "12:00"))
    assert_edges(plain, "2026-03-28T10:00:00", [("2026-03-28T12:00:00", False), ("2026-04-04T10:00:00", True)])
    assert is_open(plain, utc("2026-03-28T10:00:00")) and not is_open(plain, utc("2026-03-28T12:00:00"))


def test_crossing_midnight_belongs_to_the_start_day() -> None:
    night = schedule("UTC", ("Fri", "22:00", "06:00"))
    assert_edges(night, "2026-03-27T00:00:00", [("2026-03-27T22:00:00", True), ("2026-03-28T06:00:00", False)])
    assert is_open(night, utc("2026-03-28T05:59:00"))  # Saturday morning: Friday's window
    assert not is_open(night, utc("2026-03-26T23:00:00"))  # Thursday night: no window starts Thursday


def test_all_day_windows_merge_into_one_period() -> None:
    week = schedule("UTC", ("Mon-Fri", "00:00", "24:00"))
    assert_edges(week, "2026-03-24T12:00:00", [("2026-03-28T00:00:00", False), ("2026-03-30T00:00:00", True)])


def test_always_open_has_no_edges() -> None:
    always = schedule("Europe/Berlin", ("Mon-Sun", "00:00", "24:00"))
    assert edges(always, utc("2026-03-28T12:00:00"), 3) == ()
    assert is_open(always, utc("2026-03-29T01:30:00")) and is_open(always, utc("2026-10-25T01:30:00"))


def test_overlapping_and_touching_windows_have_no_spurious_edges() -> None:
    s = schedule(
        "UTC",
        ("Mon", "08:00", "12:00"),
        ("Mon", "12:00", "14:00"),  # touches
        ("Mon", "13:00", "18:00"),  # overlaps
        ("Mon", "22:00", "02:00"),  # crosses midnight into
        ("Tue", "02:00", "03:00"),  # a window of the next day that it touches
    )
    assert_edges(
        s,
        "2026-03-29T00:00:00",
        [
            ("2026-03-30T08:00:00", True),
            ("2026-03-30T18:00:00", False),
            ("2026-03-30T22:00:00", True),
            ("2026-03-31T03:00:00", False),
        ],
    )


def test_edges_strictly_after() -> None:
    s = schedule("UTC", ("Mon", "08:00", "09:00"))
    assert_edges(s, "2026-03-30T08:00:00", [("2026-03-30T09:00:00", False), ("2026-04-06T08:00:00", True)])
    assert_edges(s, "2026-03-30T07:59:59", [("2026-03-30T08:00:00", True)])


def test_a_weekly_window_gives_as_many_edges_as_asked() -> None:
    s = schedule("Europe/Berlin", ("Wed", "10:00", "11:00"))
    got = edges(s, utc("2026-01-01T00:00:00"), 7)
    assert len(got) == 7 and [e.opens for e in got] == [True, False] * 3 + [True]
    assert got[-1].at == utc("2026-01-28T09:00:00")  # 1 Jan 2026 is a Thursday: the fourth Wednesday, CET


def test_edge_count_is_bounded() -> None:
    s = schedule(None, ("Mon", "08:00", "09:00"))
    assert edges(s, utc("2026-01-01T00:00:00"), 0) == ()
    with pytest.raises(ValueError):
        edges(s, utc("2026-01-01T00:00:00"), 65)
    assert lookahead_days(3) == 28


def test_naive_datetimes_are_refused() -> None:
    s = schedule(None, ("Mon", "08:00", "09:00"))
    with pytest.raises(ValueError, match="no time zone"):
        is_open(s, dt.datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="no time zone"):
        edges(s, dt.datetime(2026, 1, 1), 1)


# ---- DST: the contract's rules on both 2026 transitions of two real zones ----
# (zone, window, after, expected edges in UTC, what it shows). The report's DST table is this list.
DST_CASES = [
    # Europe/Berlin, spring forward Sun 29 Mar 2026: 02:00-02:59 does not exist.
    ("Europe/Berlin", ("Sun", "02:30", "04:00"), "2026-03-28T12:00:00",
     [("2026-03-29T01:00:00", True), ("2026-03-29T02:00:00", False)], "start in the gap: 03:00 CEST"),
    ("Europe/Berlin", ("Sun", "01:00", "02:30"), "2026-03-28T12:00:00",
     [("2026-03-29T00:00:00", True), ("2026-03-29T01:00:00", False)], "end in the gap: 03:00 CEST"),
    ("Europe/Berlin", ("Sun", "02:00", "02:45"), "2026-03-28T12:00:00",
     [("2026-04-05T00:00:00", True), ("2026-04-05T00:45:00", False)], "wholly in the gap: empty that day"),
    ("Europe/Berlin", ("Sat", "22:00", "06:00"), "2026-03-28T12:00:00",
     [("2026-03-28T21:00:00", True), ("2026-03-29T04:00:00", False)], "crosses midnight over the change: 7 h"),
    ("Europe/Berlin", ("Sun", "00:00", "24:00"), "2026-03-28T12:00:00",
     [("2026-03-28T23:00:00", True), ("2026-03-29T22:00:00", False)], "00:00-24:00 on the 23 h day"),
    # Europe/Berlin, fall back Sun 25 Oct 2026: 02:00-02:59 happens twice (CEST, then CET).
    ("Europe/Berlin", ("Sun", "02:30", "05:00"), "2026-10-24T12:00:00",
     [("2026-10-25T00:30:00", True), ("2026-10-25T04:00:00", False)], "start repeated: first (CEST)"),
    ("Europe/Berlin", ("Sun", "00:00", "02:30"), "2026-10-24T12:00:00",
     [("2026-10-24T22:00:00", True), ("2026-10-25T00:30:00", False)], "end repeated: first (CEST)"),
    ("Europe/Berlin", ("Sun", "02:00", "03:00"), "2026-10-24T12:00:00",
     [("2026-10-25T00:00:00", True), ("2026-10-25T02:00:00", False)], "covers the repeated hour twice: 2 h"),
    ("Europe/Berlin", ("Sat", "23:00", "03:00"), "2026-10-24T12:00:00",
     [("2026-10-24T21:00:00", True), ("2026-10-25T02:00:00", False)], "crosses midnight over the change: 5 h"),
    ("Europe/Berlin", ("Sun", "00:00", "24:00"), "2026-10-24T12:00:00",
     [("2026-10-24T22:00:00", True), ("2026-10-25T23:00:00", False)], "00:00-24:00 on the 25 h day"),
    # America/New_York, spring forward Sun 8 Mar 2026: 02:00-02:59 does not exist.
    ("America/New_York", ("Sun", "02:15", "03:30"), "2026-03-07T12:00:00",
     [("2026-03-08T07:00:00", True), ("2026-03-08T07:30:00", False)], "start in the gap: 03:00 EDT"),
    ("America/New_York", ("Sat", "23:00", "02:30"), "2026-03-07T12:00:00",
     [("2026-03-08T04:00:00", True), ("2026-03-08T07:00:00", False)], "crosses midnight, end in the gap"),
    ("America/New_York", ("Sun", "00:00", "24:00"), "2026-03-07T12:00:00",
     [("2026-03-08T05:00:00", True), ("2026-03-09T04:00:00", False)], "00:00-24:00 on the 23 h day"),
    # America/New_York, fall back Sun 1 Nov 2026: 01:00-01:59 happens twice (EDT, then EST).
    ("America/New_York", ("Sun", "01:30", "02:30"), "2026-10-31T12:00:00",
     [("2026-11-01T05:30:00", True), ("2026-11-01T07:30:00", False)], "start repeated: first (EDT); 2 h"),
    ("America/New_York", ("Sat", "20:00", "01:30"), "2026-10-31T12:00:00",
     [("2026-11-01T00:00:00", True), ("2026-11-01T05:30:00", False)], "crosses midnight, end repeated: first"),
    ("America/New_York", ("Sun", "00:00", "24:00"), "2026-10-31T12:00:00",
     [("2026-11-01T04:00:00", True), ("2026-11-02T05:00:00", False)], "00:00-24:00 on the 25 h day"),
]


@pytest.mark.parametrize(("zone", "win", "after", "expected", "what"), DST_CASES, ids=[c[4] + " " + c[0] for c in DST_CASES])
def test_dst(zone: str, win: tuple[str, str, str], after: str, expected: list[tuple[str, bool]], what: str) -> None:
    s = schedule(zone, win)
    assert_edges(s, after, expected)
    opened, closed = utc(expected[0][0]), utc(expected[1][0])
    assert is_open(s, opened) and is_open(s, closed - dt.timedelta(seconds=1))
    assert not is_open(s, opened - dt.timedelta(seconds=1)) and not is_open(s, closed)


def test_windows_made_adjacent_by_the_gap_merge() -> None:
    # 02:00 and 03:00 are the same instant on 29 Mar in Berlin: the two windows are one period.
    s = schedule("Europe/Berlin", ("Sun", "01:00", "02:00"), ("Sun", "03:00", "04:00"))
    assert_edges(s, "2026-03-28T12:00:00", [("2026-03-29T00:00:00", True), ("2026-03-29T02:00:00", False)])
    # A week later they are apart again.
    assert_edges(
        s, "2026-04-04T12:00:00",
        [("2026-04-04T23:00:00", True), ("2026-04-05T00:00:00", False), ("2026-04-05T01:00:00", True)],
    )


# ---- properties ----

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe", "America/Santiago"]
_time = st.integers(min_value=0, max_value=23 * 60 + 59).map(lambda m: f"{m // 60:02d}:{m % 60:02d}")
_end = st.one_of(_time, st.just("24:00"))
_days = st.sets(st.sampled_from(["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]), min_size=1).map(",".join)
_window = st.tuples(_days, _time, _end).filter(lambda w: w[1] != w[2] and (w[1], w[2]) != ("00:00", "00:00"))
_instant_2026 = st.integers(min_value=0, max_value=365 * 24 * 3600).map(
    lambda s: dt.datetime(2026, 1, 1, tzinfo=UTC) + dt.timedelta(seconds=s)
)


@given(st.sampled_from(ZONES), st.lists(_window, min_size=1, max_size=4), _instant_2026)
@settings(max_examples=150, deadline=None)
def test_edges_alternate_and_is_open_flips_exactly_there(zone: str, windows: list[tuple[str, str, str]], after: dt.datetime) -> None:
    s = schedule(zone, *windows)
    got = edges(s, after, 6)
    before = is_open(s, after)
    for i, e in enumerate(got):
        assert e.at > after and (i == 0 or e.at > got[i - 1].at)
        assert e.opens is not before, "every edge changes the state"
        assert is_open(s, e.at) is e.opens
        assert is_open(s, e.at - dt.timedelta(seconds=1)) is (not e.opens)
        previous = got[i - 1].at if i else after
        middle = previous + (e.at - previous) / 2
        assert is_open(s, middle) is before, "no change between two edges"
        before = e.opens
    if len(got) < 6:
        assert all(is_open(s, after + dt.timedelta(hours=h)) is before for h in range(0, 24 * 8, 7))


@given(st.sampled_from(ZONES), _window, _instant_2026)
@settings(max_examples=100, deadline=None)
def test_a_single_window_edges_come_in_pairs(zone: str, win: tuple[str, str, str], after: dt.datetime) -> None:
    s = schedule(zone, win)
    got = edges(s, after, 4)
    always = (win[1], win[2]) == ("00:00", "24:00") and len(win[0].split(",")) == 7
    assert len(got) == (0 if always else 4)
    assert all(isinstance(e, Edge) for e in got) and [e.opens for e in got] in ([], [True, False] * 2, [False, True] * 2)
