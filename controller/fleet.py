"""What the operator knows of each Azure VM, and how it keeps that knowledge cheap.

Azure allows each VM 12 instance-view reads a minute and each subscription a few hundred list
calls, so polling every VM does not scale. Settled VMs are observed in bulk: one
``list_all(statusOnly=true)`` walk per subscription per interval (per resource group when the
identity may only read those) answers for every VM at once. statusOnly pages carry no tags, so
the tags (the consent) come from a plain ``list_all`` read one page per interval, a cycle every
``tag_walk`` seconds. A VM gets a read of its own only when it is new, in a transition this
operator did not start, missing from the pages, or about to be acted on with tags older than the
engine allows. Completion of an operation the
operator started comes from the operation itself; while operations are in flight the walk runs
every ``busy_walk`` seconds, and a walk that shows the target state ends the wait early — at
scale, one page per second is far cheaper than a status poll per operation.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from controller.azure_compute import AzureCompute, AzureFailureError
from controller.gpuvm import VmRef
from controller.metrics import BillingClock
from controller.power import Action, Observation, ProvisioningState, VmFacts
from controller.reasons import Failure, Reason

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FleetSettings:
    resync: float = 60.0  # bulk walk interval while nothing is in flight
    busy_walk: float = 0.5  # bulk walk interval while operations of ours are in flight (paced by the list budget)
    transition_poll: float = 10.0  # own reads of a VM transitioning out of band
    tag_refresh: float = 900.0  # tags older than this are re-read before a power operation
    tag_walk: float = 300.0  # a new cycle of tags pages starts this long after the last ended
    min_read_interval: float = 5.0  # Azure: 12 reads per minute per VM


@dataclass
class VmState:
    """One Azure VM, shared by every GpuVm naming it."""

    ref: VmRef
    observation: Observation | None = None
    tags: Mapping[str, str] | None = None
    tags_at: dt.datetime | None = None
    in_flight: Action | None = None
    reached: asyncio.Event = field(default_factory=asyncio.Event)  # a walk saw the operation's target
    accepted_at: dt.datetime | None = None  # when Azure accepted the operation in flight
    missing: bool = False  # absent from the last walk's pages
    last_read: float = float("-inf")  # loop time of our last own read
    last_failure: Failure | None = None  # of that read, shown until the next one may go out
    billing: BillingClock = field(default_factory=BillingClock)


def _merged(old: VmFacts, new: VmFacts | None) -> VmFacts:
    """Facts a source lacks (statusOnly pages carry no size) keep their last known value."""
    if new is None:
        return old
    return VmFacts(
        resource_id=new.resource_id or old.resource_id,
        name=new.name or old.name,
        vm_id=new.vm_id or old.vm_id,
        size=new.size or old.size,
        location=new.location or old.location,
    )


class Fleet:
    def __init__(
        self,
        azure: AzureCompute,
        settings: FleetSettings,
        *,
        clock: Callable[[], dt.datetime],
        on_change: Callable[[str], None],
        wanted: Callable[[str], set[str]],
    ) -> None:
        """``on_change(key)`` is told when a VM's observed state changed; ``wanted(subscription)``
        names the VMs that GpuVms being driven care about (an empty set ends the walk)."""
        self.azure = azure
        self.settings = settings
        self._clock = clock
        self._on_change = on_change
        self._wanted = wanted
        self.vms: dict[str, VmState] = {}
        self._walkers: dict[str, asyncio.Task[None]] = {}
        self._busy: dict[str, asyncio.Event] = {}
        # subscription -> (index of the resource group being read, its next page, not before when)
        self._tag_pages: dict[str, tuple[int, str | None, float]] = {}
        self.walks = 0

    def state(self, vm: VmRef) -> VmState:
        state = self.vms.get(vm.key)
        if state is None:
            state = self.vms[vm.key] = VmState(ref=vm)
        return state

    # ---- one VM ------------------------------------------------------------------------

    async def observe(self, vm: VmRef, *, need_fresh_tags: bool = False) -> tuple[Observation | None, Failure | None]:
        """The freshest affordable observation of ``vm``: the cache, or one read of its own."""
        state = self.state(vm)
        s = self.settings
        obs = state.observation
        if state.in_flight is not None and obs is not None and not need_fresh_tags:
            return obs, None
        now = self._clock()
        loop_now = asyncio.get_running_loop().time()
        if obs is None or state.tags is None or state.missing:
            due = True
        elif need_fresh_tags:
            due = state.tags_at is None or (now - state.tags_at).total_seconds() >= s.tag_refresh
        elif obs.busy or not obs.power_state.settled:
            due = (now - obs.observed_at).total_seconds() >= s.transition_poll
        else:
            due = (now - obs.observed_at).total_seconds() >= 3 * s.resync  # the walk fell behind
        if not due or loop_now - state.last_read < s.min_read_interval:
            if obs is None or state.last_failure is not None:
                return None, state.last_failure or Failure(Reason.AZURE_ERROR, "NotObserved", "the VM has not been observed yet")
            return obs, None
        state.last_read = loop_now
        try:
            got = await self.azure.observe(vm)
        except AzureFailureError as e:
            state.last_failure = e.failure
            return None, e.failure
        state.missing = False
        self.remember(vm.key, got)
        return state.observation, None

    def remember(self, key: str, obs: Observation) -> bool:
        """Keep the newest observation (facts and tags survive sources without them); True if
        the power or provisioning state changed."""
        state = self.vms.get(key)
        if state is None:
            return False
        old = state.observation
        if old is not None and old.observed_at > obs.observed_at:
            return False
        if obs.tags is not None:
            state.tags, state.tags_at = dict(obs.tags), obs.observed_at
        if old is not None and old.facts is not None:
            obs = replace(obs, facts=_merged(old.facts, obs.facts))
        state.observation, state.last_failure = obs, None
        state.billing.observe(obs.power_state)
        return old is None or (old.power_state, old.provisioning_state) != (obs.power_state, obs.provisioning_state)

    def forget(self, key: str) -> None:
        """The cached state may be wrong (a refused or failed request): read it again next time."""
        state = self.vms.get(key)
        if state is not None and state.observation is not None:
            state.observation = replace(state.observation, observed_at=dt.datetime.min.replace(tzinfo=dt.timezone.utc))
            state.last_read = float("-inf")

    def drop(self, key: str) -> None:
        """No GpuVm names the VM any more: forget it, unless an operation of ours still runs."""
        state = self.vms.get(key)
        if state is not None and state.in_flight is None:
            del self.vms[key]

    def set_tags(self, key: str, tags: Mapping[str, str]) -> None:
        state = self.vms.get(key)
        if state is not None:
            state.tags, state.tags_at = dict(tags), self._clock()

    # ---- operations ----------------------------------------------------------------------

    def operation_accepted(self, vm: VmRef, action: Action) -> None:
        """Azure answered 202: it now shows the transient state; walk often until it ends."""
        state = self.state(vm)
        state.reached.clear()
        state.accepted_at = self._clock()
        self.remember(vm.key, Observation(action.transient, ProvisioningState.UPDATING, state.accepted_at, source="operation"))
        busy = self._busy.get(vm.subscription_id)
        if busy is not None:
            busy.set()

    def operation_ended(self, vm: VmRef, action: Action, failure: Failure | None) -> None:
        state = self.state(vm)
        state.in_flight = None
        if failure is None:
            self.remember(vm.key, Observation(action.target, ProvisioningState.SUCCEEDED, self._clock(), source="operation"))
        else:
            self.forget(vm.key)

    # ---- the bulk walk -------------------------------------------------------------------

    def ensure_walker(self, subscription: str) -> None:
        task = self._walkers.get(subscription)
        if task is None or task.done():
            self._busy[subscription] = asyncio.Event()
            self._walkers[subscription] = asyncio.create_task(self._walk_loop(subscription), name=f"walk {subscription}")

    async def _walk_loop(self, subscription: str) -> None:
        loop = asyncio.get_running_loop()
        per_group = False
        busy = self._busy[subscription]
        while True:
            keys = self._wanted(subscription)
            if not keys:
                self._walkers.pop(subscription, None)
                return
            started = loop.time()
            try:
                groups = self._groups(keys) if per_group else [None]
                await self._walk(subscription, keys, groups)
                await self._tags_page(subscription, keys, groups)
            except AzureFailureError as e:
                if e.failure.reason is Reason.AUTHORIZATION_FAILED and not per_group:
                    log.info("cannot list VMs of subscription %s; walking its resource groups instead", subscription)
                    per_group = True
                    self._tag_pages.pop(subscription, None)
                    continue
                log.warning("bulk observation of subscription %s failed: %s %s", subscription, e.failure.code, e.failure.message)
            except Exception:  # noqa: BLE001 - the walk must go on; a bug is logged
                log.exception("bulk observation of subscription %s failed unexpectedly", subscription)
            deadline = started + self.settings.resync
            while (remaining := deadline - loop.time()) > 0:
                if any(self.vms[k].in_flight for k in keys if k in self.vms):
                    deadline = min(deadline, started + self.settings.busy_walk)
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                busy.clear()
                try:
                    await asyncio.wait_for(busy.wait(), timeout=remaining)
                except asyncio.TimeoutError:
                    break

    def _groups(self, keys: set[str]) -> list[str | None]:
        return sorted({self.vms[k].ref.resource_group.lower() for k in keys if k in self.vms})

    async def _walk(self, subscription: str, keys: set[str], groups: list[str | None]) -> None:
        started = self._clock()
        seen: set[str] = set()
        for group in groups:
            async for key, obs in self.azure.list_observations(subscription, group):
                if key in keys and key in self.vms:
                    seen.add(key)
                    self._from_walk(key, replace(obs, observed_at=started))
        self.walks += 1
        for key in keys - seen:
            state = self.vms.get(key)
            if state is not None and not state.missing:
                state.missing = True  # deleted, or invisible to this identity: its own read will tell
                self._on_change(key)

    async def _tags_page(self, subscription: str, keys: set[str], groups: list[str | None]) -> None:
        """At most one page of tags per interval (rotating over the resource groups when walking
        those), so reading the consent in bulk costs at most one request per interval on top of
        the status walk."""
        loop = asyncio.get_running_loop()
        index, continuation, not_before = self._tag_pages.get(subscription, (0, None, 0.0))
        if loop.time() < not_before:
            return
        index = index if index < len(groups) else 0
        started = self._clock()
        tags, continuation = await self.azure.list_tags_page(subscription, groups[index], continuation)
        for key, vm_tags in tags.items():
            state = self.vms.get(key)
            if key in keys and state is not None and (state.tags_at is None or state.tags_at <= started):
                state.tags, state.tags_at = vm_tags, started
        if continuation is None:
            index += 1
        cycle_done = continuation is None and index >= len(groups)
        pause = self.settings.tag_walk if cycle_done else self.settings.resync * 0.9
        self._tag_pages[subscription] = (0 if cycle_done else index, continuation, loop.time() + pause)

    def _from_walk(self, key: str, obs: Observation) -> None:
        state = self.vms[key]
        state.missing = False
        if state.in_flight is not None:
            # Only a page requested after Azure accepted the operation can tell that it ended.
            fresh = state.accepted_at is not None and obs.observed_at >= state.accepted_at
            if fresh and obs.power_state is state.in_flight.target and obs.provisioning_state is ProvisioningState.SUCCEEDED:
                state.reached.set()
            return
        if self.remember(key, obs):
            self._on_change(key)

    async def close(self) -> None:
        tasks = list(self._walkers.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._walkers.clear()
