"""``status`` of a GpuVm: written from a Decision, read back after a restart.

Both directions are pure. Reading is forgiving on purpose: a status written by an older version,
edited by hand or half-pruned must never stop reconciliation — unreadable parts are ignored and
rebuilt from observation. Writing only emits fields the CRD schema declares, so a real apiserver
prunes nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from controller.decide import Decision, LastOperation, Result, StartFailures
from controller.gpuvm import VmRef
from controller.power import Action, Observation, Trigger

CONDITION_READY = "Ready"
MAX_MESSAGE = 1024  # keep status small; Azure messages can be paragraphs


def format_time(when: dt.datetime) -> str:
    """RFC 3339 in UTC with second precision, as Kubernetes writes its own timestamps."""
    # isoformat, not strftime("%Y"): glibc writes the year 999 as "999", which is no RFC 3339.
    return when.astimezone(dt.timezone.utc).replace(microsecond=0, tzinfo=None).isoformat() + "Z"


def parse_time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        # In UTC now: "0001-01-01T00:00:00+14:00" is a valid string but no UTC date (OverflowError).
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)).astimezone(dt.timezone.utc)
    except (ValueError, OverflowError):
        return None


def _clip(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


@dataclass(frozen=True)
class PreviousStatus:
    """What the operator needs back from a status it wrote earlier."""

    converged_generation: int | None = None
    last_operation: LastOperation | None = None
    start_failures: StartFailures | None = None
    conditions: tuple[Mapping[str, Any], ...] = ()


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
    return PreviousStatus(
        converged_generation=_integer(status.get("convergedGeneration")),
        last_operation=_read_last_operation(status.get("lastOperation")),
        start_failures=_read_start_failures(status.get("startFailures")),
        conditions=tuple(c for c in conditions if isinstance(c, Mapping)) if isinstance(conditions, list) else (),
    )


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


def ready_condition(
    decision: Decision, *, generation: int, previous: tuple[Mapping[str, Any], ...], now: dt.datetime
) -> dict[str, Any]:
    """The Ready condition; lastTransitionTime moves only when status flips, as conventions ask."""
    status = "True" if decision.ready else "False"
    before = next((c for c in previous if c.get("type") == CONDITION_READY), None)
    kept = parse_time(before.get("lastTransitionTime")) if before and before.get("status") == status else None
    # Re-formatted, not copied: a hand-edited "2026-02-30" would make the apiserver refuse the status.
    since = format_time(kept or now)
    return {
        "type": CONDITION_READY,
        "status": status,
        "reason": decision.reason.value,
        "message": _clip(decision.message),
        "lastTransitionTime": since,
        "observedGeneration": generation,
    }


def render_status(
    decision: Decision,
    *,
    generation: int,
    vm: VmRef | None,
    observation: Observation | None,
    previous: PreviousStatus,
    now: dt.datetime,
) -> dict[str, Any]:
    """The whole status the operator owns, from one decision. Absent keys mean 'not known'."""
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
    status["conditions"] = [ready_condition(decision, generation=generation, previous=previous.conditions, now=now)]
    return status


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7386 patch turning ``old`` into ``new`` (keys gone become null); empty if equal."""
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            nested = merge_patch(before, value)
            if nested:
                patch[key] = nested
        elif before != value or key not in old:
            patch[key] = value
    return patch
