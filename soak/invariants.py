"""The soak's verdict: each invariant measured over what the driver recorded (pure, no I/O).

Each check returns an ``Invariant``: its measured value, its bound, whether it holds, what
breaks it, and the GpuVms concerned (the report prints their histories and the command that
replays them).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from soak import model
from soak.plan import SUBSCRIPTION, Key
from testbed.azuresim.model import vm_resource_id
from testbed.azuresim.recording import OperationRecord, RequestRecord, _operation_id, _resource_group, unobserved

POWER = {"running": "Running", "deallocated": "Deallocated", "stopped": "Stopped", "starting": "Starting",
         "deallocating": "Deallocating", "stopping": "Stopping"}


@dataclass(frozen=True)
class Invariant:
    name: str
    ok: bool
    value: str  # what was measured
    bound: str  # what it must be
    details: tuple[str, ...] = ()
    concerned: tuple[str, ...] = ()  # GpuVms ("namespace/name") whose history explains a failure
    numbers: Mapping[str, Any] = field(default_factory=dict)


def _ready(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return c
    return {}


def _name(key: Key) -> str:
    return f"{key[0]}/{key[1]}"


def expected_power(world: model.World, key: Key, t: float) -> str | None:
    """running / deallocated, or None while demand is uncertain."""
    spec = world.spec_at(key, t)
    assert spec is not None
    desired = spec["desiredState"]
    if desired != "Auto":
        return desired.lower()
    wanted = world.wanted(key, t)
    return None if wanted is None else ("running" if wanted else "deallocated")


def drift_allowed(world: model.World, key: Key, t: float, expected: str) -> bool:
    """driftPolicy Report and someone else changed the VM's power since the spec was written (out
    of band, or the VM deleted and restored in another state): Drifted (hands off) is what the
    intent asks, unless it looks like an eviction (a wanted Spot VM deallocated), which is
    restarted whatever the policy."""
    spec = world.spec_at(key, t)
    if spec is None or spec.get("driftPolicy") != "Report":
        return False
    since = world.generation_since(key, t)
    vm = world.vms[spec["vm"]]
    if any(at > since and power != expected for at, power in vm.restored_as):
        return True  # deleted in Azure and back in another power state: a change nobody here made
    return any(accepted and at > since and not (vm.spot and action == "deallocate" and expected == "running")
               for at, action, accepted in vm.oob)


def convergence(world: model.World, objects: Mapping[Key, Mapping[str, Any]], claims: Mapping[Key, Mapping[str, Any]],
                sim_vms: Mapping[str, Mapping[str, Any]], t: float) -> list[str]:
    """What differs from the last intents at ``t`` (empty: converged). Per GpuVm: the VM's power
    in Azure is the desired or demanded one, Azure is not busy with it, Ready True for the
    current generation (or Drifted where driftPolicy Report asks for hands off), status.powerState
    and status.vm say what Azure says; under Auto, status.demand says what wants it. Per claim:
    its phase by the contract, Ready True exactly when its GpuVm's VM runs for it."""
    misses: list[str] = []
    for key in sorted(world.gpuvms):
        spec = world.spec_at(key, t)
        if spec is None:
            if key in objects:
                misses.append(f"{_name(key)}: deleted, still there")
            continue
        obj = objects.get(key)
        if obj is None:
            misses.append(f"{_name(key)}: missing")
            continue
        vm_name = spec["vm"]
        sim = sim_vms.get(vm_name)
        if sim is None:
            misses.append(f"{_name(key)}: VM {vm_name} not in Azure")
            continue
        expected = expected_power(world, key, t)
        status = obj.get("status") or {}
        ready = _ready(obj)
        generation = (obj.get("metadata") or {}).get("generation")
        azure = str(sim.get("powerState"))
        shown = "Hibernated" if azure == "deallocated" and sim.get("hibernated") else POWER.get(azure, azure)
        problems = []
        if expected is None:
            problems.append("demand uncertain")
        if sim.get("operation"):
            problems.append(f"Azure busy ({sim['operation']})")
        if status.get("observedGeneration") != generation:
            problems.append(f"observedGeneration {status.get('observedGeneration')} of {generation}")
        if status.get("powerState") != shown:
            problems.append(f"status.powerState {status.get('powerState')} but Azure {shown}")
        vm_id = vm_resource_id(SUBSCRIPTION, world.vms[vm_name].resource_group, vm_name).lower()
        if str((status.get("vm") or {}).get("resourceId", "")).lower() != vm_id:
            problems.append(f"status.vm {((status.get('vm') or {}).get('resourceId'))} is not {vm_name}")
        reconciled = ready.get("status") == "True" and ready.get("reason") == "Reconciled" and azure == expected
        drifted = ready.get("status") == "False" and ready.get("reason") == "Drifted" and expected is not None \
            and drift_allowed(world, key, t, expected)
        if not (reconciled or drifted):
            problems.append(f"Azure {azure}, expected {expected}; Ready {ready.get('status')} {ready.get('reason')}")
        if spec["desiredState"] == "Auto" and expected is not None:
            sure, _ = world.live_claims(key, t)
            decided = "Claims" if sure else ("Schedule" if world.schedule_open(spec, t) else "Idle")
            demand = status.get("demand") or {}
            if demand.get("decidedBy") != decided or demand.get("activeClaims", 0) != sure:
                problems.append(f"demand {demand.get('decidedBy')}/{demand.get('activeClaims')} expected {decided}/{sure}")
        if problems:
            misses.append(f"{_name(key)}: " + "; ".join(problems))
    for (ns, name), record in sorted(world.claims.items()):
        body = claims.get((ns, name))
        if record.deleted is not None:
            if body is not None:
                misses.append(f"claim {ns}/{name}: deleted, still there")
            continue
        if body is None:
            misses.append(f"claim {ns}/{name}: missing")
            continue
        live = world.claim_live(record, t)
        gpuvm_key = (ns, record.gpuvm)
        exists = world.spec_at(gpuvm_key, t) is not None
        status = body.get("status") or {}
        if live is None:
            phases = {"Bound", "Pending", "Released"}
        elif live:
            phases = {"Bound" if exists else "Pending"}
        else:
            # The contract checks the owner Pod first, then expiry and the lease; a claim that
            # had expired before its owner finished may not be looked at again: either ends it.
            phases = set()
            if record.finished is not None:
                phases.add("Released")
            if (record.expires is not None and t >= record.expires) or (record.lease is not None and not any(
                    sent <= t < value + record.lease for sent, value in record.renewals)):
                phases.add("Expired")
        phase = status.get("phase") if status.get("phase") in phases else "/".join(sorted(phases))
        gpuvm = objects.get(gpuvm_key) or {}
        spec = world.spec_at(gpuvm_key, t) or {}
        runs = (phase == "Bound" and spec.get("desiredState") != "Deallocated"
                and (gpuvm.get("status") or {}).get("powerState") == "Running" and _ready(gpuvm).get("status") == "True"
                and (gpuvm.get("status") or {}).get("observedGeneration") == (gpuvm.get("metadata") or {}).get("generation"))
        claim_ready = _ready(body).get("status")
        if status.get("phase") != phase or claim_ready != ("True" if runs else "False"):
            misses.append(f"claim {ns}/{name} ({record.variant}) of {record.gpuvm}: phase {status.get('phase')} Ready "
                          f"{claim_ready}, expected {phase} Ready {'True' if runs else 'False'}")
    return misses


