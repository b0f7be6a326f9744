"""The GpuVmClaims this operator knows: who needs which GpuVm, until when.

Kept per claim is what liveness and the claim's status need, never the body: the parsed claim,
its status fingerprints (controller/status.py ``StatusMemory``) and the Ready condition last
written. Claims are indexed by the GpuVm they name (its demand) and by their owner Pods' uids (a
finished owner releases its claims at once). Owner Pod phases arrive from the claimant Pod watch
(controller/pods.py) or from GETs of unlabelled owners, which ``reads_due`` asks for.

Pure bookkeeping: no I/O, no clock of its own; the engine wires it to the API and the scheduler.
"""

from __future__ import annotations

import datetime as dt
from collections import ChainMap
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from controller.demand import CLAIM_PLURAL, Claim, ClaimPhase, LiveClaim, Liveness, liveness, live_until, parse_claim
from controller.reasons import SpecError
from controller.status import StatusMemory, fingerprint, resource_version

GpuVmKey = tuple[str, str]  # (namespace, name)
ClaimKey = tuple[str, str, str]  # (CLAIM_PLURAL, namespace, name): apart from GpuVm keys in one scheduler


@dataclass(slots=True, eq=False)
class TrackedClaim:
    namespace: str
    name: str
    uid: str
    generation: int
    claim: Claim | SpecError
    memory: StatusMemory
    conditions: tuple[Mapping[str, Any], ...] = ()  # the Ready condition last rendered
    phase: ClaimPhase | None = None  # the phase last rendered (Events are posted on changes)
    pod_reads: dict[str, float] = field(default_factory=dict)  # owner uid -> loop time of its last GET

    @property
    def key(self) -> ClaimKey:
        return (CLAIM_PLURAL, self.namespace, self.name)

    @property
    def gpuvm_key(self) -> GpuVmKey | None:
        return (self.namespace, self.claim.gpu_vm) if isinstance(self.claim, Claim) else None

    @property
    def ref(self) -> dict[str, Any]:
        """Enough of a body for kopf to post an Event about it."""
        return {"apiVersion": "gpuvm.dev/v1alpha1", "kind": "GpuVmClaim",
                "metadata": {"namespace": self.namespace, "name": self.name, "uid": self.uid}}


