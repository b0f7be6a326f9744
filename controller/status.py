"""``status`` of a GpuVm: written from a Decision, read back after a restart.

Both directions are pure. Reading is forgiving on purpose: a status written by an older version,
edited by hand or half-pruned must never stop reconciliation — unreadable parts are ignored and
rebuilt from observation. Writing only emits fields the CRD schema declares, so a real apiserver
prunes nothing.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from controller.decide import Decision, LastOperation, Result, StartFailures
from controller.demand import ClaimState, Demand
from controller.gpuvm import VmRef
from controller.power import Action, Observation, Trigger
from controller.timestamps import format_time, parse_time

CONDITION_READY = "Ready"
MAX_MESSAGE = 1024  # keep status small; Azure messages can be paragraphs


def _clip(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


@dataclass(frozen=True)
class PreviousStatus:
    """What the operator needs back from a status it wrote earlier."""

    converged_generation: int | None = None
    last_operation: LastOperation | None = None
    start_failures: StartFailures | None = None
    conditions: tuple[Mapping[str, Any], ...] = ()
    idle_since: dt.datetime | None = None  # status.demand.idleSince: the idle grace survives a restart
    stop_fallback: str | None = None  # status.stopMode.reason: why Hibernate fell back to a plain deallocate
    evictions: Evictions | None = None  # status.evictions


@dataclass(frozen=True)
class Evictions:
    """Spot evictions seen while the VM was wanted (``status.evictions``)."""

    count: int
    last_at: dt.datetime


def _read_last_operation(raw: Any) -> LastOperation | None:
    if not isinstance(raw, Mapping):
        return None
    try:
        action = Action(raw.get("action"))
        trigger = Trigger(raw.get("trigger"))
        result = Result(raw.get("result"))
    except ValueError:
        return None
    started = parse_time(raw.get("startedAt"))
    if started is None:
        return None
    error = raw.get("error") if isinstance(raw.get("error"), Mapping) else {}
    return LastOperation(
        action=action,
        trigger=trigger,
        started_at=started,
        result=result,
        finished_at=parse_time(raw.get("finishedAt")),
        error_code=error.get("code") if isinstance(error.get("code"), str) else None,
        error_message=error.get("message") if isinstance(error.get("message"), str) else None,
    )


def _integer(value: Any) -> int | None:
    """A JSON integer; ``true`` is not one (Python's bool is an int, the schema's integer is not)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _read_start_failures(raw: Any) -> StartFailures | None:
    if not isinstance(raw, Mapping):
        return None
    count, code, when = _integer(raw.get("count")), raw.get("lastCode"), parse_time(raw.get("nextRetryAt"))
    if count is None or count < 1 or not isinstance(code, str) or when is None:
        return None
    return StartFailures(count=count, last_code=code, next_retry_at=when)


def read_status(status: Any) -> PreviousStatus:
    if not isinstance(status, Mapping):
        return PreviousStatus()
    conditions = status.get("conditions")
    demand = status.get("demand") if isinstance(status.get("demand"), Mapping) else {}
    return PreviousStatus(
        converged_generation=_integer(status.get("convergedGeneration")),
        last_operation=_read_last_operation(status.get("lastOperation")),
        start_failures=_read_start_failures(status.get("startFailures")),
        conditions=tuple(c for c in conditions if isinstance(c, Mapping)) if isinstance(conditions, list) else (),
        idle_since=parse_time(demand.get("idleSince")),
        stop_fallback=_read_stop_fallback(status.get("stopMode")),
        evictions=_read_evictions(status.get("evictions")),
    )


def resume_from(status: Any, *, generation: int, vm_key: str | None) -> PreviousStatus:
    """The records a (re)started or resuming replica takes over from a stored status.

    What happened while no replica watched is unknown, so two records are taken only when they
    still describe this object: a status written for an older generation may predate a
    desiredState Running in between, or claims that came and went, so its ``idleSince`` would
    switch the VM off at once instead of after the grace (the idle grace restarts: it costs at
    most one idleTimeout, the other way costs a job); and the last operation and start failures
    of another VM (spec.vm edited) must not be read as this VM's (drift, backoff). A status that
    names no VM keeps them: an operation may still be in flight there.
    """
    previous = read_status(status)
    if not isinstance(status, Mapping):
        return previous
    if previous.idle_since is not None and status.get("observedGeneration") != generation:
        previous = replace(previous, idle_since=None)
    vm = status.get("vm") if isinstance(status.get("vm"), Mapping) else {}
    stored = vm.get("resourceId")
    if isinstance(stored, str) and stored and (vm_key is None or stored.lower() != vm_key):
        previous = replace(previous, last_operation=None, start_failures=None)
    return previous


