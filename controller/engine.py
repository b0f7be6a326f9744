"""The imperative shell around ``decide``: observe, decide, act, write status — per GpuVm.

kopf gives every GpuVm a daemon (``drive``) that loops over ``step`` until the object goes away
or the operator is paused by a higher-priority peer; watch events and the fleet's bulk walks
only wake it. All state that must survive a restart is in ``status``; what lives here is only
what cannot be persisted meaningfully: the pollers of operations this process started, the
fleet's cache of observations (controller/fleet.py), and back-off clocks of failed requests.

Concurrency: one event loop, so fields are read and written without locks, but a step must not
keep stale copies across an ``await`` — inputs to ``decide`` are gathered after the last one.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from controller import decide as core
from controller.azure_compute import AzureCompute, AzureFailureError
from controller.decide import Decision, RequestFailure, Situation, Timing
from controller.fleet import Fleet, FleetSettings, VmState
from controller.gpuvm import GROUP, KIND, VERSION, GpuVmSpec, SpecError, VmRef, parse_spec
from controller.guard import GuardSettings, check, needs_claim, owner_of
from controller.metrics import GpuVmSample, Metrics
from controller.power import Action, Observation
from controller.reasons import Failure, Reason
from controller.status import PreviousStatus, merge_patch, read_status, render_status

log = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]

# A GpuVm in one of these states can never be acted on by deleting it harder: release it.
_RELEASE_ON_DELETE = frozenset(
    {Reason.INVALID_SPEC, Reason.VM_NOT_FOUND, Reason.NOT_MANAGED, Reason.NAMESPACE_NOT_ALLOWED, Reason.DUPLICATE_VM}
)
_QUIET_REASONS = frozenset({Reason.RECONCILED, Reason.STARTING, Reason.DEALLOCATING, Reason.WAITING_FOR_TRANSITION})


class StatusSink(Protocol):
    async def patch_status(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None: ...


EventEmitter = Callable[[Mapping[str, Any], str, str, str], None]


@dataclass(frozen=True)
class EngineSettings:
    timing: Timing = Timing()
    guard: GuardSettings = GuardSettings()
    default_subscription: str | None = None
    tag_walk: float = 300.0  # the tags (the consent) are read in bulk this often
    busy_walk: float = 0.5  # bulk walk interval while operations are in flight (the list budget paces it)

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


@dataclass
class Tracked:
    """One GpuVm as this process knows it."""

    namespace: str
    name: str
    uid: str
    created: str
    generation: int
    spec: Any
    deleting: bool
    status: dict[str, Any]
    parsed: GpuVmSpec | SpecError
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    request_failure: RequestFailure | None = None
    last_reason: Reason | None = None
    # An operation finished since status was last written: these records go out next.
    completed: tuple[core.LastOperation, core.StartFailures | None] | None = None
    active: bool = False  # a daemon drives it (not paused, not deleted)
    intent_since: float | None = None  # loop time a new generation was first seen, until Ready

    @property
    def vm(self) -> VmRef | None:
        return self.parsed.vm if isinstance(self.parsed, GpuVmSpec) else None

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def ref(self) -> dict[str, Any]:
        """Enough of a body for kopf to post an Event about it."""
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "metadata": {"namespace": self.namespace, "name": self.name, "uid": self.uid},
        }


# Returned by an operation request whose intent changed while it queued for its turn.
_SUPERSEDED = Failure(Reason.WAITING_FOR_TRANSITION, "Superseded", "the desired state changed while the request waited")


def _status_of(body: Mapping[str, Any]) -> dict[str, Any]:
    """The stored status; anything but an object (hand-written garbage) counts as none."""
    status = body.get("status")
    return dict(status) if isinstance(status, Mapping) else {}


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


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
        self.tracked: dict[tuple[str, str], Tracked] = {}
        self._by_vm: dict[str, set[tuple[str, str]]] = {}
        self._followers: set[asyncio.Task[None]] = set()
        self.fleet = Fleet(azure, settings.fleet, clock=clock, on_change=self._vm_changed, wanted=self._wanted)
        azure.on_token_renewed = self._token_renewed

    def _token_renewed(self) -> None:
        """ARM accepts the operator's token again: what was refused for the old one goes now,
        not after --denied-retry (five minutes by default)."""
        for t in self.tracked.values():
            refused = t.request_failure is not None and t.request_failure.failure.reason is Reason.AUTHENTICATION_FAILED
            if refused or t.last_reason is Reason.AUTHENTICATION_FAILED:
                t.request_failure = None
                t.wake.set()

    @property
    def vms(self) -> dict[str, VmState]:
        return self.fleet.vms

    # ---- what kopf tells us -------------------------------------------------------------

    def seen(self, body: Mapping[str, Any]) -> Tracked:
        """Record the latest body of a GpuVm; wake its daemon when the intent changed."""
        meta = body.get("metadata", {})
        key = (meta.get("namespace", ""), meta.get("name", ""))
        generation = int(meta.get("generation") or 0)
        deleting = bool(meta.get("deletionTimestamp"))
        t = self.tracked.get(key)
        if t is not None and t.uid == meta.get("uid"):
            if generation != t.generation or deleting != t.deleting:
                if generation != t.generation:
                    t.intent_since = asyncio.get_running_loop().time()
                self._unindex(t)
                t.generation, t.spec, t.deleting = generation, body.get("spec"), deleting
                t.parsed = self._parse(t.spec)
                t.request_failure = None  # a new intent deserves a fresh attempt
                self._index(t)
                t.wake.set()
            return t
        if t is not None:
            self.gone(*key)
        t = Tracked(
            namespace=key[0],
            name=key[1],
            uid=meta.get("uid", ""),
            created=meta.get("creationTimestamp", ""),
            generation=generation,
            spec=body.get("spec"),
            deleting=deleting,
            status=_status_of(body),
            parsed=self._parse(body.get("spec")),
            intent_since=asyncio.get_running_loop().time(),
        )
        self.tracked[key] = t
        self._index(t)
        t.wake.set()
        return t

    def gone(self, namespace: str, name: str) -> None:
        t = self.tracked.pop((namespace, name), None)
        if t is not None:
            self._unindex(t)
            if t.vm is not None and t.vm.key not in self._by_vm:
                self.fleet.drop(t.vm.key)

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
            self.tracked[other].wake.set()

    def _vm_changed(self, key: str) -> None:
        """The fleet saw a VM change: wake every GpuVm naming it."""
        for k in self._by_vm.get(key, ()):
            self.tracked[k].wake.set()

    def _wanted(self, subscription: str) -> set[str]:
        """VMs of ``subscription`` that some actively driven GpuVm names."""
        prefix = f"/subscriptions/{subscription}/"
        return {
            key
            for key, names in self._by_vm.items()
            if key.startswith(prefix) and any(self.tracked[k].active for k in names)
        }

    def samples(self) -> Iterator[GpuVmSample]:
        """Per-GpuVm power state and billed seconds, for the metrics collector."""
        for t in list(self.tracked.values()):
            state = self.vms.get(t.vm.key) if t.vm else None
            if state is None or state.observation is None or not t.active:
                continue
            facts = state.observation.facts
            yield GpuVmSample(
                namespace=t.namespace,
                name=t.name,
                vm=state.ref.name,
                size=(facts.size if facts else None) or "",
                power_state=state.observation.power_state,
                billed_seconds=state.billing.seconds(),
            )

    # ---- the per-object loop ------------------------------------------------------------

    async def drive(self, body: Mapping[str, Any], stopped: Any) -> None:
        """kopf daemon body: reconcile now, then whenever woken or due, until stopped."""
        t = self.seen(body)
        t.status = _status_of(body)  # a (re)started daemon trusts the stored status
        t.active = True
        try:
            while not stopped:
                t.wake.clear()
                if t.vm is not None:
                    self.fleet.ensure_walker(t.vm.subscription_id)
                delay = await self.step_safely(t)
                await _wait_any(t.wake, stopped, delay)
        finally:
            t.active = False

    async def step_safely(self, t: Tracked) -> float | None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            return (await self.step(t)).requeue_after
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a bug must not kill the daemon; it is logged, not shown
            log.exception("Reconciling %s/%s failed unexpectedly; retrying", t.namespace, t.name)
            return self.settings.timing.error_retry
        finally:
            if self.metrics is not None:
                self.metrics.reconcile.observe(loop.time() - started)

    async def finalize(self, body: Mapping[str, Any], *, patience: float = 300.0) -> bool:
        """Drive a GpuVm being deleted until the VM is as deletionPolicy wants (True), or give up
        after ``patience`` seconds (False: kopf calls again later).

        The daemon is already stopped at this point, so this loop is the only driver; waiting
        here rather than failing the handler keeps kopf from logging each retry as an error.
        """
        t = self.seen(body)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + patience
        while True:
            t.wake.clear()
            decision = await self.step(t)
            if decision.ready or decision.reason in _RELEASE_ON_DELETE:
                if not decision.ready:
                    self._emit(t.ref, "Warning", "ReleasedWithoutDeallocation", decision.message)
                if t.vm is not None and decision.reason is not Reason.DUPLICATE_VM:
                    await self._release(t, t.vm)
                self.gone(t.namespace, t.name)
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            delay = min(remaining, decision.requeue_after or self.settings.timing.transition_poll)
            try:
                await asyncio.wait_for(t.wake.wait(), timeout=delay)
            except asyncio.TimeoutError:
                pass

    async def step(self, t: Tracked) -> Decision:
        vm = t.vm
        observed = await self._look(t, vm, need_fresh_tags=False)
        decision, previous = self._decide(t, vm, *observed)
        if decision.action is not None and vm is not None:
            # About to act: the consent must be recent, not whatever the last read said.
            state = self.fleet.state(vm)
            if state.tags_at is None or (self._clock() - state.tags_at).total_seconds() >= self.settings.tag_refresh:
                observed = await self._look(t, vm, need_fresh_tags=True)
                decision, previous = self._decide(t, vm, *observed)
        if decision.action is not None and vm is not None:
            decision = await self._act(t, vm, self.fleet.state(vm), decision, previous)
        await self._write(t, decision, vm, observed[0], previous)
        if decision.ready and t.intent_since is not None and not t.deleting:
            if self.metrics is not None:
                self.metrics.intent_to_desired.observe(asyncio.get_running_loop().time() - t.intent_since)
            t.intent_since = None
        return decision

    async def _look(
        self, t: Tracked, vm: VmRef | None, *, need_fresh_tags: bool
    ) -> tuple[Observation | None, Failure | None, Failure | None]:
        """(observation, why there is none, why the claim failed)."""
        if vm is None or self._duplicate_of(t, vm) is not None:
            return None, None, None
        observation, failure = await self.fleet.observe(vm, need_fresh_tags=need_fresh_tags)
        claim_failure = await self._claim(t, vm) if observation is not None and not t.deleting else None
        return observation, failure, claim_failure

    def _decide(
        self,
        t: Tracked,
        vm: VmRef | None,
        observation: Observation | None,
        observation_failure: Failure | None,
        claim_failure: Failure | None,
    ) -> tuple[Decision, PreviousStatus]:
        """Gather the inputs (no awaiting from here: nothing changes under decide) and decide."""
        previous = read_status(t.status)
        if t.completed is not None:
            previous = replace(previous, last_operation=t.completed[0], start_failures=t.completed[1])
        state = self.vms.get(vm.key) if vm else None
        situation = Situation(
            spec=t.parsed,
            generation=t.generation,
            now=self._clock(),
            deleting=t.deleting,
            converged_generation=previous.converged_generation,
            observation=observation,
            observation_failure=observation_failure,
            refusal=claim_failure or self._refusal(t, vm, state),
            in_flight=state.in_flight if state else None,
            last_operation=previous.last_operation,
            start_failures=previous.start_failures,
            request_failure=t.request_failure,
        )
        return core.decide(situation, timing=self.settings.timing, jitter=self._jitter()), previous

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

    async def _claim(self, t: Tracked, vm: VmRef) -> Failure | None:
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

    async def _release(self, t: Tracked, vm: VmRef) -> None:
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

    async def _act(self, t: Tracked, vm: VmRef, state: VmState, decision: Decision, previous: PreviousStatus) -> Decision:
        """Request the operation; the rest of it runs in a task of its own.

        The request and the follow-up live in an engine-owned task, shielded from the caller:
        kopf cancels a daemon on deletion or shutdown, and a cancelled caller must not lose track
        of an operation Azure may already have accepted (nor leave the VM marked busy forever).
        """
        action = decision.action
        assert action is not None and decision.last_operation is not None
        state.in_flight = action  # claimed before the first await: no second request can start
        requested: asyncio.Future[Failure | None] = asyncio.get_running_loop().create_future()
        generation = t.generation
        task = asyncio.create_task(self._operate(t, vm, state, action, generation, requested), name=f"{action.verb} {vm.name}")
        self._followers.add(task)
        task.add_done_callback(self._followers.discard)
        failure = await asyncio.shield(requested)
        if failure is _SUPERSEDED:
            return replace(decision, action=None, last_operation=previous.last_operation, requeue_after=0.0)
        if failure is not None:
            return self._request_failed(t, vm, decision, previous, failure)
        t.request_failure = None
        log.info("%s/%s: %s requested (%s) for %s", t.namespace, t.name, action.verb, decision.trigger.value, vm.resource_id)
        self._emit(t.ref, "Normal", f"{action.value}Requested", f"{action.verb} requested ({decision.trigger.value}) for {vm.name}")
        return decision

    async def _operate(
        self,
        t: Tracked,
        vm: VmRef,
        state: VmState,
        action: Action,
        generation: int,
        requested: asyncio.Future[Failure | None],
    ) -> None:
        pacer = self.azure.pacer(vm.subscription_id)
        try:
            await pacer.acquire_operation(t.namespace)  # fair turn, in-flight cap, write budget
        except BaseException:
            state.in_flight = None
            if not requested.done():
                requested.cancel()
            raise
        if t.generation != generation:
            # The intent changed while this request queued: let the next step decide afresh.
            pacer.release()
            state.in_flight = None
            requested.set_result(_SUPERSEDED)
            return
        try:
            poller = await self.azure.begin(vm, action)
        except AzureFailureError as e:
            pacer.release()
            state.in_flight = None
            requested.set_result(e.failure)
            return
        except BaseException:
            pacer.release()
            state.in_flight = None  # cancelled at shutdown: whether Azure got it is learned by observing
            if not requested.done():
                requested.cancel()
            raise
        self.fleet.operation_accepted(vm, action)
        requested.set_result(None)
        try:
            await self._follow(t, vm, state, action, poller)
        finally:
            pacer.release()

    def _request_failed(
        self, t: Tracked, vm: VmRef, decision: Decision, previous: PreviousStatus, failure: Failure
    ) -> Decision:
        now = self._clock()
        action = decision.action
        assert action is not None and decision.last_operation is not None
        # Whatever the answer, Azure may have changed (a dropped connection may even hide an
        # accepted request): the next step reads the VM again instead of trusting the cache.
        self.fleet.forget(vm.key)
        if failure.reason is Reason.WAITING_FOR_TRANSITION:
            # 409: Azure is busy with something we did not see. Not a failure of ours: look again.
            t.request_failure = RequestFailure(failure, now)
            return replace(
                decision,
                action=None,
                reason=failure.reason,
                message=failure.message,
                last_operation=previous.last_operation,
                requeue_after=core.retry_delay(failure, timing=self.settings.timing),
            )
        last, failures = core.complete_operation(
            decision.last_operation,
            failure=failure,
            start_failures=previous.start_failures,
            now=now,
            timing=self.settings.timing,
            jitter=self._jitter(),
        )
        if failures is not None and failures is not previous.start_failures:
            if self.metrics is not None:
                self.metrics.capacity_failures.labels(failure.code).inc()
            message = f"{failure.message}; next retry at {failures.next_retry_at:%Y-%m-%dT%H:%M:%SZ}"
            requeue = max(0.0, (failures.next_retry_at - now).total_seconds())
        else:
            t.request_failure = RequestFailure(failure, now)
            message = failure.message
            requeue = core.retry_delay(failure, timing=self.settings.timing)
        log.warning("%s/%s: %s of %s refused: %s %s", t.namespace, t.name, action.verb, vm.name, failure.code, failure.message)
        self._emit(t.ref, "Warning", f"{action.value}Failed", f"{failure.code}: {failure.message}")
        return replace(
            decision,
            action=None,
            reason=failure.reason,
            message=message,
            last_operation=last,
            start_failures=failures,
            requeue_after=requeue,
        )

    async def _finish(self, vm: VmRef, state: VmState, action: Action, poller: Any) -> Failure | None:
        """The operation's end: its own result, or a bulk walk that saw its target first."""
        result = asyncio.ensure_future(self.azure.finish(poller, vm, action))
        reached = asyncio.ensure_future(state.reached.wait())
        try:
            await asyncio.wait({result, reached}, return_when=asyncio.FIRST_COMPLETED)
        finally:
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
        current = self.tracked.get(t.key)
        if current is None or current.uid != t.uid:
            return  # the GpuVm is gone; the VM state is cached for whoever names it next
        previous = read_status(current.status)
        if current.completed is None and previous.last_operation is not None:
            if previous.last_operation.result is core.Result.IN_PROGRESS:
                current.completed = core.complete_operation(
                    previous.last_operation,
                    failure=failure,
                    start_failures=previous.start_failures,
                    now=now,
                    timing=self.settings.timing,
                    jitter=self._jitter(),
                )
        seconds = int((now - clock_started).total_seconds())
        if failure is None:
            log.info("%s/%s: %s of %s succeeded after %ss", t.namespace, t.name, action.verb, vm.name, seconds)
            self._emit(t.ref, "Normal", "Started" if action is Action.START else "Deallocated", f"VM {vm.name} is {action.target.value.lower()} ({seconds}s)")
        else:
            log.warning("%s/%s: %s of %s failed: %s", t.namespace, t.name, action.verb, vm.name, failure.code)
            self._emit(t.ref, "Warning", f"{action.value}Failed", f"{failure.code}: {failure.message}")
            if failure.reason not in core.CAPACITY_REASONS:
                current.request_failure = RequestFailure(failure, now)
        current.wake.set()

    # ---- status -------------------------------------------------------------------------

    async def _write(
        self, t: Tracked, decision: Decision, vm: VmRef | None, observation: Observation | None, previous: PreviousStatus
    ) -> None:
        now = self._clock()
        new = render_status(decision, generation=t.generation, vm=vm, observation=observation, previous=previous, now=now)
        if decision.reason is not t.last_reason:
            if t.last_reason is not None and decision.reason not in _QUIET_REASONS and decision.reason is not Reason.DRIFTED:
                self._emit(t.ref, "Warning", decision.reason.value, decision.message)
            elif decision.reason is Reason.DRIFTED:
                self._emit(t.ref, "Warning", "Drifted", decision.message)
            t.last_reason = decision.reason
        patch = merge_patch(t.status, new)
        if not patch:
            t.completed = None
            return
        try:
            await self._status.patch_status(t.namespace, t.name, patch)
        except Exception as e:  # noqa: BLE001 - the next step retries the same diff
            log.warning("%s/%s: writing status failed: %s", t.namespace, t.name, e)
            return
        t.status = new
        t.completed = None

    async def close(self) -> None:
        await self.fleet.close()
        for task in list(self._followers):
            task.cancel()
        if self._followers:
            await asyncio.gather(*self._followers, return_exceptions=True)


async def _wait_any(event: asyncio.Event, stopped: Any, timeout: float | None) -> None:
    """Sleep until woken, stopped, or ``timeout`` seconds pass."""
    waiters = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(_stopped(stopped))]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def _stopped(stopped: Any) -> None:
    await stopped.wait()