# ---------------------------------------------------------------------------- the checks


def intents_applied(plan_count: int, applied: int, skipped: list[tuple[Any, str]]) -> Invariant:
    return Invariant(
        "every intent applied", not skipped and applied == plan_count, f"{applied} of {plan_count}", f"{plan_count}",
        tuple(f"{i.describe()}: {why}" for i, why in skipped[:20]), tuple(_name(i.key) for i, _ in skipped[:5]),
        {"applied": applied, "planned": plan_count, "skipped": len(skipped)},
    )


def converged(misses: list[str], converged_at: float | None, faults_off: float, quiet: float, settle: float,
              gpuvms: int) -> Invariant:
    took = None if converged_at is None else converged_at - faults_off
    value = (f"all {gpuvms} GpuVms and their claims {took:.1f} s after faults stopped" if took is not None
             else f"{len(misses)} not converged {quiet - faults_off + settle:.0f} s after faults stopped")
    concerned = tuple(sorted({m.split(":")[0].removeprefix("claim ").split(" ")[0] for m in misses
                              if not m.startswith("claim ")}))[:5]
    return Invariant("every GpuVm converged to its last intent", converged_at is not None, value,
                     f"within {settle:.0f} s once time-based demand is quiet ({quiet - faults_off:.0f} s after faults stopped)",
                     tuple(misses[:40]), concerned,
                     {"seconds_after_faults_stopped": took, "quiet_after_faults_stopped": quiet - faults_off,
                      "not_converged": len(misses)})