def _read_stop_fallback(raw: Any) -> str | None:
    if not isinstance(raw, Mapping) or raw.get("requested") != "Hibernate" or raw.get("effective") != "Deallocate":
        return None
    reason = raw.get("reason")
    return reason if isinstance(reason, str) and reason else "Azure refused to hibernate the VM"


def _read_evictions(raw: Any) -> Evictions | None:
    if not isinstance(raw, Mapping):
        return None
    count, last = raw.get("count"), parse_time(raw.get("lastAt"))
    if isinstance(count, bool) or not isinstance(count, int) or count < 1 or last is None:
        return None
    return Evictions(count, last)


def _last_operation_dict(op: LastOperation) -> dict[str, Any]:
    out: dict[str, Any] = {
        "action": op.action.value,
        "trigger": op.trigger.value,
        "startedAt": format_time(op.started_at),
        "result": op.result.value,
    }
    if op.finished_at is not None:
        out["finishedAt"] = format_time(op.finished_at)
    if op.error_code:
        out["error"] = {"code": op.error_code, "message": _clip(op.error_message or "")}
    return out


def _ready(
    ready: bool, reason: str, message: str, *, generation: int, previous: tuple[Mapping[str, Any], ...], now: dt.datetime
) -> dict[str, Any]:
    """The Ready condition; lastTransitionTime moves only when status flips, as conventions ask."""
    status = "True" if ready else "False"
    before = next((c for c in previous if c.get("type") == CONDITION_READY), None)
    kept = parse_time(before.get("lastTransitionTime")) if before and before.get("status") == status else None
    # Re-formatted, not copied: a hand-edited "2026-02-30" would make the apiserver refuse the status.
    since = format_time(kept or now)
    return {
        "type": CONDITION_READY,
        "status": status,
        "reason": reason,
        "message": _clip(message),
        "lastTransitionTime": since,
        "observedGeneration": generation,
    }


def ready_condition(
    decision: Decision, *, generation: int, previous: tuple[Mapping[str, Any], ...], now: dt.datetime
) -> dict[str, Any]:
    return _ready(decision.ready, decision.reason.value, decision.message, generation=generation, previous=previous, now=now)


def demand_dict(demand: Demand) -> dict[str, Any]:
    """``status.demand``: absent times are left out, lists only when they have entries."""
    out: dict[str, Any] = {"decidedBy": demand.decided_by.value, "activeClaims": demand.active_claims}
    if demand.claims:
        out["claims"] = list(demand.claims)
    if demand.idle_since is not None:
        out["idleSince"] = format_time(demand.idle_since)
    if demand.deallocate_at is not None:
        out["deallocateAt"] = format_time(demand.deallocate_at)
    if demand.next_transitions:
        out["nextTransitions"] = [
            {"at": format_time(t.at), "to": t.to.value, "by": t.by.value} for t in demand.next_transitions
        ]
    return out


