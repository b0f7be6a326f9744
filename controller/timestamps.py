"""Timestamps as Kubernetes writes them (RFC 3339, UTC, second precision), and read back forgivingly.

Shared by everything that reads or writes times in objects (GpuVm status, claims, the claim
wrapper), so one rule decides how a time looks and what a hand-written one may look like.
"""

from __future__ import annotations

import datetime as dt
from typing import Any


def format_time(when: dt.datetime) -> str:
    """RFC 3339 in UTC with second precision, as Kubernetes writes its own timestamps."""
    # isoformat, not strftime("%Y"): glibc writes the year 999 as "999", which is no RFC 3339.
    return when.astimezone(dt.timezone.utc).replace(microsecond=0, tzinfo=None).isoformat() + "Z"


def parse_time(value: Any) -> dt.datetime | None:
    """An RFC 3339 string -> aware datetime in UTC (naive means UTC); None for anything else."""
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        # In UTC now: "0001-01-01T00:00:00+14:00" is a valid string but no UTC date (OverflowError).
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)).astimezone(dt.timezone.utc)
    except (ValueError, OverflowError):
        return None