def overlaps(record: Mapping[str, Any], operations: Mapping[str, Mapping[str, Any]]) -> Invariant:
    """No power request of the operator's while one of its own runs on the VM. Requests that met
    another client's operation (out of band, an eviction) are counted apart: Azure refused them
    (409) and the operator could not have seen that operation yet; the gap says how recent it was."""
    found = list(record.get("overlaps") or [])
    ours = [o for o in found if o.get("in_flight_origin") == "api"]
    others = [o for o in found if o.get("in_flight_origin") != "api"]
    gaps = [o["time"] - operations[o["in_flight_operation_id"]]["start"] for o in others
            if o.get("in_flight_operation_id") in operations]
    details = [f"{o['vm']}: {o['requested']} while our {o['in_flight']} ran (answered {o['status']})" for o in ours[:20]]
    total = int(record.get("total", len(found)))
    kept_all = total == len(found)
    value = f"{len(ours)} of the operator's own; {len(others)} meeting another client's operation"
    # What Azure answered them: 409 is the VM refusing; 429 and "dropped" (status 0) are faults that
    # took the request's place before it reached the VM. Any other answer would be the simulator
    # accepting an overlap, so it is shown rather than summed into a reassuring word.
    answers = Counter("dropped" if o.get("status") == 0 else str(o.get("status")) for o in others)
    if gaps:
        value += (f" (begun {min(gaps):.1f}-{max(gaps):.1f} s before; answered "
                  + ", ".join(f"{status} {n}" for status, n in sorted(answers.items())) + ")")
    return Invariant("0 overlapping power operations", not ours and kept_all, value, "0 of the operator's own",
                     tuple(details), (), {"own": len(ours), "other_client": len(others), "total": total,
                                          "other_client_max_gap": max(gaps, default=None),
                                          "other_client_answers": dict(answers)})


@dataclass(frozen=True)
class OperationVerdict:
    operation: model.Operation
    verdict: str  # needed | retry | excess
    staleness: float
    why: str


def classify(world: model.World) -> list[OperationVerdict]:
    """Every power operation the operator had Azure run, explained by the intents (model.World):
    needed, a documented retry (the previous one of the same kind on the VM failed or was
    cancelled), or excess — not wanted by any intent in force within ``lag`` before it, or asked
    of a VM already where it was asked to go (unless another client took it there within ``lag``
    before: the operator's view of the VM may be that old, as its view of the intents)."""
    out = []
    for vm, ops in sorted(world.operations.items()):
        last_ours: model.Operation | None = None
        for op in ops:
            if op.origin != "api":
                continue
            record = world.vms.get(op.vm) or next((r for r in world.vms.values() if r.name.lower() == vm), None)
            verdict, staleness, why = world.justified(op) if record else ("excess", 0.0, "unknown VM")
            if verdict == "needed":
                power, busy = world.power_at(op.vm, op.start)
                arrived = world.arrived_by_others(op.vm, op.target, op.start)
                if power == op.target and not busy and arrived is not None:
                    staleness, why = op.start - arrived, f"someone else took the VM {power} {op.start - arrived:.1f} s before"
                elif power == op.target and not busy:
                    verdict, why = "excess", f"the VM was already {power}"
                elif last_ours is not None and last_ours.target == op.target and last_ours.status != "Succeeded" \
                        and (last_ours.end is None or last_ours.end <= op.start):
                    verdict = "retry"
                    why = f"the previous {last_ours.action} ended {last_ours.status}"
            out.append(OperationVerdict(op, verdict, staleness, why))
            last_ours = op
    return out


