"""The README's first command: the demo converges, tells its whole story, and says so."""

from __future__ import annotations

import io
import re

from testbed.demo import run_demo


def test_demo_converges() -> None:
    out = io.StringIO()
    assert run_demo(timeout=180, out=out, live=False) == 0, out.getvalue()[-3000:]
    text = out.getvalue()
    summary = text.split("\nAll 7 GpuVms converged in ", 1)[1]
    assert "overlapping power operations: 0" in summary and "HTTP 409: 0" in summary
    # desiredState pinned: a capacity failure shown, then recovered; the portal start corrected.
    assert "event: a100-trainer AllocationFailed: " in text
    assert "  a100-trainer   Running      last: Start Succeeded (Spec)" in summary
    assert "  t4-notebook    Deallocated  last: Deallocate Succeeded (Drift)" in summary
    assert "  a10-inference  Deallocated  last: Deallocate Succeeded (Spec)" in summary
    # Two jobs share a100-shared: eval finished (its wrapper deleted its claim: the demo says so
    # only once it has read that the claim eval's Pod held is gone, and fails otherwise) while
    # train still held the VM, which only went off once train's claim was released by its failed
    # Pod and the idle timeout, announced by a DeallocationScheduled Event, had passed.
    finished = text.index("eval: finished (exit 0); its wrapper deleted its claim")
    assert "PROBLEM" not in text
    assert not re.search(r"claim eval-5d8kq-\w+ of a100-shared", summary), "eval's claim is left"
    assert text.index("a100-shared stays up for train (CLAIMS 1); then train is OOM-killed", finished)
    assert re.search(r"claim train-x7p2m-\w+ \(a100-shared\): Released, OwnerFinished: owner Pod train-x7p2m has "
                     r"finished \(phase Failed\)", text)
    assert re.search(r"event: a100-shared DeallocationScheduled: VM vm-a100-02 will be switched off at ", text)
    assert "  a100-shared    Deallocated  last: Deallocate Succeeded (Idle)  decided by Idle" in summary
    assert re.search(r"claim train-x7p2m-\w+ of a100-shared: Released \(OwnerFinished\)", summary)
    # The Spot VM: evicted while its notebook's claim wanted it, started again, and switched off
    # once the killed notebook's lease lapsed.
    evicted = text.index("event: t4-spot Evicted: Azure evicted the Spot VM vm-t4-spot-01 while it was wanted (eviction 1)")
    assert text.index("notebook: killed -9", evicted)  # once the VM ran again for it (the script waits for that)
    assert "  t4-spot        Deallocated  last: Deallocate Succeeded (Idle)  decided by Idle  evictions 1" in summary
    assert re.search(r"claim t4-spot-\w+ of t4-spot: Expired \(Expired\)", summary)
    assert "Jobs (gpuvm-operator claim): eval: exit 0, notebook: killed by SIGKILL, train: killed by SIGKILL" in summary
    # The schedule window wants a10-office: started by it, kept running, its end announced.
    assert "  a10-office     Running      last: Start Succeeded (Schedule)  decided by Schedule" in summary
    office = re.findall(r"^a10-office +Auto +Running +True +0 +Reconciled +Schedule +Deallocated (\S+) ", text, re.MULTILINE)
    assert office, "the table shows when the schedule lets a10-office go"
    assert "Metrics: gpuvm_idle_deallocations_total 2;" in summary
    # `gpuvm-operator check` with the operator's flags passes against the demo's world, whose
    # operator signs in with exactly the custom role's actions.
    checked = text.split("$ gpuvm-operator check  (with the operator's flags)\n", 1)[1].splitlines()
    assert checked[-1].startswith("All ") and checked[-1].endswith(" checks passed.")
    assert ("  OK   permissions at /subscriptions/6c1f8b2e-3d4a-4f5b-9c8d-7e6f5a4b3c2d/resourceGroups/rg-ai-gpu: "
            "the 5 actions the operator uses, nothing more (the tags actions are used only with --cluster-name)") in checked
    assert "  OK   opt-in tag: 7 of 7 VMs the GpuVms name carry gpuvm-managed=true" in checked
