"""What the operator knows of each Azure VM, and how it keeps that knowledge cheap.

Azure allows each VM 12 instance-view reads a minute and each subscription a few hundred list
calls, so polling every VM does not scale. Settled VMs are observed in bulk: one
``list_all(statusOnly=true)`` walk per subscription per interval (per resource group when the
identity may only read those) answers for every VM at once. statusOnly pages carry no tags, so
the tags (the consent) come from plain list pages: the whole cycle once when a subscription is
first seen, then one page per interval, a cycle every ``tag_walk`` seconds.

Reads never block a reconcile step: ``observe`` answers from what is known and, when that is not
enough, asks for a read that runs on its own and wakes the GpuVms naming the VM when it lands.
A VM gets a read of its own only when the bulk pages cannot tell: it is new after the
subscription's first walk and tag cycle, missing from a walk's pages, in a transition this
operator did not start, about to be acted on with tags older than the engine allows, or last seen
before a new generation of a GpuVm naming it (``known_since``). Many such VMs at once wait for a
round — one walk and one tag cycle — instead of a GET each (``_alone_or_round``). Until
the first walk and tag cycle of a subscription are done, its VMs wait for them (a cold start
with 10,000 GpuVms costs two page walks, not 10,000 GETs).

Completion of an operation the operator started comes from the operation's own status polls and,
while operations are in flight and a walk is cheaper than polling them all, from walks every
``busy_walk`` seconds: a walk that shows the target state ends the wait early.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, fields, replace

from controller.azure_compute import AzureCompute, AzureFailureError
from controller.gpuvm import VmRef
from controller.metrics import BillingClock
from controller.pacing import Lane, reading
from controller.power import Action, Observation, ProvisioningState, VmFacts
from controller.reasons import Failure, Reason

log = logging.getLogger(__name__)

# Failures of a walk that say the same about every VM of the subscription: no point reading the
# VMs one by one to learn it again (no token, throttled). Other errors (5xx, a gateway's HTML
# page, Azure unreachable) may hold for list pages alone: the walk is retried soon, and after
# WALK_FAILURES_BEFORE_READS failed walks in a row the VMs it cannot tell about are read alone.
SUBSCRIPTION_WIDE = frozenset({Reason.AUTHENTICATION_FAILED, Reason.THROTTLED})
WALK_FAILURES_BEFORE_READS = 3
WALK_RETRY = 2.0  # seconds before a failed walk is tried again (doubling, capped by the resync interval)

# A busy walk (all pages of the subscription) is worth it while it costs at most this share of
# what one status poll per operation in flight would (a walk ends them all at once).
BUSY_WALK_COST_SHARE = 0.25

# A subscription's first walk waits until GpuVms naming it stop being announced: kopf hands over a
# cluster's GpuVms one by one at start-up (10,000 take it about 20 s on two cores), and a walk
# that starts with the first of them tells only those announced so far — the rest would cost
# more walks and tag cycles at the list budget's 4 pages a second. Announcements are over when
# none came for ANNOUNCED_QUIET seconds; the wait never exceeds ANNOUNCED_WAIT.
ANNOUNCED_QUIET = 0.5
ANNOUNCED_WAIT = 30.0
# Where the API server said how many GpuVms there are (``Fleet.expected``), the first walk waits
# until that many were announced — on a real API server kopf hands the list over at the pace of
# its bounded workers (--event-workers), with pauses longer than ANNOUNCED_QUIET on a busy
# machine, and each walk started early cost another round of the list budget (five walks
# instead of one for 10,000 GpuVms). A GpuVm deleted meanwhile is never announced: the wait
# ends after EXPECTED_QUIET seconds without an announcement, and never exceeds EXPECTED_WAIT.
EXPECTED_QUIET = 5.0
EXPECTED_WAIT = 300.0

# A round (see ``_alone_or_round``) starts this long after it was asked for, so that VMs asking for
# a look in the same burst (a GitOps sync edits GpuVms one by one) join it rather than each
# costing a round or GETs of their own.
ROUND_GATHER = 0.5


@dataclass(frozen=True)
class FleetSettings:
    resync: float = 60.0  # bulk walk interval while nothing is in flight
    busy_walk: float = 0.5  # bulk walk interval while operations of ours are in flight (paced by the list budget)
    transition_poll: float = 10.0  # own reads of a VM transitioning out of band
    tag_refresh: float = 900.0  # tags older than this are re-read before a power operation
    tag_walk: float = 300.0  # a new cycle of tags pages starts this long after the last ended
    min_read_interval: float = 5.0  # Azure: 12 reads per minute per VM
    reads_at_once: int = 16  # own reads of single VMs in flight per subscription


@dataclass(frozen=True)
class Look:
    """What ``observe`` could tell now. ``pending``: nothing usable yet; a read or the first
    bulk walk is under way and will wake the GpuVm."""

    observation: Observation | None
    failure: Failure | None = None
    pending: bool = False


@dataclass(slots=True, eq=False)
class VmState:
    """One Azure VM, shared by every GpuVm naming it."""

    ref: VmRef
    registered: float  # loop time it was first named
    observation: Observation | None = None
    tags: Mapping[str, str] | None = None
    tags_at: dt.datetime | None = None
    in_flight: Action | None = None
    reached: asyncio.Event | None = None  # a walk saw the operation's target (only while one is followed)
    accepted_at: dt.datetime | None = None  # when Azure accepted the last operation of ours (what its end showed holds as of then)
    missing: bool = False  # absent from the last walk's pages
    last_read: float = float("-inf")  # loop time of our last own read
    reading: bool = False  # an own read is queued or running
    last_failure: Failure | None = None  # of that read, shown until the next one succeeds
    billing: BillingClock = field(default_factory=BillingClock)


@dataclass(slots=True)
class _Subscription:
    """Bulk-walk bookkeeping of one subscription."""

    walker: asyncio.Task[None] | None = None
    busy: asyncio.Event = field(default_factory=asyncio.Event)
    reads: asyncio.Semaphore | None = None
    per_group: bool = False
    walk_started: float = float("-inf")  # loop time the last completed walk started
    in_flight: int = 0  # operations of ours in flight on its VMs
    pages: int = 1  # pages the last walk read
    synced: bool = False  # the first walk and tag cycle are done (or failed: then VMs read alone)
    failure: Failure | None = None  # why the last walk failed, when that holds for every VM of it
    walk_failures: int = 0  # failed walks in a row
    lone_reads: int = 0  # GETs of single VMs asked for by ``_alone_or_round`` since the last round
    round_waiters: set[str] = field(default_factory=set)  # VMs waiting for the next round
    round_wanted: bool = False  # a walk and a whole tag cycle as soon as possible
    tag_index: int = 0  # resource group being read (per-group walks)
    tag_continuation: str | None = None
    tags_not_before: float = 0.0


def _merged(old: VmFacts, new: VmFacts | None) -> VmFacts:
    """Facts a source lacks (statusOnly pages carry no size or priority) keep their last known value."""
    if new is None:
        return old
    return VmFacts(**{f.name: v if (v := getattr(new, f.name)) is not None and v != "" else getattr(old, f.name)
                      for f in fields(VmFacts)})


class Fleet:
    def __init__(
        self,
        azure: AzureCompute,
        settings: FleetSettings,
        *,
        clock: Callable[[], dt.datetime],
        on_change: Callable[[str], None],
        wanted: Callable[[str], set[str]],
        lookup: Callable[[str], VmRef | None],
    ) -> None:
        """``on_change(key)`` is told when a VM's observed state changed or a read of it
        ended; ``wanted(subscription)`` names the VMs that GpuVms being driven care about (an
        empty set ends the walk); ``lookup(key)`` tells whether one VM is among them now."""
        self.azure = azure
        self.settings = settings
        self._clock = clock
        self._on_change = on_change
        self._wanted = wanted
        self._lookup = lookup
        # Set by the engine at start-up: the number of GpuVms the API server holds (None: it did
        # not say), and how many were announced so far.
        self.expected: Callable[[], Awaitable[int | None]] | None = None
        self.announced: Callable[[], int] = lambda: 0
        self._expected_count: asyncio.Future[int | None] | None = None
        self._started = False
        self.vms: dict[str, VmState] = {}
        self._subs: dict[str, _Subscription] = {}
        self._reads: set[asyncio.Task[None]] = set()
        self.walks = 0

    def state(self, vm: VmRef) -> VmState:
        state = self.vms.get(vm.key)
        if state is None:
            state = self.vms[vm.key] = VmState(ref=vm, registered=asyncio.get_running_loop().time())
        return state

    def _sub(self, subscription: str) -> _Subscription:
        sub = self._subs.get(subscription)
        if sub is None:
            sub = self._subs[subscription] = _Subscription()
        return sub

    # ---- one VM ------------------------------------------------------------------------

    def observe(self, vm: VmRef, *, need_fresh_tags: bool = False) -> Look:
        """The freshest affordable knowledge of ``vm`` now; asks for a read where it is not enough."""
        state = self.state(vm)
        s = self.settings
        obs = state.observation
        if state.in_flight is not None and obs is not None and not need_fresh_tags:
            return Look(obs)
        sub = self._sub(vm.subscription_id)
        if obs is None or state.tags is None:
            if not sub.synced and state.last_failure is None:
                return Look(None, pending=True)  # the subscription's first walk and tag cycle will tell
            if obs is None and sub.failure is not None:
                return Look(None, sub.failure)  # the next walk retries it for every VM at once
            if self._alone_or_round(state, sub, "new" if obs is None else "tags"):
                return Look(None, pending=True)
            if obs is None or state.last_failure is not None:
                return Look(None, state.last_failure, pending=state.last_failure is None)
            return Look(obs, pending=True)
        now = self._clock()
        if state.missing:
            self._read(state, "missing")  # deleted, or invisible to this identity: its own read tells
            return Look(None, state.last_failure) if state.last_failure is not None else Look(obs)
        if need_fresh_tags:
            if state.tags_at is None or (now - state.tags_at).total_seconds() >= s.tag_refresh:
                self._read(state, "fresh-tags")  # (again, once Azure's per-VM budget allows)
                if state.last_failure is not None:
                    return Look(None, state.last_failure)  # the read before acting failed: show why
                return Look(obs, pending=True)
        elif obs.busy or not obs.power_state.settled:
            if (now - obs.observed_at).total_seconds() >= s.transition_poll:
                self._read(state, "transition", lane_=Lane.BACKGROUND)
        elif (now - obs.observed_at).total_seconds() >= 3 * s.resync:
            self._read(state, "stale", lane_=Lane.BACKGROUND)  # the walk fell behind
        return Look(obs)

    def known_since(self, vm: VmRef, since: dt.datetime) -> bool:
        """True if what is known of ``vm`` was observed at or after ``since`` (or the last read
        failed, and the failure is what the GpuVm shows); else asks for a read or a round, which
        wakes the GpuVms naming it, and says False."""
        state = self.state(vm)
        obs = state.observation
        if obs is None or state.last_failure is not None:
            return True
        # What the end of an operation of ours shows holds as of the operation, not of when its
        # status said so: Azure may have ended it long before, and a portal's start since is unknown.
        seen = state.accepted_at if obs.source == "operation" and state.accepted_at is not None else obs.observed_at
        if seen >= since:
            return True
        self._alone_or_round(state, self._sub(vm.subscription_id), "confirm")
        return False

    def _alone_or_round(self, state: VmState, sub: _Subscription, purpose: str) -> bool:
        """Ask for a read of one VM; or, when many VMs need one at once (GpuVms created or edited
        in bulk, 10,000 by a GitOps sync) and the lone reads since the last round already cost
        twice what a round does, put it on the next round — one walk and one tag cycle tell all
        of them for what their GETs would cost, and spare the subscription's read budget, which
        operations' status polls share. True if it waits for a round (already, or from now)."""
        if state.ref.key in sub.round_waiters:
            return True
        if state.last_failure is None and not state.reading and not sub.walk_failures and sub.lone_reads >= 2 * sub.pages:
            sub.round_waiters.add(state.ref.key)
            sub.round_wanted = True
            sub.busy.set()
            return True
        if not state.reading:
            sub.lone_reads += 1
        self._read(state, purpose)
        return False

    def credential_renewed(self) -> None:
        """A refused token was replaced: walks and reads refused for it go again now."""
        for sub in self._subs.values():
            if sub.failure is not None and sub.failure.reason is Reason.AUTHENTICATION_FAILED:
                sub.failure = None
                sub.round_wanted = True  # walk at once, not after the resync interval
                sub.busy.set()
        for state in self.vms.values():
            if state.last_failure is not None and state.last_failure.reason is Reason.AUTHENTICATION_FAILED:
                state.last_failure = None
                state.last_read = float("-inf")

    def _read(self, state: VmState, purpose: str, *, lane_: Lane = Lane.REACTION) -> None:
        """One GET of the VM, on its own: at most one at a time per VM and no more often than
        Azure's per-VM budget allows; the GpuVms naming it are woken when it lands."""
        if state.reading:
            return
        state.reading = True
        task = asyncio.create_task(self._read_one(state, purpose, lane_), name=f"read {state.ref.name}")
        self._reads.add(task)
        task.add_done_callback(self._reads.discard)

    async def _read_one(self, state: VmState, purpose: str, lane_: Lane) -> None:
        loop = asyncio.get_running_loop()
        vm = state.ref
        sub = self._sub(vm.subscription_id)
        if sub.reads is None:
            sub.reads = asyncio.Semaphore(self.settings.reads_at_once)
        before = state.last_failure
        try:
            wait = state.last_read + self.settings.min_read_interval - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            async with sub.reads:
                state.last_read = loop.time()
                with reading(lane_, f"get:{purpose}"):
                    got = await self.azure.observe(vm)
        except AzureFailureError as e:
            state.last_failure = e.failure
            news = e.failure != before  # the same refusal again: the GpuVm already shows it
        else:
            state.missing = False
            self.remember(vm.key, got)
            news = True  # whoever asked for the read is waiting for it
        finally:
            state.reading = False
        if news and self.vms.get(vm.key) is state:
            self._on_change(vm.key)

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

    def claim_operation(self, vm: VmRef, action: Action) -> VmState:
        """Mark an operation of ours as started on ``vm`` (before the request goes out: no second
        one can start meanwhile)."""
        state = self.state(vm)
        assert state.in_flight is None, f"{vm.name}: a second operation while {state.in_flight} is in flight"
        state.in_flight = action
        self._sub(vm.subscription_id).in_flight += 1
        return state

    def _unclaim(self, state: VmState) -> None:
        if state.in_flight is not None:
            state.in_flight = None
            state.reached = None
            self._sub(state.ref.subscription_id).in_flight -= 1

    def operation_abandoned(self, vm: VmRef) -> None:
        """The request was refused or never sent: nothing is in flight after all."""
        state = self.vms.get(vm.key)
        if state is not None:
            self._unclaim(state)

    def operation_accepted(self, vm: VmRef, action: Action) -> None:
        """Azure answered 202: it now shows the transient state; walk often until it ends."""
        state = self.state(vm)
        state.reached = asyncio.Event()
        state.accepted_at = self._clock()
        self.remember(vm.key, Observation(action.transient, ProvisioningState.UPDATING, state.accepted_at, source="operation"))
        sub = self._subs.get(vm.subscription_id)
        if sub is not None:
            sub.busy.set()

    def operation_ended(self, vm: VmRef, action: Action, failure: Failure | None) -> None:
        state = self.state(vm)
        self._unclaim(state)
        if failure is None:
            self.remember(vm.key, Observation(action.target, ProvisioningState.SUCCEEDED, self._clock(), source="operation"))
        else:
            self.forget(vm.key)

    def in_flight(self, subscription: str) -> int:
        sub = self._subs.get(subscription)
        return sub.in_flight if sub is not None else 0

    # ---- the bulk walk -------------------------------------------------------------------

    def ensure_walker(self, subscription: str) -> None:
        sub = self._sub(subscription)
        if sub.walker is None or sub.walker.done():
            sub.walker = asyncio.create_task(self._walk_loop(subscription, sub), name=f"walk {subscription}")

    async def _walk_loop(self, subscription: str, sub: _Subscription) -> None:
        loop = asyncio.get_running_loop()
        first_rounds = 0
        if not sub.synced:
            await self._announced(subscription)
        while True:
            keys = self._wanted(subscription)
            if not keys:
                sub.walker = None
                return
            started = loop.time()
            in_flight = self.in_flight(subscription)
            busy = in_flight > 0
            whole = not sub.synced or sub.round_wanted  # a round: the walk and a whole tag cycle
            sub.round_wanted = False
            lane_ = Lane.REACTION if whole else (Lane.COMPLETION if busy else Lane.BACKGROUND)
            try:
                groups = self._groups(keys) if sub.per_group else [None]
                with reading(lane_, "busy-walk" if busy else "walk"):
                    pages = await self._walk(subscription, keys, groups, notify=sub.synced)
                sub.pages, sub.walk_started, sub.walk_failures = pages, started, 0
                self._walk_failed(subscription, sub, None)
                with reading(Lane.REACTION if whole else Lane.BACKGROUND, "tags"):
                    await self._tags(subscription, sub, groups, whole_cycle=whole)
                if whole:
                    self._round_done(sub)
                if not sub.synced:
                    first_rounds += 1
                    if first_rounds < 3 and self._unsettled(subscription) > 2 * pages:
                        continue  # GpuVms announced after their page went by: another walk is cheaper than their GETs
                self._synced(subscription, sub)
            except AzureFailureError as e:
                if e.failure.reason is Reason.AUTHORIZATION_FAILED and not sub.per_group:
                    log.info("cannot list VMs of subscription %s; walking its resource groups instead", subscription)
                    sub.per_group = True
                    sub.round_wanted = sub.round_wanted or whole  # the round is still owed
                    sub.tag_index, sub.tag_continuation, sub.tags_not_before = 0, None, 0.0
                    continue
                log.warning("bulk observation of subscription %s failed: %s %s", subscription, e.failure.code, e.failure.message)
                sub.walk_failures += 1
                shared = e.failure.reason in SUBSCRIPTION_WIDE or sub.walk_failures < WALK_FAILURES_BEFORE_READS
                self._walk_failed(subscription, sub, e.failure if shared else None)
                self._synced(subscription, sub)  # the VMs are read one by one instead of waiting for a walk
                if whole:
                    self._round_done(sub)  # and so are those that waited for this round
            except Exception:  # noqa: BLE001 - the walk must go on; a bug is logged
                log.exception("bulk observation of subscription %s failed unexpectedly", subscription)
                self._synced(subscription, sub)
                if whole:
                    self._round_done(sub)
            await self._pause(subscription, sub, started)
            if sub.round_wanted and sub.synced:
                await asyncio.sleep(ROUND_GATHER)

    async def _announced(self, subscription: str) -> None:
        """Until every GpuVm the API server holds was announced (where it said how many), then
        until no GpuVm naming the subscription was announced for ANNOUNCED_QUIET seconds (bounded)."""
        loop = asyncio.get_running_loop()
        expected = await self._expected()
        if expected is not None:
            deadline, seen, last = loop.time() + EXPECTED_WAIT, self.announced(), loop.time()
            while seen < expected and loop.time() < deadline and loop.time() - last < EXPECTED_QUIET:
                await asyncio.sleep(ANNOUNCED_QUIET)
                if self.announced() != seen:
                    seen, last = self.announced(), loop.time()
            self._started = True  # the start-up's list is in: later first walks do not wait for it
        deadline = loop.time() + ANNOUNCED_WAIT
        count = len(self._wanted(subscription))
        while loop.time() < deadline:
            await asyncio.sleep(ANNOUNCED_QUIET)
            now = len(self._wanted(subscription))
            if now == count:
                return
            count = now

    async def _expected(self) -> int | None:
        """What ``expected`` says, once per fleet and only for the first walks of its start-up (a
        subscription first named later has no list to wait for); None when it cannot (a
        selector, an error)."""
        if self.expected is None or self._started:
            return None
        if self._expected_count is None:
            self._expected_count = asyncio.ensure_future(self.expected())
        try:
            return await asyncio.shield(self._expected_count)
        except Exception as e:  # noqa: BLE001 - only an optimisation of the first walk's timing
            log.debug("cannot count the GpuVms to wait for before the first walk: %s", e)
            return None

    def _round_done(self, sub: _Subscription) -> None:
        """The VMs that waited for this round are told (those it did not settle, or all of them
        when it failed, read alone)."""
        waiting, sub.round_waiters, sub.lone_reads = sub.round_waiters, set(), 0
        for key in waiting:
            self._on_change(key)

    def _unsettled(self, subscription: str) -> int:
        """Wanted VMs that the bulk pages have not told enough about yet."""
        return sum(1 for key in self._wanted(subscription)
                   if (state := self.vms.get(key)) is None or state.observation is None or state.tags is None)

    def _walk_failed(self, subscription: str, sub: _Subscription, failure: Failure | None) -> None:
        """Remember (or forget) a failure every VM of the subscription shares; wake its GpuVms
        when that changes after the first walk (before it, ``_synced`` wakes them)."""
        changed = failure != sub.failure
        sub.failure = failure
        if changed and sub.synced:
            for key in self._wanted(subscription):
                self._on_change(key)

    def _synced(self, subscription: str, sub: _Subscription) -> None:
        """The first walk and tag cycle are done: every GpuVm waiting for them is woken once
        (those the pages did not settle then get reads of their own)."""
        if not sub.synced:
            sub.synced = True
            for key in self._wanted(subscription):
                self._on_change(key)

    async def _pause(self, subscription: str, sub: _Subscription, started: float) -> None:
        """Until the next walk: the resync interval, or ``busy_walk`` while operations of ours are
        in flight and a walk is cheaper than polling them (``BUSY_WALK_COST_SHARE``)."""
        loop = asyncio.get_running_loop()
        deadline = started + self.settings.resync
        if sub.walk_failures:  # a failed walk is tried again soon, not a resync interval later
            deadline = min(deadline, started + WALK_RETRY * 2 ** min(sub.walk_failures - 1, 5))
        while (remaining := deadline - loop.time()) > 0 and not sub.round_wanted:
            in_flight = self.in_flight(subscription)
            if in_flight and sub.pages <= max(1.0, in_flight * BUSY_WALK_COST_SHARE):
                deadline = min(deadline, started + self.settings.busy_walk)
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return
            sub.busy.clear()
            try:
                await asyncio.wait_for(sub.busy.wait(), timeout=remaining)
            except asyncio.TimeoutError:
                return

    def _groups(self, keys: set[str]) -> list[str | None]:
        refs = (self.vms[k].ref if k in self.vms else self._lookup(k) for k in keys)
        return sorted({ref.resource_group.lower() for ref in refs if ref is not None})

    async def _walk(self, subscription: str, keys: set[str], groups: list[str | None], *, notify: bool) -> int:
        """One walk over every page; returns how many pages it read. ``notify``: wake the GpuVms
        of VMs that changed (the first walk leaves that to ``_synced``)."""
        started = self._clock()
        seen: set[str] = set()
        pages = 0
        for group in groups:
            async for key, obs, page in self.azure.list_observations(subscription, group):
                pages = max(pages, page)
                if self._known(key):
                    seen.add(key)
                    self._from_walk(key, replace(obs, observed_at=started), notify=notify)
        self.walks += 1
        for key in keys - seen:
            state = self.vms.get(key)
            if state is not None and not state.missing:
                state.missing = True  # deleted, or invisible to this identity: its own read will tell
                if notify:
                    self._on_change(key)
        return max(1, pages)

    def _known(self, key: str) -> bool:
        """Whether a VM of a page is one a GpuVm names now (registered here on the way: GpuVms
        announced while a walk runs are served by it, not by reads of their own)."""
        if key in self.vms:
            return True
        ref = self._lookup(key)
        if ref is None:
            return False
        self.state(ref)
        return True

    async def _tags(self, subscription: str, sub: _Subscription, groups: list[str | None], *, whole_cycle: bool) -> None:
        """Tag pages: a whole cycle (the first time), else at most one page per interval
        (rotating over the resource groups when walking those), so reading the consent in bulk
        costs at most one request per interval on top of the status walk."""
        loop = asyncio.get_running_loop()
        while whole_cycle or loop.time() >= sub.tags_not_before:
            index = sub.tag_index if sub.tag_index < len(groups) else 0
            started = self._clock()
            tags, continuation = await self.azure.list_tags_page(subscription, groups[index], sub.tag_continuation)
            for key, (vm_tags, facts) in tags.items():
                state = self.vms.get(key) if self._known(key) else None
                if state is not None and (state.tags_at is None or state.tags_at <= started):
                    changed = state.tags is not None and state.tags != vm_tags
                    state.tags, state.tags_at = vm_tags, started
                    if state.observation is not None:
                        old = state.observation.facts
                        state.observation = replace(state.observation, facts=facts if old is None else _merged(old, facts))
                    if changed:
                        self._on_change(key)  # the consent may have changed
            if continuation is None:
                index += 1
            cycle_done = continuation is None and index >= len(groups)
            pause = self.settings.tag_walk if cycle_done else self.settings.resync * 0.9
            sub.tag_index, sub.tag_continuation = (0 if cycle_done else index), continuation
            sub.tags_not_before = loop.time() + pause
            if cycle_done or not whole_cycle:
                return

    def _from_walk(self, key: str, obs: Observation, *, notify: bool) -> None:
        state = self.vms[key]
        state.missing = False
        if state.in_flight is not None:
            # Only a page requested after Azure accepted the operation can tell that it ended.
            fresh = state.accepted_at is not None and obs.observed_at >= state.accepted_at
            if fresh and obs.power_state.reaches(state.in_flight.target) and obs.provisioning_state is ProvisioningState.SUCCEEDED:
                if state.reached is not None:
                    state.reached.set()
            return
        if self.remember(key, obs) and notify:
            self._on_change(key)

    async def close(self) -> None:
        tasks = [s.walker for s in self._subs.values() if s.walker is not None] + list(self._reads)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._subs.clear()