def operations(verdicts: list[OperationVerdict], world: model.World) -> Invariant:
    by_vm: dict[str, Counter[str]] = {}
    for v in verdicts:
        by_vm.setdefault(v.operation.vm, Counter())[f"{v.operation.action}:{v.verdict}"] += 1
    excess = [v for v in verdicts if v.verdict == "excess"]
    stale = [v.staleness for v in verdicts if v.verdict in ("needed", "retry") and v.staleness > 0]
    counts = Counter(v.verdict for v in verdicts)
    actions = Counter(v.operation.action for v in verdicts)
    details = [f"{v.operation.vm}: {v.operation.action} at {v.operation.start:.1f} ({v.operation.status}): {v.why}"
               for v in excess[:30]]
    concerned = []
    for v in excess[:5]:
        start, lag = v.operation.start, world.timing.lag
        owners = [*world.owners(v.operation.vm, start), *world.owners(v.operation.vm, start - lag),
                  *world.owners(v.operation.vm, start + lag)]  # the GpuVms that named it, before or next
        concerned.extend(_name(k) for k in dict.fromkeys(owners))
    value = (f"{len(verdicts)} operations ({', '.join(f'{n} {a}' for a, n in sorted(actions.items()))}): "
             f"{counts['needed']} needed, {counts['retry']} documented retries, {counts['excess']} excess; "
             f"{len(stale)} acted on an intent superseded up to {max(stale, default=0):.1f} s before")
    return Invariant("no start or deallocate the intents did not need", not excess, value,
                     f"0 excess (an intent in force within {world.timing.lag:.0f} s before each, not already done)",
                     tuple(details), tuple(dict.fromkeys(concerned)),
                     {"total": len(verdicts), **counts, "by_action": dict(actions), "superseded": len(stale),
                      "max_staleness": max(stale, default=0.0),
                      "per_vm": {vm: dict(c) for vm, c in sorted(by_vm.items())}})


_TRACEBACK = re.compile(rb"Traceback \(most recent call last\)")
_RECORD = re.compile(rb"^\[[^\]]*\] (\S+) +\[(ERROR|CRITICAL) *\] (.*)$", re.M)


def log_errors(logs: Mapping[str, Path]) -> Invariant:
    """No traceback and no unhandled exception in any operator process's log; ERROR records are
    listed (kopf logs a handler that raised as ERROR with its traceback)."""
    tracebacks = 0
    errors: list[str] = []
    for name, path in sorted(logs.items()):
        if not name.startswith("operator"):
            continue
        data = path.read_bytes() if path.exists() else b""
        tracebacks += len(_TRACEBACK.findall(data))
        errors.extend(f"{name}: {m.group(1).decode()} {m.group(3).decode()[:200]}" for m in _RECORD.finditer(data))
    return Invariant("0 unhandled exceptions or tracebacks in the operator logs", tracebacks == 0 and not errors,
                     f"{tracebacks} tracebacks, {len(errors)} ERROR records", "0 and 0", tuple(errors[:20]), (),
                     {"tracebacks": tracebacks, "error_records": len(errors)})


