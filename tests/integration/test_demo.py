"""The README's first command: the demo converges, and says so."""

from __future__ import annotations

import io

from testbed.demo import run_demo


def test_demo_converges() -> None:
    out = io.StringIO()
    assert run_demo(timeout=120, out=out, live=False) == 0, out.getvalue()[-3000:]
    text = out.getvalue()
    assert "All 4 GpuVms converged" in text
    assert "overlapping power operations: 0" in text and "HTTP 409: 0" in text
    assert "AllocationFailed" in text  # the capacity failure was shown, then recovered
    assert "Deallocate Succeeded (Drift)" in text  # the portal start was corrected
    assert "a10-inference  Deallocated  last: Deallocate Succeeded (Spec)" in text
