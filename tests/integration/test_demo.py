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
    # `gpuvm-operator check` with the operator's flags passes against the demo's world, whose
    # operator signs in with exactly the custom role's actions.
    checked = text.split("$ gpuvm-operator check  (with the operator's flags)\n", 1)[1].splitlines()
    assert checked[-1].startswith("All ") and checked[-1].endswith(" checks passed.")
    assert ("  OK   permissions at /subscriptions/6c1f8b2e-3d4a-4f5b-9c8d-7e6f5a4b3c2d/resourceGroups/rg-ai-gpu: "
            "the 5 actions the operator uses, nothing more (the tags actions are used only with --cluster-name)") in checked
    assert "  OK   opt-in tag: 4 of 4 VMs the GpuVms name carry gpuvm-managed=true" in checked