def render_status(
    decision: Decision,
    *,
    generation: int,
    vm: VmRef | None,
    observation: Observation | None,
    previous: PreviousStatus,
    now: dt.datetime,
    demand: Demand | None = None,
) -> dict[str, Any]:
    """The whole status the operator owns, from one decision. Absent keys mean 'not known'.

    ``demand`` (what controller.demand.evaluate said, for the same ``now``) becomes
    ``status.demand``; without it the key is absent, as for a GpuVm before claims existed.
    ``previous`` carries the records kept across steps: the Ready condition's transition time,
    a hibernation that fell back to a plain deallocate (``status.stopMode``) and Spot evictions.
    """
    status: dict[str, Any] = {"observedGeneration": generation}
    if decision.converged_generation is not None:
        status["convergedGeneration"] = decision.converged_generation
    status["powerState"] = observation.power_state.value if observation else "Unknown"
    if observation is not None:
        status["provisioningState"] = observation.provisioning_state.value
    if vm is not None:
        facts = observation.facts if observation and observation.facts else None
        vm_status: dict[str, Any] = {"resourceId": (facts and facts.resource_id) or vm.resource_id, "name": vm.name}
        if facts:
            vm_status.update(
                {k: v for k, v in (("vmId", facts.vm_id), ("size", facts.size), ("location", facts.location)) if v}
            )
        status["vm"] = vm_status
    if decision.last_operation is not None:
        status["lastOperation"] = _last_operation_dict(decision.last_operation)
    if decision.start_failures is not None:
        failures = decision.start_failures
        status["startFailures"] = {
            "count": failures.count,
            "lastCode": failures.last_code,
            "nextRetryAt": format_time(failures.next_retry_at),
        }
    if demand is not None:
        status["demand"] = demand_dict(demand)
    if previous.stop_fallback is not None:
        status["stopMode"] = {"requested": "Hibernate", "effective": "Deallocate", "reason": _clip(previous.stop_fallback)}
    if previous.evictions is not None:
        status["evictions"] = {"count": previous.evictions.count, "lastAt": format_time(previous.evictions.last_at)}
    status["conditions"] = [ready_condition(decision, generation=generation, previous=previous.conditions, now=now)]
    return status


def render_claim_status(
    state: ClaimState, *, generation: int, previous: Any, now: dt.datetime
) -> dict[str, Any]:
    """The whole status of a GpuVmClaim (``previous``: its current status, for lastTransitionTime)."""
    before = previous.get("conditions") if isinstance(previous, Mapping) else None
    conditions = tuple(c for c in before if isinstance(c, Mapping)) if isinstance(before, list) else ()
    return {
        "phase": state.phase.value,
        "observedGeneration": generation,
        "conditions": [
            _ready(state.ready, state.reason.value, state.message, generation=generation, previous=conditions, now=now)
        ],
    }


# ----------------------------------------------------------------------------- repair bookkeeping


def fingerprint(status: Mapping[str, Any] | None) -> int:
    """Equal for equal statuses, whatever their key order; cheap to keep for thousands."""
    return hash(json.dumps(status or {}, sort_keys=True, separators=(",", ":"), default=str))


def resource_version(value: Any) -> int:
    """resourceVersions are opaque strings; kube-apiserver's are etcd revisions. Comparing them
    as numbers orders a watch event against a write response; anything else counts as newest."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return 1 << 62


@dataclass(slots=True)
class StatusMemory:
    """Fingerprints of one object's status, so that the operator writes exactly when what it
    would write differs from what the API server stores — its own view changed, or someone else
    rewrote the status — and never because of the watch events of its own writes.

    ``reported``: the status the API server last reported (watch events and write responses,
    ordered by resourceVersion); ``written``: what this process last wrote, and ``written_as``:
    that status as the server stored it (defaults or pruning may differ from what was sent).
    """

    reported: int
    reported_rv: int
    written: int | None = None
    written_as: int | None = None
    writing: bool = False

    def report(self, status_fingerprint: int, rv: int) -> bool:
        """A watch event; True when it shows someone else's status (the object should be woken)."""
        if rv <= self.reported_rv:
            return False  # older than what we know: an event overtaken by our own write
        self.reported, self.reported_rv = status_fingerprint, rv
        return not self.writing and self.written_as is not None and status_fingerprint != self.written_as

    def due(self, wanted: int) -> str | None:
        """Why ``wanted`` must be written: "change" (our view moved), "repair" (the stored status
        is someone else's), or None: stored already."""
        if self.written is None and wanted == self.reported:
            self.written = self.written_as = wanted  # a restart: what is stored is already right
            return None
        if wanted == self.written and self.reported == self.written_as:
            return None
        return "change" if wanted != self.written else "repair"

    def stored(self, wanted: int, stored_fingerprint: int, rv: int) -> bool:
        """Our write landed; True when a newer foreign write overtook it (wake to repair)."""
        self.written, self.written_as = wanted, stored_fingerprint
        if rv >= self.reported_rv:
            self.reported, self.reported_rv = stored_fingerprint, rv
            return False
        return self.reported != stored_fingerprint
