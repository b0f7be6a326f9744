"""The imperative shell around ``decide``: observe, decide, act, write status — per GpuVm.

One scheduler (controller/scheduler.py) steps every GpuVm: watch events, bulk walks and finished
operations wake a GpuVm; a step returns when it wants to be looked at again. A step never waits
for Azure: observations come from the fleet's cache (controller/fleet.py), which reads on its own
and wakes the GpuVm when a read lands; a power operation is requested by a task of its own that
records how the request went and wakes the GpuVm. So a few workers keep thousands of GpuVms
current, and a slow or throttled Azure delays only the GpuVms that wait for it.

What is kept per GpuVm (``Tracked``) is only what reconciling needs: keys, the parsed spec, the
records the operator keeps in status (``PreviousStatus``: last operation, start failures, the
converged generation, the Ready condition) and fingerprints of the status — never whole bodies.
All state that must survive a restart is in ``status``; what lives here besides is only what
cannot be persisted meaningfully: operations this process follows, the fleet's observations,
and back-off clocks of failed requests.

Status is level-triggered too. The engine remembers a fingerprint of the status the API server
last reported (watch events and its own write responses, ordered by resourceVersion) and of what
it last wrote; whenever what it would write differs from what is stored — because its view
changed, or because someone else rewrote the status — the next step writes the whole status
again. A foreign status change wakes the GpuVm at once; the operator's own writes do not.

Concurrency: one event loop, so fields are read and written without locks, but a step must not
keep stale copies across an ``await`` — inputs to ``decide`` are gathered after the last one,
and records are updated before the status write is awaited.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import random
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from controller import decide as core
from controller.azure_compute import AzureCompute, AzureFailureError
from controller.claims import ClaimBook, ClaimKey, TrackedClaim, invalid_claim_message
from controller.decide import Decision, RequestFailure, Situation, Timing
from controller.demand import (
    CLAIM_PLURAL,
    Claim,
    ClaimPhase,
    ClaimReason,
    ClaimState,
    Demand,
    GpuVmView,
    ScheduleEdge,
    ScheduleView,
    claim_event,
    claim_state,
    evaluate,
    is_on,
)
from controller.fleet import Fleet, FleetSettings, Look, VmState
from controller.gpuvm import GROUP, KIND, VERSION, GpuVmSpec, VmRef, parse_spec
from controller.guard import GuardSettings, check, needs_claim, owner_of
from controller.kube import KubeWriteError, Stored
from controller.metrics import BillingClock, GpuVmSample, Metrics
from controller.power import Action, DesiredState, Observation, PowerState, StopMode, Trigger
from controller.reasons import Failure, Reason, SpecError
from controller.scheduler import Scheduler
from controller.schedule import edges, is_open
from controller.timestamps import format_time, parse_time
from controller.status import (
    Evictions,
    PreviousStatus,
    StatusMemory,
    fingerprint,
    resume_from,
    ready_condition,
    render_claim_status,
    render_status,
    resource_version,
)

log = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]
Key = tuple[str, str]  # a GpuVm: (namespace, name); claims are keyed apart (controller/claims.py)

# A GpuVm in one of these states can never be acted on by deleting it harder: release it.
_RELEASE_ON_DELETE = frozenset(
    {Reason.INVALID_SPEC, Reason.VM_NOT_FOUND, Reason.NOT_MANAGED, Reason.NAMESPACE_NOT_ALLOWED, Reason.DUPLICATE_VM}
)
_QUIET_REASONS = frozenset({Reason.RECONCILED, Reason.STARTING, Reason.DEALLOCATING, Reason.WAITING_FOR_TRANSITION})


class StatusSink(Protocol):
    async def replace_status(self, namespace: str, name: str, status: Mapping[str, Any], *, plural: str = ...) -> Stored: ...

    async def exists(self, namespace: str, name: str, uid: str) -> bool: ...

    async def stored(self, namespace: str, name: str) -> bool: ...


# An owner Pod's phase by a GET, for owners the claimant watch does not cover (None: gone).
PodReader = Callable[[str, str, str], Awaitable[str | None]]


EventEmitter = Callable[[Mapping[str, Any], str, str, str], None]

# Every GpuVmClaim body the operator serves, from one list of the API server.
ClaimLister = Callable[[], Awaitable[list[Mapping[str, Any]]]]

CLAIMS_LIST_RETRY = (1.0, 30.0)  # first and longest pause between failed lists of the claims


@dataclass(frozen=True)
class EngineSettings:
    timing: Timing = Timing()
    guard: GuardSettings = GuardSettings()
    default_subscription: str | None = None
    tag_walk: float = 300.0  # the tags (the consent) are read in bulk this often
    busy_walk: float = 0.5  # bulk walk interval while operations are in flight (the list budget paces it)
    workers: int = 32  # reconcile steps at once
    # After a resume (HA), GpuVms that kopf's re-list has not announced again within this time
    # are checked with a GET: one deleted while this replica was paused is never announced.
    resume_confirm: float = 30.0
    # A DeallocationScheduled Event this long before Auto switches a VM off (idle or schedule).
    deallocation_warning: float = 300.0
    # With a label selector (sharding), claims of GpuVms this operator does not drive are left to
    # the operator that does; claims naming no GpuVm at all are then answered by none.
    all_claims: bool = True

    @property
    def tag_refresh(self) -> float:
        """Tags older than this are re-read before acting (the bulk cycle fell behind)."""
        return 3 * self.tag_walk

    @property
    def fleet(self) -> FleetSettings:
        t = self.timing
        return FleetSettings(
            resync=t.resync, busy_walk=self.busy_walk, transition_poll=t.transition_poll,
            tag_refresh=self.tag_refresh, tag_walk=self.tag_walk,
        )


@dataclass(slots=True, eq=False)
class Tracked:
    """One GpuVm as this process knows it: what reconciling needs, nothing more."""

    namespace: str
    name: str
    uid: str
    created: str
    generation: int
    deleting: bool
    parsed: GpuVmSpec | SpecError
    previous: PreviousStatus  # the records the operator keeps in status
    memory: StatusMemory  # fingerprints: what the API server stores, what this process wrote
    view: GpuVmView | None = None  # what its claims' status says of it, from the status last rendered
    warned_for: dt.datetime | None = None  # the switch-off a DeallocationScheduled Event was posted for
    unclaimed: Any = None  # BillingClock of time billed with no live claim (Auto only)
    epoch: int = 0  # the active period in which kopf last announced it
    request_failure: RequestFailure | None = None
    last_reason: Reason | None = None
    intent_since: float | None = None  # loop time a new generation was first seen, until Ready
    generation_at: dt.datetime | None = None  # when this generation was first seen (creation: its timestamp)
    demand_seen: dt.datetime | None = None  # a live claim of it was last seen deleted then (see claim_gone)
    woken: asyncio.Event | None = None  # only while the finalizer waits on it

    @property
    def vm(self) -> VmRef | None:
        return self.parsed.vm if isinstance(self.parsed, GpuVmSpec) else None

    @property
    def key(self) -> Key:
        return (self.namespace, self.name)

    @property
    def ref(self) -> dict[str, Any]:
        """Enough of a body for kopf to post an Event about it."""
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "metadata": {"namespace": self.namespace, "name": self.name, "uid": self.uid},
        }


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _records(decision: Decision, conditions: tuple[Mapping[str, Any], ...], demand: Demand | None,
             before: PreviousStatus) -> PreviousStatus:
    return PreviousStatus(
        converged_generation=decision.converged_generation,
        last_operation=decision.last_operation,
        start_failures=decision.start_failures,
        conditions=conditions,
        idle_since=demand.idle_since if demand is not None else None,
        stop_fallback=before.stop_fallback,
        evictions=before.evictions,
    )


class Engine:
    def __init__(
        self,
        *,
        azure: AzureCompute,
        status: StatusSink,
        settings: EngineSettings,
        emit: EventEmitter,
        clock: Clock = _utcnow,
        jitter: Callable[[], float] = random.random,
        metrics: Metrics | None = None,
    ) -> None:
        self.azure = azure
        self._status = status
        self.settings = settings
        self._emit = emit
        self._clock = clock
        self._jitter = jitter
        self.metrics = metrics
        self.tracked: dict[Key, Tracked] = {}
        self._by_vm: dict[str, set[Key]] = {}
        self.book = ClaimBook()
        self.read_pod: PodReader | None = None  # GETs owner Pods the watch does not cover
        # Lists every GpuVmClaim the operator serves (operator.py wires it); None: claims come
        # only from kopf's events, and Auto GpuVms are stepped at once.
        self.list_claims: ClaimLister | None = None
        self._claims_known = True
        self._tasks: set[asyncio.Task[Any]] = set()
        self.scheduler: Scheduler[Key | ClaimKey] = Scheduler(self._scheduled_step, concurrency=settings.workers)
        self.scheduler.error_delay = settings.timing.error_retry
        self.active = False
        self.epoch = 0
        self._holders = 0
        self._stop: asyncio.Event | None = None
        self._runner: asyncio.Task[None] | None = None
        self.fleet = Fleet(azure, settings.fleet, clock=clock, on_change=self._vm_changed, wanted=self._wanted, lookup=self._vm_ref)
        azure.on_token_renewed = self._token_renewed

    def _token_renewed(self) -> None:
        """ARM accepts the operator's token again: what was refused for the old one goes now,
        not after --denied-retry (five minutes by default)."""
        self.fleet.credential_renewed()
        for t in self.tracked.values():
            refused = t.request_failure is not None and t.request_failure.failure.reason is Reason.AUTHENTICATION_FAILED
            if refused or t.last_reason is Reason.AUTHENTICATION_FAILED:
                t.request_failure = None
                self.wake(t.key)

    @property
    def vms(self) -> dict[str, VmState]:
        return self.fleet.vms

    # ---- what kopf tells us -------------------------------------------------------------

    def seen(self, body: Mapping[str, Any]) -> Tracked:
        """Record the latest body of a GpuVm; wake it when the intent changed, when it is new,
        or when someone else changed its status."""
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        generation = _int(meta.get("generation"))
        deleting = bool(meta.get("deletionTimestamp"))
        status = body.get("status")
        status = status if isinstance(status, Mapping) else {}
        rv = resource_version(meta.get("resourceVersion"))
        t = self.tracked.get(key)
        if t is not None and t.uid == meta.get("uid"):
            t.epoch = self.epoch
            if generation != t.generation or deleting != t.deleting:
                if generation != t.generation:
                    t.intent_since = asyncio.get_running_loop().time()
                    t.generation_at = self._clock()
                self._unindex(t)
                before, was_auto = t.vm, _auto(t.parsed)
                t.generation, t.deleting = generation, deleting
                t.parsed = self._parse(body.get("spec"))
                if _auto(t.parsed) and not was_auto:
                    # Back to Auto from an override: the idle grace starts now, even if no step
                    # ran under the override (a flip-flop faster than the scheduler).
                    t.previous = replace(t.previous, idle_since=None)
                if t.vm is None or before is None or t.vm.key != before.key:
                    # Another VM: the last operation and start failures were the old VM's. Under
                    # Auto a last operation that reached today's target marks a difference as
                    # drift, so the old VM's would make the new one look drifted (the soak found
                    # a GpuVm moved to a running VM left Drifted instead of idle-deallocated).
                    t.previous = replace(t.previous, last_operation=None, start_failures=None)
                t.request_failure = None  # a new intent deserves a fresh attempt
                self._index(t)
                self.wake(t.key)
            if not self.active and rv > t.memory.reported_rv:
                # A paused replica (the HA standby) keeps what the active one writes, and resumes
                # from it as a restarted process would — not from the status it read when it
                # first saw the object (a stale idleSince switched VMs off at the failover).
                t.previous = resume_from(status, generation=generation, vm_key=t.vm.key if t.vm else None)
                t.memory = StatusMemory(fingerprint(status), rv)
                return t
            if t.memory.report(fingerprint(status), rv):
                log.info("%s/%s: status was changed by someone else; repairing it", t.namespace, t.name)
                self.wake(t.key)
            return t
        if t is not None:
            self.gone(*key)
        parsed = self._parse(body.get("spec"))
        t = Tracked(
            namespace=key[0],
            name=key[1],
            uid=str(meta.get("uid") or ""),
            created=str(meta.get("creationTimestamp") or ""),
            generation=generation,
            deleting=deleting,
            parsed=parsed,
            # a (re)started operator trusts the stored records that still describe this object
            previous=resume_from(status, generation=generation,
                                 vm_key=parsed.vm.key if isinstance(parsed, GpuVmSpec) else None),
            memory=StatusMemory(fingerprint(status), rv),
            epoch=self.epoch,
            intent_since=asyncio.get_running_loop().time(),
            # The API server's whole second, rounded up: an observation from before the creation
            # must not count as after it (one extra read at worst); never later than our own now,
            # should the API server's clock run ahead.
            generation_at=_created_at(parse_time(meta.get("creationTimestamp")), self._clock()),
        )
        self.tracked[key] = t
        self._index(t)
        self.wake(key)
        self._wake_claims(key)  # their GpuVm appeared
        return t

    def gone(self, namespace: str, name: str) -> None:
        t = self.tracked.pop((namespace, name), None)
        if t is not None:
            self.scheduler.forget(t.key)
            self._unindex(t)
            if t.vm is not None and t.vm.key not in self._by_vm:
                self.fleet.drop(t.vm.key)
            if t.woken is not None:
                t.woken.set()
            self._wake_claims(t.key)  # their GpuVm is gone

    def wake(self, key: Key | ClaimKey) -> None:
        self.scheduler.wake(key)
        t = self.tracked.get(key) if len(key) == 2 else None  # type: ignore[arg-type]
        if t is not None and t.woken is not None:
            t.woken.set()

    # ---- claims -------------------------------------------------------------------------

    def claim_seen(self, body: Mapping[str, Any]) -> None:
        """A GpuVmClaim's latest body: its GpuVm's demand may have changed, and its status."""
        foreign = self.book.reported(body)
        known = len(self.book.claims)
        c, affected = self.book.seen(body)
        for key in affected:
            self.wake(key)
        if affected or foreign or len(self.book.claims) != known:
            self.wake(c.key)
        if foreign:
            log.info("%s/%s: claim status was changed by someone else; repairing it", c.namespace, c.name)

    def claim_gone(self, namespace: str, name: str) -> None:
        c = self.book.claims.get((CLAIM_PLURAL, namespace, name))
        t = self.tracked.get(c.gpuvm_key) if c is not None and c.gpuvm_key is not None else None
        if c is not None and t is not None:
            now = self._clock()
            live = self.book.liveness(c, now)
            if live is not None and live.live:
                # Demand until now, even if no step saw it (it came and went while Auto GpuVms
                # waited for the list of claims after a start): the idle grace counts from here.
                t.demand_seen = now
        for key in self.book.gone(namespace, name):
            self.wake(key)
        self.scheduler.forget((CLAIM_PLURAL, namespace, name))

    def pod_changed(self, uid: str, phase: str | None) -> None:
        """An owner Pod's phase changed (or it is gone): its claims and their GpuVms look again."""
        for key in self.book.pod_phase(uid, phase):
            c = self.book.claims.get(key)
            if c is not None:
                self.wake(c.key)
                if c.gpuvm_key is not None:
                    self.wake(c.gpuvm_key)

    def _wake_claims(self, gpuvm: Key) -> None:
        for c in self.book.of(gpuvm):
            self.scheduler.wake(c.key)

    def _parse(self, spec: Any) -> GpuVmSpec | SpecError:
        return parse_spec(spec, default_subscription=self.settings.default_subscription)

    def _index(self, t: Tracked) -> None:
        if t.vm is not None:
            self._by_vm.setdefault(t.vm.key, set()).add(t.key)

    def _unindex(self, t: Tracked) -> None:
        vm = t.vm
        if vm is None:
            return
        keys = self._by_vm.get(vm.key, set())
        keys.discard(t.key)
        if not keys:
            self._by_vm.pop(vm.key, None)
        for other in keys:  # a duplicate may now be the one allowed to act
            self.wake(other)

    def _vm_changed(self, key: str) -> None:
        """The fleet saw a VM change (or a read of it land): wake every GpuVm naming it."""
        for k in self._by_vm.get(key, ()):
            self.wake(k)

    def _wanted(self, subscription: str) -> set[str]:
        """VMs of ``subscription`` that GpuVms name, while this replica is the active one."""
        if not self.active:
            return set()
        prefix = f"/subscriptions/{subscription}/"
        return {key for key in self._by_vm if key.startswith(prefix)}

    def _vm_ref(self, key: str) -> VmRef | None:
        """The VM ``key`` as a GpuVm names it, while this replica is the active one."""
        keys = self._by_vm.get(key) if self.active else None
        if not keys:
            return None
        vm = self.tracked[next(iter(keys))].vm
        return vm

    def samples(self) -> Iterator[GpuVmSample]:
        """Per-GpuVm power state and billed seconds, for the metrics collector."""
        if not self.active:
            return
        for t in list(self.tracked.values()):
            state = self.vms.get(t.vm.key) if t.vm else None
            if state is None or state.observation is None:
                continue
            facts = state.observation.facts
            yield GpuVmSample(
                namespace=t.namespace,
                name=t.name,
                vm=state.ref.name,
                size=(facts.size if facts else None) or "",
                power_state=state.observation.power_state,
                billed_seconds=state.billing.seconds(),
                active_claims=len(self.book.live(t.key, self._clock())),
                unclaimed_billed_seconds=t.unclaimed.seconds() if t.unclaimed is not None else None,
            )

    # ---- running ------------------------------------------------------------------------

    async def run(self, stopped: Any) -> None:
        """Reconcile every GpuVm until ``stopped``: the whole time in a standalone operator,
        while this replica is the active peer in an HA one (controller/operator.py).

        Several callers may hold it at once (one per peering object of a namespaced operator):
        the scheduler runs while any of them does.
        """
        self._holders += 1
        if self._holders == 1:
            self._stop = asyncio.Event()
            self._runner = asyncio.create_task(self._run(self._stop), name="scheduler")
        runner = self._runner
        assert runner is not None and self._stop is not None
        stop_waiter = asyncio.ensure_future(stopped.wait())
        try:
            await asyncio.wait({stop_waiter, runner}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_waiter.cancel()
            self._holders -= 1
            if self._holders == 0:
                self._stop.set()
                try:
                    await asyncio.shield(runner)
                except asyncio.CancelledError:
                    runner.cancel()  # kopf gave up waiting: the running steps are cancelled
                    raise

    async def _run(self, stop: asyncio.Event) -> None:
        self.active = True
        self.epoch += 1
        if self.list_claims is not None:
            self._claims_known = False
        for key in self.tracked:
            self.scheduler.wake(key)  # resume from status, as a fresh daemon did
        confirm = asyncio.create_task(self._confirm_after_resume(self.epoch), name="confirm GpuVms")
        claims = asyncio.create_task(self._load_claims(), name="list GpuVmClaims") if self.list_claims else None
        try:
            await self.scheduler.run(stop)
        finally:
            self.active = False
            confirm.cancel()
            if claims is not None:
                claims.cancel()

    async def _load_claims(self) -> None:
        """Every claim, before an Auto GpuVm is decided on in this active period.

        kopf hands over GpuVms and claims on separate watches, in no particular order, and a
        replica resuming from a pause has missed whatever happened meanwhile. An Auto GpuVm
        decided before its claims are known looks unclaimed and is switched off once its idle
        grace has passed — under a running job (found by the chaos soak after restarts and an HA
        takeover). So Auto GpuVms wait (``_scheduled_step``) until one list of the claims is in
        the book; other GpuVms do not depend on claims and go on at once. A failed list is
        retried with a growing pause for as long as this replica is active (it is cancelled when
        it stops); meanwhile Auto VMs stay as they are, which never switches one off wrongly.
        """
        assert self.list_claims is not None
        pause, longest = CLAIMS_LIST_RETRY
        while True:
            try:
                bodies = await self.list_claims()
                break
            except Exception as e:  # noqa: BLE001 - any failure of the list: retried, said once per try
                log.warning("cannot list GpuVmClaims (%s); GpuVms in Auto wait for them; retrying in %.0f s", e, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, longest)
        for body in bodies:
            self.claim_seen(body)
        self._claims_known = True
        for t in list(self.tracked.values()):
            if _auto(t.parsed):
                self.wake(t.key)

    async def _confirm_after_resume(self, epoch: int) -> None:
        """GpuVms kopf's re-list has not announced since the resume may have been deleted while
        this replica was paused: ask the API server about each, and forget the gone ones."""
        if epoch == 1:
            return  # the first active period: everything known was announced in it
        await asyncio.sleep(self.settings.resume_confirm)
        for t in [t for t in self.tracked.values() if t.epoch < epoch]:
            try:
                exists = await self._status.exists(t.namespace, t.name, t.uid)
            except KubeWriteError as e:
                log.warning("%s/%s: could not check whether it still exists: %s", t.namespace, t.name, e)
                continue
            if not exists and self.tracked.get(t.key) is t:
                log.info("%s/%s: deleted while this replica was paused; forgetting it", t.namespace, t.name)
                self.gone(t.namespace, t.name)

    async def _scheduled_step(self, key: Key | ClaimKey) -> float | None:
        if len(key) == 3:
            return await self._claim_step(key)  # type: ignore[arg-type]
        t = self.tracked.get(key)  # type: ignore[arg-type]
        if t is None or t.deleting:
            return None  # deletion is driven by the finalizer (``finalize``)
        if not self._claims_known and _auto(t.parsed):
            return None  # woken once the claims are listed (``_load_claims``)
        decision = await self._step_timed(t)
        return None if decision is None else decision.requeue_after

    async def _step_timed(self, t: Tracked) -> Decision | None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            return await self.step(t)
        finally:
            if self.metrics is not None:
                self.metrics.reconcile.observe(loop.time() - started)

    async def finalize(self, body: Mapping[str, Any], *, patience: float = 300.0) -> bool:
        """Drive a GpuVm being deleted until the VM is as deletionPolicy wants (True), or give up
        after ``patience`` seconds (False: kopf calls again later).

        The scheduler leaves deleting GpuVms to this loop; waiting here rather than failing the
        handler keeps kopf from logging each retry as an error. kopf does not stop a running
        handler when it pauses this replica (HA): while paused the loop only waits, so that the
        active replica alone drives the deletion (found by the chaos soak: both sent the
        deallocate, one while the other's ran), and its patience does not run out meanwhile. The
        wait ends when the GpuVm is forgotten: on resume, a GpuVm deleted meanwhile is confirmed
        gone (``_confirm_after_resume``).
        """
        t = self.seen(body)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + patience
        t.woken = asyncio.Event()
        try:
            while True:
                t.woken.clear()
                decision = None  # paused: the active replica acts; this one looks again later
                if self.active:
                    async with self.scheduler.exclusive(t.key):
                        decision = await self._step_timed(t)
                else:
                    # Patience counts only while this replica may act: a paused one that gave up
                    # would have kopf log the handler's retry as an ERROR for nothing it did.
                    deadline = loop.time() + patience
                if self.tracked.get(t.key) is not t:
                    return True  # forgotten meanwhile (its deletion completed elsewhere)
                if decision is not None and (decision.ready or decision.reason in _RELEASE_ON_DELETE):
                    if not decision.ready:
                        self._emit(t.ref, "Warning", "ReleasedWithoutDeallocation", decision.message)
                    if t.vm is not None and decision.reason is not Reason.DUPLICATE_VM:
                        await self._untag_ownership(t, t.vm)
                    self.gone(t.namespace, t.name)
                    return True
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return False
                wait = decision.requeue_after if decision is not None and decision.requeue_after is not None else None
                delay = min(remaining, wait or self.settings.timing.transition_poll)
                try:
                    await asyncio.wait_for(t.woken.wait(), timeout=delay)
                except asyncio.TimeoutError:
                    pass
        finally:
            t.woken = None

    # ---- one step -----------------------------------------------------------------------

    async def step(self, t: Tracked) -> Decision | None:
        """Observe, decide, act, write status. None: nothing known yet (a read or the first bulk
        walk is under way and will wake the GpuVm)."""
        vm = t.vm
        if vm is not None:
            self.fleet.ensure_walker(vm.subscription_id)
        look = self._look(t, vm, need_fresh_tags=False)
        if look.pending:
            return None
        tag_failure = await self._tag_ownership(t, vm) if vm is not None and look.observation is not None and not t.deleting else None
        now = self._clock()
        demand = self._demand(t, look, now)
        decision = self._decide(t, vm, look, tag_failure, demand, now)
        if (vm is not None and t.generation_at is not None and decision.converged_generation == t.generation
                and t.previous.converged_generation != t.generation and not self.fleet.known_since(vm, t.generation_at)):
            # A generation counts as reached only on what Azure showed after it was seen: a cached
            # observation from before could miss an out-of-band change in between, which would then
            # be taken for drift (driftPolicy Report leaves it; found by CI's soak). The read wakes it.
            return None
        if decision.action is not None and vm is not None:
            # About to act: the consent must be recent, not whatever the last read said.
            fresh = self._look(t, vm, need_fresh_tags=True)
            if fresh.pending:
                return None  # the read of the tags wakes it
            if fresh.failure is not None:  # the read failed: no action without the consent; say why
                decision = self._decide(t, vm, fresh, tag_failure, demand, now)
        if decision.evicted:
            self._evicted(t, vm, now)
        if decision.action is not None and vm is not None:
            decision = self._act(t, vm, decision, look.observation)
        conditions = (ready_condition(decision, generation=t.generation, previous=t.previous.conditions, now=now),)
        t.previous = _records(decision, conditions, demand, t.previous)
        self._bill_unclaimed(t, demand, look.observation)
        warn_at = self._warn_before_switch_off(t, vm, demand, now)
        await self._write(t, decision, vm, look.observation, demand)
        if decision.ready and t.intent_since is not None and not t.deleting:
            if self.metrics is not None:
                self.metrics.intent_to_desired.observe(asyncio.get_running_loop().time() - t.intent_since)
            t.intent_since = None
        if warn_at is not None and decision.requeue_after is not None:
            decision = replace(decision, requeue_after=min(decision.requeue_after, max(0.0, (warn_at - now).total_seconds())))
        return decision

    def _look(self, t: Tracked, vm: VmRef | None, *, need_fresh_tags: bool) -> Look:
        if vm is None or self._duplicate_of(t, vm) is not None:
            return Look(None)
        return self.fleet.observe(vm, need_fresh_tags=need_fresh_tags)

    def _decide(
        self, t: Tracked, vm: VmRef | None, look: Look, tag_failure: Failure | None, demand: Demand | None, now: dt.datetime
    ) -> Decision:
        """Gather the inputs (no awaiting from here: nothing changes under decide) and decide."""
        state = self.vms.get(vm.key) if vm else None
        previous = t.previous
        facts = look.observation.facts if look.observation is not None else None
        situation = Situation(
            spec=t.parsed,
            generation=t.generation,
            now=now,
            deleting=t.deleting,
            converged_generation=previous.converged_generation,
            observation=look.observation,
            observation_failure=look.failure,
            refusal=tag_failure or self._refusal(t, vm, state),
            in_flight=state.in_flight if state else None,
            last_operation=previous.last_operation,
            start_failures=previous.start_failures,
            request_failure=t.request_failure,
            demand=demand,
            spot=bool(facts and facts.priority == "Spot"),
        )
        return core.decide(situation, timing=self.settings.timing, jitter=self._jitter())

    def _demand(self, t: Tracked, look: Look, now: dt.datetime) -> Demand | None:
        """Who needs the VM (controller/demand.py): for GpuVms in Auto, and for any GpuVm that
        claims name (status.demand shows them, though an override ignores them)."""
        spec = t.parsed
        if not isinstance(spec, GpuVmSpec) or (spec.desired_state is not DesiredState.AUTO and not self.book.count(t.key)):
            return None
        schedule = None
        if spec.schedule is not None and spec.desired_state is DesiredState.AUTO:
            schedule = ScheduleView(is_open(spec.schedule, now),
                                    tuple(ScheduleEdge(e.at, e.opens) for e in edges(spec.schedule, now, 8)))
        state = self.vms.get(spec.vm.key)
        power = look.observation.power_state if look.observation is not None else None
        idle_since = t.previous.idle_since
        if idle_since is not None:
            # Demand that came and went since idleSince was written, by a replica that was down,
            # paused or not yet stepping: the grace counts from its end (demand.live_until).
            ends = [e for e in (self.book.last_live(t.key, now), t.demand_seen) if e is not None and e <= now]
            idle_since = max([idle_since, *ends])
        return evaluate(spec, claims=self.book.live(t.key, now), schedule=schedule, now=now,
                        idle_since=idle_since, vm_on=is_on(power, state.in_flight if state else None))

    def _evicted(self, t: Tracked, vm: VmRef | None, now: dt.datetime) -> None:
        count = (t.previous.evictions.count if t.previous.evictions else 0) + 1
        t.previous = replace(t.previous, evictions=Evictions(count, now))
        name = vm.name if vm else t.name
        log.warning("%s/%s: Azure evicted the Spot VM %s (eviction %d); restarting it", t.namespace, t.name, name, count)
        self._emit(t.ref, "Warning", "Evicted",
                   f"Azure evicted the Spot VM {name} while it was wanted (eviction {count}); starting it again, "
                   "with back-off if Azure has no Spot capacity")
        self._wake_claims(t.key)

    def _bill_unclaimed(self, t: Tracked, demand: Demand | None, observation: Observation | None) -> None:
        """Seconds the VM is billed while no live claim needs it (Auto): the money idle costs."""
        if demand is None or not _auto(t.parsed):
            return
        if t.unclaimed is None:
            t.unclaimed = BillingClock()
        power = observation.power_state if observation is not None else PowerState.UNKNOWN
        t.unclaimed.observe(power if demand.active_claims == 0 else PowerState.DEALLOCATED)

    def _warn_before_switch_off(
        self, t: Tracked, vm: VmRef | None, demand: Demand | None, now: dt.datetime
    ) -> dt.datetime | None:
        """A DeallocationScheduled Event ``deallocation_warning`` before Auto switches the VM off
        for lack of demand, so people at the VM can claim it; returns when to warn if not yet due."""
        if demand is None or demand.active_claims or demand.deallocate_at is None or demand.deallocate_at <= now:
            return None
        warn_at = demand.deallocate_at - dt.timedelta(seconds=self.settings.deallocation_warning)
        if warn_at > now:
            return warn_at
        if t.warned_for != demand.deallocate_at:
            t.warned_for = demand.deallocate_at
            why = "the schedule window closes" if demand.decided_by.value == "Schedule" else "nothing claims it"
            self._emit(t.ref, "Warning", "DeallocationScheduled",
                       f"VM {vm.name if vm else t.name} will be switched off at {format_time(demand.deallocate_at)}: "
                       f"{why}. Create a GpuVmClaim for it (gpuvm-operator claim {t.name} -- …) to keep it running")
        return None

    # ---- who may act --------------------------------------------------------------------

    def _duplicate_of(self, t: Tracked, vm: VmRef) -> Tracked | None:
        """The oldest other GpuVm naming the same VM, if older than ``t``: the newer never acts."""
        mine = (t.created, t.namespace, t.name)
        rivals = (self.tracked[k] for k in self._by_vm.get(vm.key, ()) if k != t.key)
        oldest = min(rivals, key=lambda o: (o.created, o.namespace, o.name), default=None)
        return oldest if oldest is not None and (oldest.created, oldest.namespace, oldest.name) < mine else None

    def _refusal(self, t: Tracked, vm: VmRef | None, state: VmState | None) -> Failure | None:
        if vm is None:
            return None
        winner = self._duplicate_of(t, vm)
        if winner is not None:
            return Failure(
                Reason.DUPLICATE_VM,
                "DuplicateVm",
                f"GpuVm {winner.namespace}/{winner.name} already drives this VM; this one never acts. Delete one of them",
            )
        if state is None or state.tags is None:
            return None  # not observed (a failure explains why); nothing will be acted on either
        return check(state.tags, namespace=t.namespace, settings=self.settings.guard)

    async def _tag_ownership(self, t: Tracked, vm: VmRef) -> Failure | None:
        """With a cluster name, tag the VM as this cluster's before driving it (once).

        The Tags API has no compare-and-swap, so the claim is read back: if another cluster's
        claim landed in between, its value is what we read and the guard refuses the VM.
        """
        guard = self.settings.guard
        state = self.fleet.state(vm)
        if state.tags is None or not needs_claim(state.tags, guard) or check(state.tags, namespace=t.namespace, settings=guard):
            return None
        try:
            await self.azure.update_tags(vm, "Merge", {guard.owner_tag: guard.cluster_name or ""})
            tags = await self.azure.read_tags(vm)
        except AzureFailureError as e:
            return e.failure
        self.fleet.set_tags(vm.key, tags)
        if owner_of(tags, guard) == guard.cluster_name:
            log.info("%s/%s: claimed %s for cluster %s", t.namespace, t.name, vm.name, guard.cluster_name)
            self._emit(t.ref, "Normal", "Claimed", f"tagged {vm.name} {guard.owner_tag}={guard.cluster_name}")
        return None

    async def _untag_ownership(self, t: Tracked, vm: VmRef) -> None:
        """On deletion, remove this cluster's claim unless another GpuVm here still names the VM."""
        guard = self.settings.guard
        state = self.vms.get(vm.key)
        if not guard.cluster_name or state is None or state.tags is None:
            return
        if owner_of(state.tags, guard) != guard.cluster_name or self._by_vm.get(vm.key, set()) - {t.key}:
            return
        try:
            self.fleet.set_tags(vm.key, await self.azure.update_tags(vm, "Delete", {guard.owner_tag: guard.cluster_name}))
        except AzureFailureError as e:
            self._emit(t.ref, "Warning", "ClaimNotReleased", f"could not remove the tag {guard.owner_tag}: {e.failure.message}")
            return
        self._emit(t.ref, "Normal", "Released", f"removed the tag {guard.owner_tag}={guard.cluster_name} from {vm.name}")

    # ---- acting -------------------------------------------------------------------------

    def _act(self, t: Tracked, vm: VmRef, decision: Decision, observation: Observation | None) -> Decision:
        """Start the operation in a task of its own and return at once.

        The task waits for the subscription's write budget and its namespace's turn, sends the
        request, and then follows the operation to its end; each outcome is recorded on the
        GpuVm (``previous``, ``request_failure``) and wakes it. The task is engine-owned: a
        paused or stopped scheduler must not lose track of an operation Azure may already have
        accepted (nor leave the VM marked busy forever).
        """
        action = decision.action
        assert action is not None and decision.last_operation is not None
        hibernate = action is Action.DEALLOCATE and self._hibernates(t, observation)
        state = self.fleet.claim_operation(vm, action)  # before any await: no second request can start
        self._spawn(self._operate(t, vm, state, action, decision.last_operation, t.previous, hibernate=hibernate),
                    f"{action.verb} {vm.name}")
        return decision

    def _hibernates(self, t: Tracked, observation: Observation | None) -> bool:
        """spec.stopMode Hibernate, unless Azure refused it before (status.stopMode) or the VM is
        a Spot VM, which Azure never hibernates: then a plain deallocate, said so in status."""
        if not isinstance(t.parsed, GpuVmSpec) or t.parsed.stop_mode is not StopMode.HIBERNATE:
            return False
        if t.previous.stop_fallback is not None:
            return False
        facts = observation.facts if observation is not None else None
        if facts is not None and facts.priority == "Spot":
            self._fall_back(t, "Azure does not hibernate Spot VMs")
            return False
        return True

    def _fall_back(self, t: Tracked, why: str) -> None:
        t.previous = replace(t.previous, stop_fallback=why)
        log.warning("%s/%s: cannot hibernate: %s; deallocating instead", t.namespace, t.name, why)
        self._emit(t.ref, "Warning", "HibernationNotSupported", f"{why}; deallocating instead (status.stopMode)")

    def _spawn(self, coroutine: Any, name: str) -> None:
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _current(self, t: Tracked) -> Tracked | None:
        """``t`` if it is still the GpuVm this process tracks under its name (not deleted, not
        replaced by a new object of the same name)."""
        return t if self.tracked.get(t.key) is t else None

    async def _operate(
        self, t: Tracked, vm: VmRef, state: VmState, action: Action, record: core.LastOperation, before: PreviousStatus,
        *, hibernate: bool,
    ) -> None:
        pacer = self.azure.pacer(vm.subscription_id)
        generation = t.generation
        try:
            await pacer.acquire_operation(t.namespace)  # fair turn, in-flight cap, write budget
        except BaseException:
            self.fleet.operation_abandoned(vm)
            raise
        if t.generation != generation or self._current(t) is None or not self.active:
            # The intent changed (or the GpuVm went, or this replica was paused) while the
            # request queued: decide afresh (the active replica decides).
            pacer.release()
            self.fleet.operation_abandoned(vm)
            self._undo_record(t, record, before)
            self.wake(t.key)
            return
        try:
            poller = await self.azure.begin(vm, action, hibernate=hibernate)
        except AzureFailureError as e:
            pacer.release()
            self.fleet.operation_abandoned(vm)
            if hibernate and e.failure.reason is Reason.HIBERNATION_NOT_SUPPORTED and self._current(t) is not None:
                self._undo_record(t, record, before)
                self._fall_back(t, e.failure.message)  # the next step deallocates plainly, at once
            else:
                self._request_failed(t, vm, action, record, before, e.failure)
            self.wake(t.key)
            return
        except BaseException:
            pacer.release()
            self.fleet.operation_abandoned(vm)  # cancelled at shutdown: whether Azure got it is learned by observing
            raise
        self.fleet.operation_accepted(vm, action)
        t.request_failure = None
        trigger = record.trigger.value
        verb = "hibernate" if hibernate else action.verb
        log.info("%s/%s: %s requested (%s) for %s", t.namespace, t.name, verb, trigger, vm.resource_id)
        self._emit(t.ref, "Normal", f"{action.value}Requested", f"{verb} requested ({trigger}) for {vm.name}")
        if record.trigger is Trigger.IDLE and self.metrics is not None:
            self.metrics.idle_deallocations.inc()
        try:
            await self._follow(t, vm, state, action, poller)
        finally:
            pacer.release()

    def _undo_record(self, t: Tracked, record: core.LastOperation, before: PreviousStatus) -> None:
        """The operation was never requested: the records go back to what they were."""
        if self._current(t) is not None and t.previous.last_operation == record:
            t.previous = replace(t.previous, last_operation=before.last_operation, start_failures=before.start_failures)

    def _request_failed(
        self, t: Tracked, vm: VmRef, action: Action, record: core.LastOperation, before: PreviousStatus, failure: Failure
    ) -> None:
        now = self._clock()
        # Whatever the answer, Azure may have changed (a dropped connection may even hide an
        # accepted request): the next step reads the VM again instead of trusting the cache.
        self.fleet.forget(vm.key)
        log.warning("%s/%s: %s of %s refused: %s %s", t.namespace, t.name, action.verb, vm.name, failure.code, failure.message)
        if self._current(t) is None:
            return
        if failure.reason is Reason.WAITING_FOR_TRANSITION:
            # 409: Azure is busy with something we did not see. Not a failure of ours: look again.
            self._undo_record(t, record, before)
            t.request_failure = RequestFailure(failure, now)
            return
        self._emit(t.ref, "Warning", f"{action.value}Failed", f"{failure.code}: {failure.message}")
        last, failures = core.complete_operation(
            record, failure=failure, start_failures=before.start_failures, now=now,
            timing=self.settings.timing, jitter=self._jitter(),
        )
        if failures is not None and failures is not before.start_failures:
            if self.metrics is not None:
                self.metrics.capacity_failures.labels(failure.code).inc()
        else:
            t.request_failure = RequestFailure(failure, now)
        if t.previous.last_operation == record:
            t.previous = replace(t.previous, last_operation=last, start_failures=failures)

    async def _finish(self, vm: VmRef, state: VmState, action: Action, poller: Any) -> Failure | None:
        """The operation's end: its own result, or a bulk walk that saw its target first."""
        result = asyncio.ensure_future(self.azure.finish(poller, vm, action))
        waiters = {result}
        reached = asyncio.ensure_future(state.reached.wait()) if state.reached is not None else None
        if reached is not None:
            waiters.add(reached)
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if reached is not None:
                reached.cancel()
            if not result.done():
                result.cancel()  # the walk saw it done; stop polling
        if not result.done() or result.cancelled():
            return None
        error = result.exception()
        if isinstance(error, AzureFailureError):
            return error.failure
        if error is not None:
            raise error
        return None

    async def _follow(self, t: Tracked, vm: VmRef, state: VmState, action: Action, poller: Any) -> None:
        """Wait for an accepted operation to end, record how, and wake the GpuVm."""
        loop = asyncio.get_running_loop()
        started, clock_started = loop.time(), self._clock()
        metrics = self.metrics
        if metrics is not None:
            metrics.in_flight.labels(action.value).inc()
        failure: Failure | None = None
        try:
            failure = await self._finish(vm, state, action, poller)
        finally:
            self.fleet.operation_ended(vm, action, failure)
            if metrics is not None:
                metrics.in_flight.labels(action.value).dec()
        took = loop.time() - started
        if metrics is not None:
            metrics.operation_duration.labels(action.value, "Succeeded" if failure is None else "Failed").observe(took)
            if failure is not None and failure.reason in core.CAPACITY_REASONS:
                metrics.capacity_failures.labels(failure.code).inc()
        now = self._clock()
        seconds = int((now - clock_started).total_seconds())
        if failure is None:
            log.info("%s/%s: %s of %s succeeded after %ss", t.namespace, t.name, action.verb, vm.name, seconds)
            self._emit(t.ref, "Normal", "Started" if action is Action.START else "Deallocated", f"VM {vm.name} is {action.target.value.lower()} ({seconds}s)")
        else:
            log.warning("%s/%s: %s of %s failed: %s", t.namespace, t.name, action.verb, vm.name, failure.code)
            self._emit(t.ref, "Warning", f"{action.value}Failed", f"{failure.code}: {failure.message}")
        current = self._current(t)
        if current is None:
            # The GpuVm is gone (the VM state is cached for whoever names it next); if another
            # GpuVm took its name meanwhile, it sees the VM's state at its next step.
            self._vm_changed(vm.key)
            return
        last = current.previous.last_operation
        if last is not None and last.result is core.Result.IN_PROGRESS and last.action is action:
            done, failures = core.complete_operation(
                last, failure=failure, start_failures=current.previous.start_failures, now=now,
                timing=self.settings.timing, jitter=self._jitter(),
            )
            current.previous = replace(current.previous, last_operation=done, start_failures=failures)
        if failure is not None and failure.reason not in core.CAPACITY_REASONS:
            current.request_failure = RequestFailure(failure, now)
        self._vm_changed(vm.key)

    # ---- status -------------------------------------------------------------------------

    async def _write(
        self, t: Tracked, decision: Decision, vm: VmRef | None, observation: Observation | None, demand: Demand | None
    ) -> None:
        now = self._clock()
        new = render_status(decision, generation=t.generation, vm=vm, observation=observation, previous=t.previous,
                            now=now, demand=demand)
        if decision.reason is not t.last_reason:
            if t.last_reason is not None and decision.reason not in _QUIET_REASONS and decision.reason is not Reason.DRIFTED:
                self._emit(t.ref, "Warning", decision.reason.value, decision.message)
            elif decision.reason is Reason.DRIFTED:
                self._emit(t.ref, "Warning", "Drifted", decision.message)
            t.last_reason = decision.reason
        self._viewed(t, new)
        await self._store(t.memory, t.namespace, t.name, new, plural=None, on_gone=lambda: self._forget_if_current(t),
                          retry=lambda: self.scheduler.after(t.key, self.settings.timing.error_retry),
                          repair=lambda: self.wake(t.key))

    def _forget_if_current(self, t: Tracked) -> None:
        if self._current(t) is not None:
            log.info("%s/%s: gone from the API server; forgetting it", t.namespace, t.name)
            self.gone(t.namespace, t.name)

    def _viewed(self, t: Tracked, status: Mapping[str, Any]) -> None:
        """What the GpuVm's claims say of it comes from the status just rendered: when that
        changes (it starts, it is Ready, it fails …), its claims look again."""
        spec = t.parsed
        ready = status["conditions"][0]
        view = GpuVmView(
            name=t.name,
            desired=spec.desired_state if isinstance(spec, GpuVmSpec) else None,
            power_state=status.get("powerState"),
            ready=ready["status"] == "True",
            reason=ready["reason"],
            message=ready["message"],
            current=True,
        )
        if view != t.view:
            t.view = view
            self._wake_claims(t.key)

    async def _store(
        self, memory: StatusMemory, namespace: str, name: str, status: Mapping[str, Any], *, plural: str | None,
        on_gone: Callable[[], None], retry: Callable[[], None], repair: Callable[[], None],
    ) -> None:
        """Write ``status`` when it differs from what the API server stores (``StatusMemory``)."""
        wanted = fingerprint(status)
        cause = memory.due(wanted)
        if cause is None:
            return
        memory.writing = True
        try:
            stored = await self._status.replace_status(namespace, name, status, **({"plural": plural} if plural else {}))
        except KubeWriteError as e:
            if e.status == 404:
                on_gone()
                return
            log.warning("%s/%s: writing status failed: %s", namespace, name, e)
            retry()  # the next step retries the same write
            return
        finally:
            memory.writing = False
        if self.metrics is not None:
            self.metrics.status_writes.labels(cause).inc()
        if memory.stored(wanted, fingerprint(stored.status), resource_version(stored.resource_version)):
            repair()  # a newer foreign write landed while ours was on its way

    # ---- claim status -------------------------------------------------------------------

    async def _claim_step(self, key: ClaimKey) -> float | None:
        """A claim's phase and Ready condition, written to its status; Events on phase changes.
        Returns when to look again: when the claim stops being live, or to re-read an owner Pod
        the claimant watch does not cover."""
        c = self.book.claims.get(key)
        if c is None:
            return None
        gpuvm = self.tracked.get(c.gpuvm_key) if c.gpuvm_key is not None else None
        if gpuvm is None and not self.settings.all_claims:
            return None  # sharded: the operator driving its GpuVm answers it
        if gpuvm is None and c.gpuvm_key is not None and await self._not_yet_announced(c.gpuvm_key):
            # kopf hands GpuVms and claims over on separate watches, in no order: the GpuVm is
            # stored, its event has not come yet (a first list still in kopf's queue, a list the
            # API server answered 429 while a new CRD's storage initialised). GpuVmNotFound now
            # would end the job that waits on this claim; the GpuVm's arrival wakes the claim.
            return self.settings.timing.error_retry
        now = self._clock()
        self._read_owner_pods(c)
        live = self.book.liveness(c, now)
        if live is None:
            assert isinstance(c.claim, SpecError)
            state = ClaimState(ClaimPhase.PENDING, ClaimReason.INVALID_SPEC, invalid_claim_message(c.claim))
        else:
            view = None
            if gpuvm is not None:
                view = gpuvm.view or GpuVmView(name=gpuvm.name, desired=getattr(gpuvm.parsed, "desired_state", None))
            state = claim_state(c.claim, live, view)  # type: ignore[arg-type]
        status = render_claim_status(state, generation=c.generation, previous={"conditions": list(c.conditions)}, now=now)
        c.conditions = tuple(status["conditions"])
        event = claim_event(c.phase, state)
        c.phase = state.phase
        if event is not None:
            self._emit(c.ref, *event)
        await self._store(c.memory, c.namespace, c.name, status, plural=CLAIM_PLURAL,
                          on_gone=lambda: self.claim_gone(c.namespace, c.name),
                          retry=lambda: self.scheduler.after(c.key, self.settings.timing.error_retry),
                          repair=lambda: self.wake(c.key))
        delay = None
        if live is not None and live.live and live.until is not None:
            delay = max(0.0, (live.until - now).total_seconds())
        if live is not None and live.live and isinstance(c.claim, Claim) and c.claim.owner_pods:
            delay = min(delay, self.settings.timing.resync) if delay is not None else self.settings.timing.resync
        return delay

    async def _not_yet_announced(self, key: Key) -> bool:
        """Whether a GpuVm this engine has not seen is stored all the same (the API server is
        asked); when it cannot say, the GpuVm is taken as stored: waiting is safe, GpuVmNotFound
        is not (the claim is looked at again after --error-retry)."""
        try:
            return await self._status.stored(key[0], key[1])
        except Exception as e:  # noqa: BLE001 - an unreadable answer must not end a job
            log.debug("%s/%s: cannot tell whether the GpuVm is stored: %s", key[0], key[1], e)
            return True

    def _read_owner_pods(self, c: TrackedClaim) -> None:
        """GET the owner Pods the claimant watch does not cover (no label), at most once per resync."""
        if self.read_pod is None:
            return
        reader = self.read_pod
        loop_now = asyncio.get_running_loop().time()
        for name, uid in self.book.reads_due(c, now=loop_now, every=self.settings.timing.resync):

            async def read(name: str = name, uid: str = uid) -> None:
                try:
                    phase = await reader(c.namespace, name, uid)
                except Exception as e:  # noqa: BLE001 - the next look reads it again
                    log.warning("%s/%s: reading owner Pod %s failed: %s", c.namespace, c.name, name, e)
                    return
                self.pod_changed(uid, phase)

            self._spawn(read(), f"read pod {c.namespace}/{name}")

    async def close(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        await self.fleet.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _created_at(created: dt.datetime | None, now: dt.datetime) -> dt.datetime | None:
    return None if created is None else min(created + dt.timedelta(seconds=1), now)


def _auto(spec: GpuVmSpec | SpecError) -> bool:
    return isinstance(spec, GpuVmSpec) and spec.desired_state is DesiredState.AUTO


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
