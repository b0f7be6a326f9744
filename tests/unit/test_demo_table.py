"""The demo's table is laid out like kubectl's."""

from __future__ import annotations

from testbed.demo import render_table, table_rows


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
        {"metadata": {"name": "a"}, "spec": {"desiredState": "Deallocated"}},
    ]
    rows = table_rows(objects)
    assert rows == [
        ("a", "Deallocated", "-", "-", "-", "-"),
        ("b", "Running", "Deallocated", "False", "AllocationFailed", "Start Failed (Spec) AllocationFailed"),
    ]
    assert render_table(rows).splitlines() == [
        "NAME   DESIRED       POWER         READY   REASON             LAST OPERATION",
        "a      Deallocated   -             -       -                  -",
        "b      Running       Deallocated   False   AllocationFailed   Start Failed (Spec) AllocationFailed",
    ]
