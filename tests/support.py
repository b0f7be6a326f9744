"""Helpers shared by every test package."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, *, interval: float = 0.01, what: str = "") -> T:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``.

    This is how tests wait for asynchronous effects: on a condition, with a deadline, never a
    fixed sleep. The deadline is generous because CI shares two cores; a pass is usually fast.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(interval)
