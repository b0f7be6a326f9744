"""The demo's table is laid out like kubectl's, and its schedule window is open when it says so."""

from __future__ import annotations

import datetime as dt

import pytest

from controller.schedule import Schedule, is_open, parse_schedule
from testbed.demo import OFFICE_ZONE, claim_rows, next_text, office_window, render_table, table_rows

NOW = dt.datetime(2026, 11, 25, 12, 0, 5, tzinfo=dt.timezone.utc)


def test_rows_and_layout() -> None:
    objects = [
        {
            "metadata": {"name": "b"},
            "spec": {"desiredState": "Running"},
            "status": {
                "powerState": "Deallocated",
                "conditions": [{"type": "Ready", "status": "False", "reason": "AllocationFailed"}],
                "lastOperation": {"action": "Start", "result": "Failed", "trigger": "Spec", "error": {"code": "AllocationFailed"}},
            },
        },
        {
            "metadata": {"name": "c"},
            "spec": {"desiredState": "Auto"},
            "status": {
                "powerState": "Running",
                "conditions": [{"type": "Ready", "status": "True", "reason": "Reconciled"}],
                "demand": {"decidedBy": "Idle", "activeClaims": 0,
                           "nextTransitions": [{"at": "2026-11-25T12:00:17Z", "to": "Deallocated", "by": "Idle"}]},
                "lastOperation": {"action": "Start", "result": "Succeeded", "trigger": "Claim"},
            },
        },
        {"metadata": {"name": "a"}, "spec": {"desiredState": "Deallocated"}},
    ]
    rows = table_rows(objects, now=NOW)
    assert rows == [
        ("a", "Deallocated", "-", "-", "-", "-", "-", "-", "-"),
        ("b", "Running", "Deallocated", "False", "-", "AllocationFailed", "-", "-", "Start Failed (Spec)"),
        ("c", "Auto", "Running", "True", "0", "Reconciled", "Idle", "Deallocated 12:00:17Z", "Start Succeeded (Claim)"),
    ]
    assert render_table(rows).splitlines() == [
        "NAME   DESIRED       POWER         READY   CLAIMS   REASON             DECIDED-BY   NEXT                    LAST OPERATION",
        "a      Deallocated   -             -       -        -                  -            -                       -",
        "b      Running       Deallocated   False   -        AllocationFailed   -            -                       Start Failed (Spec)",
        "c      Auto          Running       True    0        Reconciled         Idle         Deallocated 12:00:17Z   Start Succeeded (Claim)",
    ]


def test_next_shows_the_date_unless_it_is_today() -> None:
    tomorrow = {"nextTransitions": [{"at": "2026-11-26T07:00:00Z", "to": "Running", "by": "Schedule"}]}
    assert next_text(tomorrow, NOW) == "Running 2026-11-26 07:00:00Z"
    assert next_text({}, NOW) == "-"


def test_claim_rows_sort_by_gpuvm_then_name() -> None:
    claims = [
        {"metadata": {"name": "z"}, "spec": {"gpuVm": "a"},
         "status": {"phase": "Expired", "conditions": [{"type": "Ready", "status": "False", "reason": "Expired"}]}},
        {"metadata": {"name": "y"}, "spec": {"gpuVm": "b"}},
    ]
    assert claim_rows(claims) == [("z", "a", "Expired", "False", "Expired"), ("y", "b", "-", "-", "-")]


@pytest.mark.parametrize(
    "now",
    [
        NOW,
        dt.datetime(2026, 1, 5, 22, 0, 30, tzinfo=dt.timezone.utc),  # 23:00 in Berlin: ends at 24:00
        dt.datetime(2026, 1, 5, 22, 30, tzinfo=dt.timezone.utc),  # 23:30: the window crosses midnight
        dt.datetime(2026, 1, 4, 23, 59, 59, tzinfo=dt.timezone.utc),  # Monday 00:59 local, Sunday in UTC
        dt.datetime(2026, 3, 29, 0, 30, tzinfo=dt.timezone.utc),  # 01:30 CET: its end, 02:30, does not exist
        dt.datetime(2026, 10, 25, 0, 45, tzinfo=dt.timezone.utc),  # 02:45 CEST, an hour that happens twice
        dt.datetime(2026, 10, 25, 1, 15, tzinfo=dt.timezone.utc),  # 02:15 CET, its second occurrence
    ],
)
def test_the_office_window_is_open_at_the_moment_it_is_made_for(now: dt.datetime) -> None:
    window = office_window(now)
    schedule = parse_schedule({"timeZone": OFFICE_ZONE, "windows": [window]})
    assert isinstance(schedule, Schedule), schedule
    assert is_open(schedule, now), window


def test_the_office_window_starts_at_the_local_minute() -> None:
    assert office_window(dt.datetime(2026, 1, 5, 22, 0, 30, tzinfo=dt.timezone.utc)) == {"days": "Mon", "start": "23:00", "end": "24:00"}
    assert office_window(dt.datetime(2026, 7, 1, 9, 7, 59, tzinfo=dt.timezone.utc)) == {"days": "Wed", "start": "11:07", "end": "12:07"}
