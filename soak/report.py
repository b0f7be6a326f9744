"""The soak's verdict as people read it: the invariants with their measured values, the counts of
intents and faults, the disruptions, and — for a failed invariant — the seed, the command that
replays the GpuVm concerned and its minimal history. Written as the "Chaos soak" section of
docs/reliability.md (the other sections are kept) and as reports/soak.json.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from soak import invariants as inv
from soak.driver import Collected, azure_fault_spec, kube_fault_specs, model_operations
from soak.plan import Key

SECTION = "## Chaos soak"
# The starvation guard's bound in the soak, from the budget as in tests/integration/test_scale.py
# (I + N / P + slack) with the soak's numbers, plus what a faulted request costs: see BOUND_TEXT.
POLL_INTERVAL = 1.0  # the simulator's Retry-After on running operations (--retry-after 1): I
POLL_RATE = 8.0  # poll budget: Azure's 10/s x the operator's 0.8 share: P
TIMEOUT_FAULT = 5.0  # a chaos "timeout" holds a request this long, then drops it
SLACK = 2.0


def starvation_bound(max_in_flight: int) -> tuple[float, float, str]:
    """(the bound under faults, the budget's own bound I + N / P + slack, how they are derived)."""
    strict = POLL_INTERVAL + max_in_flight / POLL_RATE + SLACK
    bound = strict + 2 * TIMEOUT_FAULT
    text = (f"poll interval {POLL_INTERVAL:g} s + {max_in_flight} operations in flight at most / {POLL_RATE:g} polls per s "
            f"+ {SLACK:g} s slack + two faulted requests in a row held {TIMEOUT_FAULT:g} s each")
    return bound, strict, text


def max_in_flight(operations: Mapping[str, Mapping[str, Any]], now: float) -> int:
    events = []
    for o in operations.values():
        if o["origin"] == "api":
            events.append((o["start"], 1))
            events.append((o["end"] if o["end"] is not None else now, -1))
    best = current = 0
    for _, step in sorted(events):
        current += step
        best = max(best, current)
    return best


def verdict(out: Collected, now: float) -> list[inv.Invariant]:
    world = out.world
    world.set_operations(model_operations(out.operations))
    windows = [r.down for r in out.disruptions if r.down is not None]
    bound, strict, derivation = starvation_bound(max_in_flight(out.operations, now))
    return [
        inv.intents_applied(len(out.plan.intents), len(out.applied), out.skipped),
        inv.converged(out.convergence_misses, out.converged_at, out.faults_off, out.quiet, out.plan.config.settle,
                      len([k for k in world.gpuvms if world.spec_at(k, now) is not None])),
        inv.overlaps(out.overlaps or {}, out.operations),
        inv.operations(inv.classify(world), world),
        inv.log_errors(out.logs),
        inv.secrets(out.secrets, out.logs, out.gpuvms, out.claims, out.events),
        inv.rss(out.rss_marks, out.rss, out.plan.config.rss_after, len(out.plan.intents)),
        inv.starvation(out.operations, out.requests, windows, bound=bound, strict=strict, derivation=derivation, now=now),
        inv.disruptions(out.disruptions, len(out.plan.disruptions)),
        inv.recording(out.requests_missed, len(out.requests), out.errors),
    ]


def history(out: Collected, key: Key, *, limit: int = 60) -> list[str]:
    """The minimal event history of one GpuVm: its intents as applied, the power operations on
    the VMs it named, its status as the watch saw it, and the disruptions — in time order."""
    t0 = out.intents_started
    lines: list[tuple[float, str]] = []
    vms = set()
    for change in out.world.gpuvms.get(key, []):
        if change.spec is not None:
            vms.add(change.spec["vm"].lower())
    for intent, at, outcome in out.applied:
        if intent.key == key:
            lines.append((at, f"intent {intent.describe()} -> {outcome}"))
    for vm_ops in (out.world.operations.get(vm, []) for vm in sorted(vms)):
        for op in vm_ops:
            end = f"{op.end - t0:+.1f}s" if op.end is not None else "never"
            lines.append((op.start, f"azure {op.origin} {op.action} of {op.vm}: {op.status}, ended {end}"))
    for vm in sorted(vms):
        record = next((r for r in out.world.vms.values() if r.name.lower() == vm), None)
        if record is None:
            continue
        for a, b in record.deleted:
            lines.append((a, f"azure VM {record.name} deleted" + (f", restored {b - t0:+.1f}s" if b else "")))
        for a, b in record.untagged:
            lines.append((a, f"azure VM {record.name} opt-in tag removed" + (f", restored {b - t0:+.1f}s" if b else "")))
    for at, line in out.versions.get(key, []):
        lines.append((at, f"status {line}"))
    for r in out.disruptions:
        lines.append((r.at, f"DISRUPTION {r.kind} {r.detail}"))
    lines.sort(key=lambda x: x[0])
    shown = [f"{at - t0:+9.2f}s {text}" for at, text in lines]
    return shown[-limit:]


def counts(out: Collected) -> dict[str, Any]:
    intents = out.plan.counts()
    outcomes = Counter(f"{i.kind.value}: {o}" for i, _, o in out.applied
                       if i.kind.value in ("out-of-band", "evict", "claim-delete", "lease-renew"))
    azure = {}
    for fault in out.azure_faults:
        azure[fault.get("spec", "")] = {"fired": fault.get("fired"), "drawn": fault.get("drawn")}
    kube = {"fired": (out.kube_faults or {}).get("fired"),
            "faults": [{"spec": f.get("spec"), "fired": f.get("fired")} for f in (out.kube_faults or {}).get("faults", [])]}
    requests = Counter(r.operation for r in out.requests)
    statuses = Counter(r.status for r in out.requests)
    return {"intents": intents, "outcomes": dict(sorted(outcomes.items())), "azure_faults": azure, "kube_faults": kube,
            "azure_requests": dict(sorted(requests.items())), "azure_statuses": {str(k): v for k, v in sorted(statuses.items())}}


def as_json(out: Collected, results: list[inv.Invariant], elapsed: float) -> dict[str, Any]:
    c = out.plan.config
    return {
        "seed": c.seed, "config": {k: getattr(c, k) for k in c.__dataclass_fields__},
        "elapsed_seconds": round(elapsed, 1),
        "intent_phase_seconds": round(out.intents_done - out.intents_started, 1),
        "passed": all(r.ok for r in results),
        "invariants": [{"name": r.name, "ok": r.ok, "value": r.value, "bound": r.bound, "details": list(r.details),
                        "numbers": r.numbers} for r in results],
        "counts": counts(out),
        "disruptions": [{"kind": r.kind, "planned": r.planned, "at": round(r.at - out.intents_started, 1), **r.detail,
                         **({"no_operator_seconds": round(r.down[1] - r.down[0], 1)} if r.down else {})}
                        for r in out.disruptions],
        "faults": {"azure": azure_fault_spec(c.seed, c.azure_fault_p) if c.azure_fault_p else None,
                   "kubernetes": kube_fault_specs(c.seed) if c.kube_faults else []},
        "commands": out.commands,
    }


def failures(out: Collected, results: list[inv.Invariant]) -> str:
    """What a failed run prints: the seed, each broken invariant, and for the GpuVms concerned
    the command replaying them and their history."""
    seed = out.plan.config.seed
    lines = []
    for r in results:
        if r.ok:
            continue
        lines.append(f"FAILED: {r.name}: {r.value} (bound: {r.bound}); seed {seed}")
        lines.extend(f"    {d}" for d in r.details[:20])
        for name in r.concerned[:3]:
            ns, _, gpuvm = name.partition("/")
            lines.append(f"  replay: ./dev soak --seed {seed} --only-vm {name}")
            lines.append(f"  history of {name} (seconds from the first intent):")
            lines.extend(f"    {h}" for h in history(out, (ns, gpuvm)))
    return "\n".join(lines)


def markdown(data: Mapping[str, Any]) -> str:
    c = data["config"]
    lines = [
        SECTION, "",
        "`./dev soak` (`python -m soak`, package `soak/`) runs the real `gpuvm-operator run` process(es) against "
        "`gpuvm-operator kube-emulator` and `gpuvm-operator azure-sim` over loopback, applies a seeded stream of "
        "intents while both sides misbehave and the operator is killed, then stops the faults and checks every "
        "invariant below. A failed invariant prints the seed, the GpuVms concerned, their minimal event history "
        "and the command replaying one of them (`./dev soak --seed N --only-vm NAMESPACE/NAME`). CI runs a short "
        "soak as a test (`tests/soak/test_soak.py`: 40 GpuVms, 1,000 intents, one kill).", "",
        f"Last full run: seed {data['seed']}, {c['gpuvms']} GpuVms in {c['namespaces']} namespaces, "
        f"{c['intents']:,} intents planned at {c['rate']:g} per second (the intent phase took "
        f"{data['intent_phase_seconds']:.0f} s), {data['elapsed_seconds']:.0f} s in all "
        f"({'passed' if data['passed'] else 'FAILED'}).", "",
        "| Invariant | Measured | Bound | Holds |", "| --- | --- | --- | --- |",
    ]
    for r in data["invariants"]:
        lines.append(f"| {r['name']} | {r['value']} | {r['bound']} | {'yes' if r['ok'] else '**no**'} |")
    lines += ["", "### Intents", "", "| Intent | Count |", "| --- | ---: |"]
    for name, n in data["counts"]["intents"].items():
        lines.append(f"| {name} | {n:,} |")
    outcomes = data["counts"]["outcomes"]
    if outcomes:
        lines += ["", "Outcomes in Azure and the API server: " + ", ".join(f"{k} {v}" for k, v in outcomes.items()) + "."]
    lines += ["", "### Faults", "", f"Azure (`POST /_sim/faults`): `{data['faults']['azure']}`."]
    for spec, fired in data["counts"]["azure_faults"].items():
        drawn = fired.get("drawn") or {}
        lines.append(f"It fired {fired.get('fired'):,} times: " + ", ".join(f"{k} {v:,}" for k, v in sorted(drawn.items())) + ".")
    statuses = data["counts"]["azure_statuses"]
    lines.append(f"Requests Azure saw: {sum(statuses.values()):,} (by status: "
                 + ", ".join(f"{k} {v:,}" for k, v in statuses.items()) + "; 0 is a dropped connection).")
    lines += ["", "Kubernetes (`POST /_emu/faults`), fired: "
              + ", ".join(f"{k} {v:,}" for k, v in sorted(((data['counts']['kube_faults'] or {}).get('fired') or {}).items())) + ":"]
    lines += [f"- `{f['spec']}` ({f['fired']:,})" for f in data["counts"]["kube_faults"].get("faults", [])]
    lines += ["", "### Disruptions", "", "| Planned at | Disruption | What happened |", "| ---: | --- | --- |"]
    for d in data["disruptions"]:
        detail = ", ".join(f"{k} {v}" for k, v in d.items() if k not in ("kind", "planned", "at"))
        lines.append(f"| {d['planned']:.0f} s | {d['kind']} | {detail} |")
    lines += ["", "### How the invariants are judged", "",
              "- *Converged*: after the last intent the faults are removed; once time-based demand is quiet (leases "
              "lapsed, claims expired, schedule edges and idle graces passed), every GpuVm must show, all at the same "
              "moment: Azure's power as the desired state or the demand wants it and no operation running, Ready True "
              "for its generation (or Drifted, where driftPolicy Report and someone else changed the VM after the last "
              "spec change), status.powerState and status.vm as Azure has them, status.demand as the live claims and "
              "the schedule say; every claim its phase by the contract and Ready True exactly when its VM runs for it. "
              "Convergence time is counted from the moment the faults stopped.",
              "- *Operations*: every start and deallocate Azure ran for the operator (the simulator's operation record) "
              "is judged against the intents as applied (soak/model.py, written from the contract): needed if an "
              "intent in force at its request, or up to 10 s before (the operator had not seen a newer one yet), "
              "wanted it and the VM was not already there; a documented retry if the previous operation of the same "
              "kind on the VM failed or was cancelled; otherwise excess. A VM whose opt-in tag was removed may be "
              "acted on for 3 x --tag-refresh-interval (the documented age of the consent); an owner Pod without the "
              "claimant label is read once per resync.",
              "- *Overlaps*: the simulator records every power request that arrives while an operation runs on the "
              "VM. The operator's own must never overlap; a request that meets another client's operation (one begun "
              "out of band a moment before) is answered 409 by Azure and counted apart.",
              "- *Starvation guard*: `GET /_sim/unobserved`'s measure (testbed/azuresim/recording.py) over the whole "
              "run: for each operation of the operator's, the longest stretch without a successful request that "
              "could tell its state, until the first one after its end. Operations spanning a kill, the failover "
              "or the expired token are left out (no operator could look), and listed with their longest gap.",
              "- *RSS*: the operator serving after 1,000 intents against the one serving after the last, and within "
              "the life of the last process (from its 1,000th intent to the end), so that a restart cannot hide a leak.",
              "",
              f"The operator ran with `{' '.join(_flags(data))}` (the shipped defaults compressed in time; the "
              "simulator's transitions take 1-4 s, its operations answer `Retry-After: 1`, list pages hold 100 VMs).",
              ]
    return "\n".join(lines) + "\n"


def _flags(data: Mapping[str, Any]) -> list[str]:
    from soak.driver import OPERATOR_FLAGS

    return list(OPERATOR_FLAGS)


def write_section(path: Path, section: str) -> None:
    """Replace the soak's section of ``path`` (up to the next ``## `` heading), keeping the rest."""
    text = path.read_text() if path.exists() else "# Reliability\n"
    start = text.find(SECTION + "\n")
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(SECTION))
        text = text[:start] + section + ("\n" + text[end + 1:] if end >= 0 else "")
    path.write_text(text)


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, default=str) + "\n")