def secrets(tokens: Iterable[str], logs: Mapping[str, Path], gpuvms: Mapping[Key, Any], claims: Mapping[Key, Any],
            events: list[Mapping[str, Any]]) -> Invariant:
    """No bearer token (the simulator's, and each token the operator was given) in any operator
    log, GpuVm or claim status, or Event."""
    tokens = [t for t in tokens if t]
    found: list[str] = []
    for name, path in sorted(logs.items()):
        if name.startswith("operator") and path.exists():
            data = path.read_text(errors="replace")
            found.extend(f"{name} log" for t in tokens if t in data)
    texts = {"GpuVm status": str([o.get("status") for o in gpuvms.values()]),
             "claim status": str([c.get("status") for c in claims.values()]),
             "Events": str([(e.get("reason"), e.get("message")) for e in events])}
    for where, text in texts.items():
        found.extend(where for t in tokens if t in text)
    return Invariant("0 secrets in logs, status or Events", not found,
                     f"{len(found)} found in {sum(1 for n in logs if n.startswith('operator'))} operator logs, "
                     f"{len(gpuvms)} GpuVm and {len(claims)} claim statuses, {len(events)} Events ({len(tokens)} tokens)",
                     "0", tuple(found), (), {"found": len(found), "tokens": len(tokens), "events": len(events)})


def rss(marks: Mapping[str, tuple[str, float]], samples: list[tuple[float, int, str, float]], rss_after: int,
        intents: int) -> Invariant:
    """RSS after all intents <= 1.1 x RSS after the first ``rss_after`` — both for the processes
    serving at those two moments, and within the life of the last one (it served the last
    stretch: from ``rss_after`` intents into its life to the end), so a restart cannot hide a leak."""
    early = marks.get(f"after {rss_after} intents")
    late = marks.get("end of intents")
    if early is None or late is None:
        return Invariant(f"RSS after {intents} intents <= 1.1 x RSS after {rss_after}", False, "not measured", "<= 1.1")
    ratio = late[1] / early[1]
    name = late[0]
    mine = [(t, applied, mib) for t, applied, proc, mib in samples if proc == name]
    life = None
    if mine:
        first = mine[0][1]
        at = next((mib for _, applied, mib in mine if applied >= first + rss_after), None)
        if at is not None and intents - first >= 2 * rss_after:
            life = (first, at, late[1] / at)
    ok = ratio <= 1.1 and (life is None or life[2] <= 1.1)
    value = f"{late[1]:.0f} MiB ({late[0]}) / {early[1]:.0f} MiB ({early[0]}) = {ratio:.3f}"
    if life is not None:
        value += f"; within {name}'s life (started at intent {life[0]}): {late[1]:.0f} / {life[1]:.0f} MiB = {life[2]:.3f}"
    return Invariant(f"RSS after {intents} intents <= 1.1 x RSS after {rss_after}", ok, value, "<= 1.1", (), (),
                     {"early_mib": early[1], "late_mib": late[1], "ratio": ratio, "life_ratio": life[2] if life else None,
                      "marks": {k: list(v) for k, v in marks.items()}})