class ClaimBook:
    def __init__(self) -> None:
        self.claims: dict[ClaimKey, TrackedClaim] = {}
        self._of: dict[GpuVmKey, set[ClaimKey]] = {}
        self._owned: dict[str, set[ClaimKey]] = {}  # owner Pod uid -> claims it owns
        self.pod_phases: dict[str, str] = {}  # owner Pod uid -> phase, as changes and GETs told
        # uid -> phase of every labelled Pod the claimant watch holds (controller/pods.py): read at
        # liveness time, so a phase listed before its claim was known is not lost.
        self.watched: Mapping[str, str] = {}

    def seen(self, body: Mapping[str, Any]) -> tuple[TrackedClaim, set[GpuVmKey]]:
        """Record a claim's latest body; returns it and the GpuVms whose demand it changed (none
        when only its status or unrelated metadata changed: the watch events of its own status
        writes wake nobody)."""
        meta = body.get("metadata") or {}
        namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
        status = body.get("status") if isinstance(body.get("status"), Mapping) else {}
        key: ClaimKey = (CLAIM_PLURAL, namespace, name)
        affected: set[GpuVmKey] = set()
        c = self.claims.get(key)
        if c is not None and c.uid != meta.get("uid"):
            affected |= self.gone(namespace, name)
            c = None
        parsed = parse_claim(body)
        generation = meta.get("generation") if isinstance(meta.get("generation"), int) else 1
        if c is None:
            conditions = status.get("conditions")
            c = TrackedClaim(
                namespace=namespace, name=name, uid=str(meta.get("uid") or ""), generation=generation, claim=parsed,
                memory=StatusMemory(fingerprint(status), resource_version(meta.get("resourceVersion"))),
                conditions=tuple(x for x in conditions if isinstance(x, Mapping)) if isinstance(conditions, list) else (),
                phase=_phase(status.get("phase")),
            )
            self.claims[key] = c
        elif parsed == c.claim and generation == c.generation:
            return c, affected
        else:
            self._unindex(c)
            if c.gpuvm_key is not None:
                affected.add(c.gpuvm_key)  # a claim moving away (a bypassed immutability) releases it
            c.claim, c.generation = parsed, generation
        self._index(c)
        if c.gpuvm_key is not None:
            affected.add(c.gpuvm_key)
        return c, affected

    def reported(self, body: Mapping[str, Any]) -> bool:
        """The status in a watch event; True when someone else rewrote it."""
        meta = body.get("metadata") or {}
        c = self.claims.get((CLAIM_PLURAL, str(meta.get("namespace") or ""), str(meta.get("name") or "")))
        status = body.get("status") if isinstance(body.get("status"), Mapping) else {}
        return c is not None and c.memory.report(fingerprint(status), resource_version(meta.get("resourceVersion")))

    def gone(self, namespace: str, name: str) -> set[GpuVmKey]:
        c = self.claims.pop((CLAIM_PLURAL, namespace, name), None)
        if c is None:
            return set()
        self._unindex(c)
        return {c.gpuvm_key} if c.gpuvm_key is not None else set()

    def _index(self, c: TrackedClaim) -> None:
        if c.gpuvm_key is not None:
            self._of.setdefault(c.gpuvm_key, set()).add(c.key)
        if isinstance(c.claim, Claim):
            for pod in c.claim.owner_pods:
                self._owned.setdefault(pod.uid, set()).add(c.key)

    def _unindex(self, c: TrackedClaim) -> None:
        if c.gpuvm_key is not None:
            keys = self._of.get(c.gpuvm_key, set())
            keys.discard(c.key)
            if not keys:
                self._of.pop(c.gpuvm_key, None)
        if isinstance(c.claim, Claim):
            for pod in c.claim.owner_pods:
                owned = self._owned.get(pod.uid, set())
                owned.discard(c.key)
                if not owned:
                    self._owned.pop(pod.uid, None)
                    self.pod_phases.pop(pod.uid, None)

    def of(self, gpuvm: GpuVmKey) -> Iterator[TrackedClaim]:
        for key in self._of.get(gpuvm, ()):
            yield self.claims[key]

    def count(self, gpuvm: GpuVmKey) -> int:
        return len(self._of.get(gpuvm, ()))

    def liveness(self, c: TrackedClaim, now: dt.datetime) -> Liveness | None:
        """None for a claim the operator cannot read (its status says why)."""
        if not isinstance(c.claim, Claim):
            return None
        return liveness(c.claim, now=now, pod_phases=ChainMap(self.pod_phases, self.watched))  # type: ignore[arg-type]

    def live(self, gpuvm: GpuVmKey, now: dt.datetime) -> list[LiveClaim]:
        out = []
        for c in self.of(gpuvm):
            live = self.liveness(c, now)
            if live is not None and live.live:
                out.append(LiveClaim(c.name, live.until))
        return out

    def last_live(self, gpuvm: GpuVmKey, now: dt.datetime) -> dt.datetime | None:
        """The latest moment a claim of ``gpuvm`` that is no longer live was (``live_until``)."""
        ends = []
        for c in self.of(gpuvm):
            live = self.liveness(c, now)
            if live is not None and isinstance(c.claim, Claim):
                ends.append(live_until(c.claim, live))
        return max((e for e in ends if e is not None), default=None)

    def pod_phase(self, uid: str, phase: str | None) -> set[ClaimKey]:
        """An owner Pod's phase (None: gone); returns the claims it owns when that changed."""
        if uid not in self._owned:
            return set()
        before = self.pod_phases.get(uid)
        if phase is None:
            self.pod_phases.pop(uid, None)
        else:
            self.pod_phases[uid] = phase
        return set(self._owned[uid]) if before != phase else set()

    def reads_due(self, c: TrackedClaim, *, now: float, every: float) -> list[tuple[str, str]]:
        """(pod name, uid) of owner Pods the watch does not cover whose phase is due a GET."""
        if not isinstance(c.claim, Claim) or c.claim.deleting:
            return []
        due = []
        for pod in c.claim.owner_pods:
            if pod.uid in self.watched or self.pod_phases.get(pod.uid) in ("Succeeded", "Failed"):
                continue
            if now - c.pod_reads.get(pod.uid, float("-inf")) >= every:
                c.pod_reads[pod.uid] = now
                due.append((pod.name, pod.uid))
        return due


def _phase(value: Any) -> ClaimPhase | None:
    try:
        return ClaimPhase(value)
    except ValueError:
        return None


def invalid_claim_message(error: SpecError) -> str:
    return f"the claim cannot be read: {error.field}: {error.message}"
