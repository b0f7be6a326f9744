"""What a (re)started, resuming or paused replica takes over from a GpuVm's stored status.

Found by the chaos soak (seed 1, the HA failover): the standby kept the status it read when it
first saw each GpuVm, took over 30 s after the active replica was killed, and switched two VMs
off at once on an idleSince minutes old — while a desiredState Running, a retarget and a lease
had come and gone in between.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from types import SimpleNamespace
from typing import Any

from controller.demand import Claim, ClaimReason, Liveness, live_until, liveness
from controller.engine import Engine, EngineSettings
from controller.fleet import Look
from controller.status import read_status, resume_from

NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.timezone.utc)
SUB = "00000000-0000-0000-0000-000000000001"


def vm_id(name: str) -> str:
    return f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/{name}"


def stored(*, generation: int = 3, vm: str = "vm-1", idle: str | None = "2026-11-28T11:50:00Z") -> dict[str, Any]:
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "vm": {"resourceId": vm_id(vm).replace("virtualMachines", "VirtualMachines"), "name": vm},
        "lastOperation": {"action": "Deallocate", "trigger": "Spec", "startedAt": "2026-11-28T11:40:00Z",
                          "finishedAt": "2026-11-28T11:41:00Z", "result": "Succeeded"},
        "startFailures": {"count": 2, "lastCode": "AllocationFailed", "nextRetryAt": "2026-11-28T11:45:00Z"},
    }
    if idle is not None:
        status["demand"] = {"decidedBy": "Idle", "idleSince": idle}
    return status


def test_a_status_of_this_generation_and_vm_is_taken_whole() -> None:
    status = stored()
    assert resume_from(status, generation=3, vm_key=vm_id("vm-1").lower()) == read_status(status)
    assert read_status(status).idle_since is not None and read_status(status).last_operation is not None


def test_a_status_of_an_older_generation_restarts_the_idle_grace() -> None:
    previous = resume_from(stored(generation=3), generation=5, vm_key=vm_id("vm-1").lower())
    assert previous.idle_since is None  # a Running or claims may have come and gone meanwhile
    assert previous.last_operation is not None and previous.start_failures is not None  # same VM


def test_a_status_of_another_vm_keeps_none_of_its_operations() -> None:
    previous = resume_from(stored(vm="vm-1"), generation=3, vm_key=vm_id("vm-2").lower())
    assert previous.last_operation is None and previous.start_failures is None
    assert resume_from(stored(vm="vm-1"), generation=3, vm_key=None).last_operation is None  # spec unreadable now


def test_a_status_naming_no_vm_keeps_its_operation_which_may_be_in_flight() -> None:
    status = stored()
    del status["vm"]
    assert resume_from(status, generation=3, vm_key=vm_id("vm-1").lower()).last_operation is not None


def test_nothing_stored_or_garbage_resumes_from_nothing() -> None:
    for garbage in (None, {}, "x", {"observedGeneration": "x", "vm": "y", "demand": 1}):
        assert resume_from(garbage, generation=1, vm_key=None) == read_status(None)


def claim(**kw: Any) -> Claim:
    return Claim("team-a", "c1", "gv", created=NOW - dt.timedelta(minutes=5), **kw)


def test_a_claim_no_longer_live_was_live_until_it_expired_or_lapsed() -> None:
    lease = claim(lease_duration=dt.timedelta(seconds=60), renew_time=NOW - dt.timedelta(minutes=2))
    assert live_until(lease, liveness(lease, now=NOW)) == NOW - dt.timedelta(minutes=1)
    expired = claim(expires_at=NOW - dt.timedelta(minutes=3))
    assert live_until(expired, liveness(expired, now=NOW)) == NOW - dt.timedelta(minutes=3)
    never = claim(expires_at=NOW - dt.timedelta(minutes=9))  # expired before it was created
    assert live_until(never, liveness(never, now=NOW)) is None
    finished = claim()
    assert live_until(finished, Liveness(False, reason=ClaimReason.OWNER_FINISHED)) == finished.created
    assert live_until(finished, liveness(finished, now=NOW)) is None  # live: no end yet


def body(*, generation: int, desired: str, status: dict[str, Any], rv: int) -> dict[str, Any]:
    return {"metadata": {"namespace": "team-a", "name": "gv", "uid": "u1", "generation": generation,
                         "resourceVersion": str(rv), "creationTimestamp": "2026-11-28T10:00:00Z"},
            "spec": {"vm": {"resourceId": vm_id("vm-1")}, "desiredState": desired, "idleTimeout": "10m"},
            "status": status}


def engine() -> Engine:
    return Engine(azure=SimpleNamespace(), status=None, settings=EngineSettings(), emit=lambda *a: None)  # type: ignore[arg-type]


async def test_a_paused_replica_keeps_what_the_active_one_writes() -> None:
    e = engine()  # never run: paused, as an HA standby
    old = stored(generation=1, idle="2026-11-28T11:00:00Z")
    t = e.seen(body(generation=1, desired="Auto", status=old, rv=10))
    assert t.previous.idle_since == dt.datetime(2026, 11, 28, 11, 0, tzinfo=dt.timezone.utc)
    newer = stored(generation=1, idle="2026-11-28T11:55:00Z")  # the active replica's later write
    e.seen(body(generation=1, desired="Auto", status=newer, rv=11))
    assert e.tracked[("team-a", "gv")].previous.idle_since == dt.datetime(2026, 11, 28, 11, 55, tzinfo=dt.timezone.utc)
    e.seen(body(generation=1, desired="Auto", status=old, rv=9))  # an older event changes nothing
    assert e.tracked[("team-a", "gv")].previous.idle_since == dt.datetime(2026, 11, 28, 11, 55, tzinfo=dt.timezone.utc)


async def test_back_to_auto_from_an_override_restarts_the_idle_grace_even_without_a_step() -> None:
    e = engine()
    e.active = True  # as while running, but no scheduler turns: the two events come faster than a step
    status = stored(generation=1)
    t = e.seen(body(generation=1, desired="Auto", status=status, rv=10))
    assert t.previous.idle_since is not None
    e.seen(body(generation=2, desired="Running", status=status, rv=11))
    assert t.previous.idle_since is not None  # an override ignores demand; nothing to forget yet
    e.seen(body(generation=3, desired="Auto", status=status, rv=12))
    assert t.previous.idle_since is None


async def test_a_claim_that_lapsed_after_the_stored_idle_since_moves_the_grace_to_its_end() -> None:
    """The standby took over after a lease had come and lapsed: the grace counts from the lapse."""
    e = engine()
    e.active = True
    t = e.seen(body(generation=1, desired="Auto", status=stored(generation=1, idle="2026-11-28T11:00:00Z"), rv=10))
    e.claim_seen({"metadata": {"namespace": "team-a", "name": "job", "uid": "c1", "generation": 1, "resourceVersion": "11",
                               "creationTimestamp": "2026-11-28T11:50:00Z"},
                  "spec": {"gpuVm": "gv", "leaseDurationSeconds": 300, "renewTime": "2026-11-28T11:52:00Z"}})
    demand = e._demand(t, Look(None), NOW)
    assert demand is not None and demand.idle_since == dt.datetime(2026, 11, 28, 11, 57, tzinfo=dt.timezone.utc)
    assert demand.deallocate_at is None or demand.deallocate_at > NOW  # not at once


async def test_a_claim_deleted_before_any_step_saw_it_still_restarts_the_grace() -> None:
    """The CI soak found it: after a restart, Auto GpuVms wait for the list of claims; a lease
    created and deleted within that wait was never stepped on, and the stored idleSince (minutes
    old) switched the VM off at once instead of after the grace."""
    e = Engine(azure=SimpleNamespace(), status=None, settings=EngineSettings(), emit=lambda *a: None,  # type: ignore[arg-type]
               clock=lambda: NOW)
    e.active = True
    t = e.seen(body(generation=1, desired="Auto", status=stored(generation=1, idle="2026-11-28T11:00:00Z"), rv=10))
    claim = {"metadata": {"namespace": "team-a", "name": "job", "uid": "c1", "generation": 1, "resourceVersion": "11",
                          "creationTimestamp": "2026-11-28T11:59:30Z"},
             "spec": {"gpuVm": "gv", "leaseDurationSeconds": 300, "renewTime": "2026-11-28T11:59:30Z"}}
    e.claim_seen(claim)
    e.claim_gone("team-a", "job")  # deleted while live, and no step ran in between
    demand = e._demand(t, Look(None), NOW)
    assert demand is not None and demand.idle_since == NOW
    expired = {**claim, "metadata": {**claim["metadata"], "name": "old", "uid": "c2"},
               "spec": {"gpuVm": "gv", "expiresAt": "2026-11-28T11:30:00Z"}}
    e.claim_seen(expired)
    e.claim_gone("team-a", "old")  # not live when deleted: it says nothing new
    assert e._demand(t, Look(None), NOW).idle_since == NOW