def starvation(operations: Mapping[str, Mapping[str, Any]], requests: list[Any], windows: list[tuple[float, float]],
               *, bound: float, strict: float, derivation: str, now: float) -> Invariant:
    """The starvation guard (testbed/azuresim/recording.py ``unobserved``): no operation of the
    operator's goes longer than ``bound`` without a request that could tell its state, counted
    over every operation while an operator could act (not across a kill, a failover or an
    expired token: ``windows``). ``bound`` allows for faulted requests (one held and dropped
    observes nothing); operations during which no request about them was faulted are held to
    ``strict`` (I + N / P + slack, the budget's bound alone)."""
    ops = [OperationRecord(o["id"], o["vm"], o["resource_group"], o["action"], o["origin"], o["start"], o["end"], o["status"])
           for o in operations.values()]
    log = [RequestRecord(r.time, r.method, r.path, r.operation, r.vm, r.status) for r in requests]
    measured = unobserved(ops, log, now=now)
    by_id = {o.id: o for o in ops}

    def disrupted(u: Any) -> bool:
        op = by_id[u.operation]
        end = (op.end if op.end is not None else now) + (u.seen_ended_after or 0.0)
        return any(a <= end and op.start <= b for a, b in windows)

    faulted: dict[str, list[float]] = {}  # per VM, operation id, group, "*" (walks): faulted request times
    for r in requests:
        if 200 <= r.status < 300:
            continue
        if r.operation in ("Operations.Status", "Operations.Result"):
            faulted.setdefault(_operation_id(r.path), []).append(r.time)
        elif r.operation == "VirtualMachines.ListAll":
            faulted.setdefault("*", []).append(r.time)
        elif r.operation == "VirtualMachines.List":
            faulted.setdefault("rg:" + _resource_group(r.path), []).append(r.time)
        elif r.vm:
            faulted.setdefault(r.vm.lower(), []).append(r.time)

    def clean(u: Any) -> bool:
        op = by_id[u.operation]
        end = (op.end if op.end is not None else now) + (u.seen_ended_after or 0.0)
        keys = (op.id.lower(), op.vm.lower(), "rg:" + op.resource_group.lower(), "*")
        return not any(op.start <= t <= end for k in keys for t in faulted.get(k, ()))

    judged = [u for u in measured if not disrupted(u)]
    worst = sorted(judged, key=lambda u: u.longest, reverse=True)
    over = [u for u in worst if u.longest > bound] + [u for u in worst if clean(u) and strict < u.longest <= bound]
    clean_worst = [u for u in worst if clean(u)]
    never = [u for u in judged if u.seen_ended_after is None and by_id[u.operation].end is not None]
    longest = worst[0].longest if worst else 0.0
    value = (f"longest {longest:.1f} s over {len(judged)} operations "
             f"({len(measured) - len(judged)} spanning a kill, failover or expired token left out"
             f"{f'; longest of those {max(u.longest for u in measured if disrupted(u)):.1f} s' if len(measured) > len(judged) else ''}); "
             f"longest {clean_worst[0].longest if clean_worst else 0.0:.1f} s over the {len(clean_worst)} "
             f"that met no faulted request")
    return Invariant("no operation unobserved longer than the starvation bound", not over and not never, value,
                     f"<= {bound:.1f} s ({derivation}); <= {strict:.1f} s without a faulted request about it",
                     tuple(f"{u.vm} {u.action}: {u.longest:.1f} s{'' if u.longest > bound else ' (no fault met)'}"
                           for u in over[:20])
                     + tuple(f"{u.vm} {u.action}: its end never observed" for u in never[:10]), (),
                     {"longest": longest, "judged": len(judged), "left_out": len(measured) - len(judged), "bound": bound,
                      "strict_bound": strict, "clean": len(clean_worst),
                      "clean_longest": clean_worst[0].longest if clean_worst else 0.0,
                      "p99": worst[len(worst) // 100].longest if worst else 0.0})


def recording(missed: int, requests: int, errors: list[str]) -> Invariant:
    """The record the other checks rest on is whole: no request dropped from the simulator's log
    before the soak read it, and the driver itself met no error."""
    return Invariant("the record is complete", missed == 0 and not errors, f"{requests} requests recorded, {missed} missed; "
                     f"{len(errors)} driver errors", "0 and 0", tuple(errors[:20]), (), {"requests": requests, "missed": missed})


def disruptions(records: list[Any], planned: int) -> Invariant:
    bad = [f"{r.kind}: {r.detail.get('error')}" for r in records if r.detail.get("error")]
    bad += [f"{r.kind}: exit code {r.detail.get('exit_code')}" for r in records
            if r.kind == "sigterm-to-ha" and r.detail.get("exit_code") != 0]
    done = len(records) - len([r for r in records if r.detail.get("error")])
    return Invariant("every disruption done, the SIGTERM a clean exit", not bad and done == planned,
                     f"{done} of {planned}", f"{planned}", tuple(bad), (), {"done": done, "planned": planned})
