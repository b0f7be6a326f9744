"""The soak's pure parts: the seeded plan, the contract model and the invariants' judgement —
so that a soak that passes passes because the operator behaved, not because a check is blind."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path

import pytest

from soak import invariants as inv
from soak import model, report
from soak.plan import DisruptionKind, IntentKind, SoakConfig, generate, resolve_window

KEY = ("team-a", "gv-000")
VM = "gpu-0000"


def test_a_seed_names_one_plan_and_every_kind_is_drawn() -> None:
    config = SoakConfig(gpuvms=40, intents=1_000, seed=7)
    a, b = generate(config), generate(config)
    assert a == b
    assert generate(SoakConfig(gpuvms=40, intents=1_000, seed=8)).intents != a.intents
    assert len(a.intents) == 1_000 and len(a.gpuvms) == 40
    assert {g.key[0] for g in a.gpuvms} == {"team-a", "team-b", "team-c", "team-d"}
    kinds = Counter(i.kind for i in a.intents)
    assert set(kinds) >= {IntentKind.DESIRED, IntentKind.DRIFT_POLICY, IntentKind.DELETE, IntentKind.RECREATE,
                          IntentKind.RETARGET, IntentKind.OOB, IntentKind.VM_DELETE, IntentKind.TAGS_REMOVE,
                          IntentKind.TAGS_RESTORE}
    assert {i.params["deletionPolicy"] for i in a.intents if i.kind is IntentKind.DELETE} == {"Retain", "Deallocate"}
    # Flip-flops: the second half follows the first within a second.
    halves = [i for i in a.intents if i.params.get("flipflop")]
    assert halves and all(0 < later.at - first.at < 1.0 for first, later in _pairs(halves))
    # Times only grow, so each GpuVm's intents are applied in their planned order.
    assert [i.at for i in a.intents] == sorted(i.at for i in a.intents)


def test_every_follow_up_is_planned_within_the_count() -> None:
    """A tag removed is restored, a VM deleted comes back, a GpuVm deleted is re-created, and no
    VM is deleted while its tags are away (their restore must find it)."""
    for seed in range(1, 6):
        plan = generate(SoakConfig(gpuvms=40, intents=1_000, seed=seed))
        n = Counter(i.kind for i in plan.intents)
        assert n[IntentKind.TAGS_REMOVE] == n[IntentKind.TAGS_RESTORE] > 0
        assert n[IntentKind.VM_DELETE] == n[IntentKind.VM_RESTORE] > 0
        assert n[IntentKind.DELETE] == n[IntentKind.RECREATE] > 0
        untagged: set[str] = set()
        live = {g.key for g in plan.gpuvms}
        for i in plan.intents:
            if i.kind is IntentKind.DELETE:
                live.discard(i.key)
            elif i.kind is IntentKind.RECREATE:
                live.add(i.key)
            elif i.kind is IntentKind.DESIRED:
                assert i.key in live, i.describe()  # no flip-flop half for a GpuVm deleted in between
            if i.kind is IntentKind.TAGS_REMOVE:
                untagged.add(i.params["vm"])
            elif i.kind is IntentKind.TAGS_RESTORE:
                untagged.discard(i.params["vm"])
            elif i.kind is IntentKind.VM_DELETE:
                assert i.params["vm"] not in untagged, i.describe()


def _pairs(halves):  # each first half and the second half of the same GpuVm after it
    open_: dict = {}
    for i in halves:
        if i.key in open_:
            yield open_.pop(i.key), i
        else:
            open_[i.key] = i


def test_the_full_plan_has_every_disruption_and_only_vm_keeps_them() -> None:
    plan = generate(SoakConfig())
    kinds = Counter(d.kind for d in plan.disruptions)
    assert kinds == {DisruptionKind.KILL: 2, DisruptionKind.KILL_IN_FLIGHT: 1, DisruptionKind.TERM_TO_HA: 1,
                     DisruptionKind.HA_KILL_ACTIVE: 1, DisruptionKind.TOKEN_EXPIRY: 1}
    assert len(plan.intents) == 10_000
    one = plan.only("team-b/gv-001")
    assert one.disruptions == plan.disruptions and ("team-b", "gv-001") in {i.key for i in one.intents}
    # Every GpuVm that named one of its VMs comes along (and theirs): each of the replay's moves
    # finds its VM free, as in the full run.
    first = {g.key: g.vm for g in plan.gpuvms}
    keys = {i.key for i in one.intents} | {("team-b", "gv-001")}
    vms = {first[k] for k in keys} | {i.params["vm"] for i in one.intents if i.kind is IntentKind.RETARGET}
    for i in plan.intents:
        if i.kind is IntentKind.RETARGET and i.params["vm"] in vms:
            assert i.key in keys, i.describe()
    for k, vm in first.items():
        assert (vm in vms) == (k in keys), k
    assert len(one.intents) < len(plan.intents)
    with pytest.raises(ValueError, match="no GpuVm team-b/nope"):
        plan.only("team-b/nope")


def test_resolved_windows_open_and_close_as_written() -> None:
    now = dt.datetime(2026, 11, 28, 15, 30, tzinfo=dt.timezone.utc)  # a Saturday
    crd, (mask, start, end) = resolve_window("now", 2, now)
    w = model.Window(mask, start, end)
    assert crd["windows"][0] == {"days": "Mon-Sun", "start": "15:29", "end": "15:32"}
    assert w.open_at(now) and not w.open_at(now + dt.timedelta(minutes=3))
    _, other = resolve_window("other-day", 1, now)
    assert not model.Window(*other).open_at(now.replace(hour=10, minute=30))
    assert model.Window(*other).open_at(now.replace(hour=10, minute=30) + dt.timedelta(days=3))


def _world(desired: str = "Running", **spec) -> model.World:
    world = model.World(wall_offset=0.0)
    world.vms[VM] = model.VmRecord(VM, "rg-team-a", "deallocated")
    world.spec_changed(KEY, 0.0, {"vm": VM, "desiredState": desired, "driftPolicy": "Enforce",
                                  "deletionPolicy": "Retain", "idleTimeout": "5s", **spec})
    return world


def _op(action: str, start: float, end: float | None, *, origin: str = "api", status: str = "Succeeded",
        n: int = 0) -> model.Operation:
    return model.Operation(f"op-{action}-{start}-{n}", VM, action, origin, start, end, status)


def test_an_operation_is_needed_a_retry_or_excess() -> None:
    world = _world("Running")
    world.spec_changed(KEY, 100.0, {**world.spec_at(KEY, 0.0), "desiredState": "Deallocated"})
    world.set_operations([
        _op("start", 1.0, 3.0, status="Failed"),  # needed
        _op("start", 5.0, 7.0),  # a documented retry of the failed one
        _op("deallocate", 20.0, 22.0),  # excess: Running wanted, no newer intent
        _op("start", 50.0, 52.0),  # needed: the excess deallocate left it off
        _op("deallocate", 105.0, 107.0),  # needed
        _op("start", 112.0, 113.0),  # excess: Running was superseded more than lag before
    ])
    verdicts = {(v.operation.action, v.operation.start): v.verdict for v in inv.classify(world)}
    assert verdicts == {("start", 1.0): "needed", ("start", 5.0): "retry", ("deallocate", 20.0): "excess",
                        ("start", 50.0): "needed", ("deallocate", 105.0): "needed", ("start", 112.0): "excess"}
    result = inv.operations(inv.classify(world), world)
    assert not result.ok and result.numbers["excess"] == 2


def test_a_request_on_a_vm_another_client_just_moved_is_a_stale_view_not_excess() -> None:
    world = _world("Running")
    world.set_operations([_op("start", 40.0, 42.0, origin="out-of-band"), _op("start", 43.0, 43.0)])
    (v,) = inv.classify(world)
    assert v.verdict == "needed" and abs(v.staleness - 1.0) < 1e-6
    world.set_operations([_op("start", 40.0, 42.0, origin="out-of-band"), _op("start", 42.0 + world.timing.lag + 1, 60.0)])
    assert [v.verdict for v in inv.classify(world)] == ["excess"]
    world.set_operations([_op("start", 40.0, 42.0, n=1), _op("start", 43.0, 43.0)])  # its own: it knew
    assert [v.verdict for v in inv.classify(world)] == ["needed", "excess"]


def test_an_intent_superseded_within_the_lag_still_explains_an_operation() -> None:
    world = _world("Running")
    world.spec_changed(KEY, 10.0, {**world.spec_at(KEY, 0.0), "desiredState": "Deallocated"})
    world.set_operations([_op("start", 12.0, 14.0)])  # the operator had not seen the change yet
    (v,) = inv.classify(world)
    assert v.verdict == "needed" and 2.0 - 1e-3 < v.staleness < 2.0 + 1e-3
    world.set_operations([_op("start", 10.0 + world.timing.lag + 1, 30.0)])
    assert [v.verdict for v in inv.classify(world)] == ["excess"]


def test_a_vm_without_its_opt_in_tag_allows_nothing_after_the_consent_age() -> None:
    world = _world("Running")
    world.vms[VM].untagged.append([10.0, None])
    assert world.allowed(VM, 10.0 + world.timing.consent_age - 1)[0] == {"start"}
    assert world.allowed(VM, 10.0 + world.timing.consent_age + 1)[0] == set()


def test_auto_follows_claims_and_the_idle_grace() -> None:
    world = _world("Auto")
    claim = model.ClaimRecord("team-a", "c1", "gv-000", "plain", created=10.0, deleted=20.0)
    world.claim(claim)
    assert world.targets(KEY, 5.0) == {"deallocate"}
    assert world.targets(KEY, 15.0) == {"start"}
    assert world.targets(KEY, 22.0) == set()  # idle grace 5 s: hands still
    assert world.targets(KEY, 24.5) == {"deallocate"}  # idleSince is whole seconds: up to 1 s early
    assert world.targets(KEY, 26.0) == {"deallocate"}



def test_a_lease_renewal_counts_from_its_write_not_from_the_older_renew_time_it_carries() -> None:
    # The soak's seed 1 found it: renewTime is whole seconds, so a renewal sent at 289.5 carries
    # 288.9; a deallocate at 288.92 of a lease lapsed at 280.9 (+ 8 s grace) is needed, not excess.
    world = _world("Auto", idleTimeout="8s")
    claim = model.ClaimRecord("team-a", "c1", "gv-000", "lease", created=261.8, lease=20.0,
                              renewals=[(261.8, 260.9), (289.5, 288.9)])
    world.claim(claim)
    assert world.targets(KEY, 270.0) == {"start"}
    assert world.targets(KEY, 285.0) == set()  # lapsed at 280.9: the idle grace
    assert world.targets(KEY, 288.92) == {"deallocate"}  # the renewal is not written yet
    assert world.targets(KEY, 289.6) == {"start"}
    world.set_operations([_op("start", 262.0, 263.0), _op("deallocate", 288.92, 290.0)])
    assert [v.verdict for v in inv.classify(world)] == ["needed", "needed"]

def test_report_report_hands_off_after_an_out_of_band_change() -> None:
    world = _world("Running", driftPolicy="Report")
    world.set_operations([_op("start", 1.0, 3.0), _op("deallocate", 60.0, 62.0, origin="out-of-band"),
                          _op("start", 70.0, 72.0, n=1)])
    assert [v.verdict for v in inv.classify(world)] == ["needed", "excess"]


def test_convergence_names_what_differs() -> None:
    world = _world("Running")
    obj = {"metadata": {"generation": 1}, "status": {
        "observedGeneration": 1, "powerState": "Running",
        "vm": {"resourceId": f"/subscriptions/{inv.SUBSCRIPTION}/resourceGroups/rg-team-a/providers/"
                             f"Microsoft.Compute/virtualMachines/{VM}"},
        "conditions": [{"type": "Ready", "status": "True", "reason": "Reconciled"}]}}
    running = {VM: {"name": VM, "powerState": "running", "hibernated": False, "operation": None}}
    assert inv.convergence(world, {KEY: obj}, {}, running, 100.0) == []
    off = {VM: {**running[VM], "powerState": "deallocated"}}
    (miss,) = inv.convergence(world, {KEY: obj}, {}, off, 100.0)
    assert "Azure Deallocated" in miss and "expected running" in miss
    assert inv.convergence(world, {}, {}, running, 100.0) == ["team-a/gv-000: missing"]


def test_overlaps_count_only_the_operators_own() -> None:
    theirs = {"vm": VM, "requested": "start", "in_flight": "deallocate", "in_flight_origin": "out-of-band",
              "in_flight_operation_id": "x", "status": 409, "time": 5.5}
    ok = inv.overlaps({"total": 1, "overlaps": [theirs]}, {"x": {"start": 5.0}})
    assert ok.ok and ok.numbers["other_client"] == 1
    assert ok.value == "0 of the operator's own; 1 meeting another client's operation (begun 0.5-0.5 s before; answered 409 1)"
    faulted = {**theirs, "status": 0}
    assert inv.overlaps({"total": 2, "overlaps": [theirs, faulted]}, {"x": {"start": 5.0}}).numbers[
        "other_client_answers"] == {"409": 1, "dropped": 1}
    ours = {**theirs, "in_flight_origin": "api"}
    assert not inv.overlaps({"total": 2, "overlaps": [theirs, ours]}, {"x": {"start": 5.0}}).ok
    assert not inv.overlaps({"total": 3, "overlaps": [theirs]}, {}).ok  # the record lost some: not judged blind


def test_logs_and_secrets_are_searched(tmp_path: Path) -> None:
    clean, dirty = tmp_path / "a.log", tmp_path / "b.log"
    clean.write_text("[2026-11-28 10:00:00,000] kopf.objects [INFO    ] fine\n")
    dirty.write_text("[2026-11-28 10:00:00,000] kopf.objects [ERROR   ] Handler failed\n"
                     "Traceback (most recent call last):\n  token sekrit-123\n")
    assert inv.log_errors({"operator-1": clean}).ok
    bad = inv.log_errors({"operator-1": clean, "operator-2": dirty})
    assert not bad.ok and bad.numbers == {"tracebacks": 1, "error_records": 1}
    assert inv.log_errors({"kube-emulator": dirty}).ok  # only the operator's logs are judged
    assert inv.secrets(["sekrit-123"], {"operator-1": clean}, {}, {}, []).ok
    assert not inv.secrets(["sekrit-123"], {"operator-2": dirty}, {}, {}, []).ok
    assert not inv.secrets(["sekrit-123"], {}, {}, {}, [{"reason": "X", "message": "Bearer sekrit-123"}]).ok


def test_rss_is_compared_early_to_late_and_within_the_last_life() -> None:
    marks = {"after 1000 intents": ("operator-4", 100.0), "end of intents": ("operator-7", 108.0)}
    samples = [(0.0, 6000, "operator-7", 90.0), (1.0, 7000, "operator-7", 100.0), (2.0, 10000, "operator-7", 108.0)]
    assert inv.rss(marks, samples, 1000, 10000).ok
    grew = [(0.0, 6000, "operator-7", 80.0), (1.0, 7000, "operator-7", 90.0)]
    assert not inv.rss(marks, grew, 1000, 10000).ok  # 108 / 90 within the last life
    assert not inv.rss({**marks, "end of intents": ("operator-7", 111.0)}, [], 1000, 10000).ok
    assert not inv.rss({}, [], 1000, 10000).ok  # not measured is not a pass


def test_the_section_is_replaced_and_the_rest_kept(tmp_path: Path) -> None:
    path = tmp_path / "reliability.md"
    path.write_text("# Reliability\n\nintro\n\n## Chaos soak\n\nold\n\n## Bad input\n\ntable\n")
    report.write_section(path, "## Chaos soak\n\nnew\n")
    assert path.read_text() == "# Reliability\n\nintro\n\n## Chaos soak\n\nnew\n\n## Bad input\n\ntable\n"
    path.write_text("# Reliability\n\nintro\n")
    report.write_section(path, "## Chaos soak\n\nnew\n")
    assert path.read_text() == "# Reliability\n\nintro\n\n## Chaos soak\n\nnew\n"


def test_the_starvation_guard_holds_clean_operations_to_the_budgets_bound() -> None:
    from bench.clients import Request

    path = f"/subscriptions/s/resourceGroups/rg-team-a/providers/Microsoft.Compute/virtualMachines/{VM}/instanceView"
    ops = {"op1": {"id": "op1", "vm": VM, "resource_group": "rg-team-a", "action": "start", "origin": "api",
                   "start": 0.0, "end": 4.0, "status": "Succeeded"}}
    seen = [Request(0.0, "POST", path.replace("instanceView", "start"), "VirtualMachines.Start", VM, 202),
            *(Request(t, "GET", path, "VirtualMachines.InstanceView", VM, 200) for t in (1.0, 2.0, 7.0))]
    judged = inv.starvation(ops, seen, [], bound=20.0, strict=4.0, derivation="test", now=10.0)
    assert not judged.ok and judged.numbers["clean_longest"] == 5.0  # 2 s -> 7 s, no fault met: over 4 s
    faulted = [*seen, Request(3.0, "GET", path, "VirtualMachines.InstanceView", VM, 503)]
    assert inv.starvation(ops, faulted, [], bound=20.0, strict=4.0, derivation="test", now=10.0).ok
    assert not inv.starvation(ops, faulted, [], bound=4.5, strict=4.0, derivation="test", now=10.0).ok
    # Across a kill (no operator could look) it is left out.
    assert inv.starvation(ops, seen, [(1.5, 6.0)], bound=4.5, strict=4.0, derivation="test", now=10.0).ok
