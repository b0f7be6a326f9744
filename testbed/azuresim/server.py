"""The Azure Compute simulator: ARM over HTTPS for the unmodified Azure SDK, plus admin endpoints.

A request meets, in order (as in ARM): authentication (401), api-version (400), injected faults,
ARM throttling (429), RBAC (403), subscription / resource group / VM lookup (404), Compute
throttling (429), then the operation itself (409 when refused). All state lives on the loop
that ran :meth:`AzureComputeSimulator.start`; the inspection and driving methods below must be
called on that loop (from another thread: ``ServerThread.run_sync(sim.vm_state, "vm-1")``).

Admin endpoints (need the full-access bearer token; not throttled, not recorded); a VM is
addressed as ``{rg}/{vm}``, with ``?subscription=`` when that is ambiguous:

- ``GET /_sim/vms``, ``GET /_sim/vms/{rg}/{vm}``: VM states.
- ``POST /_sim/vms/{rg}/{vm}/{start|deallocate|powerOff|restart}[?hibernate=true]``: an
  out-of-band power change (a real transition, as if the portal asked): 202 or 409.
- ``POST /_sim/vms/{rg}/{vm}/evict``: the platform evicts a Spot VM (deallocates it): 202 or 409.
  (ARM's own ``POST …/virtualMachines/{vm}/simulateEviction`` does the same and answers 204.)
- ``POST /_sim/vms/{rg}/{vm}/fast-forward``: finish the VM's operation in flight now.
- ``PUT /_sim/vms/{rg}/{vm}/power-state`` with ``{"powerState": "stopped"}``: change at once.
- ``GET /_sim/faults``, ``POST /_sim/faults`` with ``{"spec": "…"}``, ``DELETE /_sim/faults``,
  ``DELETE /_sim/faults/{id}``.
- ``GET /_sim/counters``, ``GET /_sim/log?limit=N``, ``GET /_sim/overlaps``. A reader that follows
  the log asks ``GET /_sim/log?since=SEQ``: the requests after the SEQ-th one ever recorded, and
  the count so far in the header ``X-Sim-Log-Total`` (the SEQ to ask with next).
- ``GET /_sim/operations[?since=T]``: the operations kept (running, or begun or ended at loop
  time T or later), with begin and end; ``GET /_sim/unobserved``: per
  client operation, the longest time no request could have told its state (starvation guard).
- ``DELETE /_sim/vms/{rg}/{vm}``: the VM is deleted in Azure (404 from then on; an operation in
  flight ends Canceled); ``POST /_sim/vms/{rg}/{vm}/restore`` (optional body ``{"powerState":
  …, "tags": {…}}``) brings it back under the same resource id and vmId.
- ``PUT /_sim/vms/{rg}/{vm}/tags`` with ``{"tags": {…}}``: replace the VM's tags (the portal).
- ``POST /_sim/tokens`` with ``{"like": "<token>"}`` (default: the full-access one): a new token
  of the same identity and permissions, ``{"token": "…"}`` in the answer; ``POST
  /_sim/tokens/expire`` with ``{"token": "…"}``: from then on that token is answered 401
  ExpiredAuthenticationToken (a credential expiry).
- ``POST /_sim/reset[?vms=true]``: forget log, counters, faults, buckets (and VM states).
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import secrets
import uuid
from collections import OrderedDict
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from . import wire
from .config import Permission, SimulatorConfig
from .faults import Fault, FaultKind, FaultSet
from .model import (
    Operation,
    OperationError,
    OperationStatus,
    Origin,
    Phase,
    PowerAction,
    PowerState,
    Refusal,
    SimVm,
    VmKey,
    VmRecord,
    VmSnapshot,
    as_dict,
    final_state,
    plan,
    plan_eviction,
    vm_key,
)
from .recording import NO_RESPONSE, OperationRecord, Overlap, Recorder, RequestRecord, Unobserved, record_json, unobserved
from .throttling import Throttler
from .tls import ServerTls, make_server_tls
from .wire import ArmError, OpName

_ACTIONS = {"start": PowerAction.START, "deallocate": PowerAction.DEALLOCATE, "poweroff": PowerAction.POWER_OFF, "restart": PowerAction.RESTART}
_POWER_OP = {
    PowerAction.START: OpName.START, PowerAction.DEALLOCATE: OpName.DEALLOCATE,
    PowerAction.POWER_OFF: OpName.POWER_OFF, PowerAction.RESTART: OpName.RESTART,
}
_TAG_METHODS = {"GET": OpName.TAGS_GET, "PUT": OpName.TAGS_PUT, "PATCH": OpName.TAGS_PATCH, "DELETE": OpName.TAGS_DELETE}
_JSON = "application/json"


class _Route:
    __slots__ = ("op", "subscription", "resource_group", "name", "action", "location", "operation_id")

    def __init__(self, op: OpName, subscription: str | None = None, resource_group: str | None = None,
                 name: str | None = None, action: PowerAction | None = None, location: str | None = None,
                 operation_id: str | None = None) -> None:
        self.op = op
        self.subscription = subscription
        self.resource_group = resource_group
        self.name = name
        self.action = action
        self.location = location
        self.operation_id = operation_id


def parse_route(method: str, path: str, *, monitor: bool = False) -> _Route:
    """Map a request to an ARM operation. Fixed segments compare case-insensitively, as ARM does."""
    segs = [s for s in path.split("/") if s]
    low = [s.lower() for s in segs]
    n = len(segs)
    if low == ["subscriptions"]:
        return _Route(OpName.SUBSCRIPTIONS if method == "GET" else OpName.UNKNOWN)
    if n < 2 or low[0] != "subscriptions":
        return _Route(OpName.UNKNOWN)
    sub = segs[1]
    if n == 7 and low[2] == "resourcegroups" and low[4:7] == ["providers", "microsoft.authorization", "permissions"]:
        return _Route(OpName.PERMISSIONS if method == "GET" else OpName.UNKNOWN, sub, segs[3])
    if n == 5 and low[2:5] == ["providers", "microsoft.compute", "virtualmachines"]:
        return _Route(OpName.LIST_ALL if method == "GET" else OpName.UNKNOWN, sub)
    if n == 8 and low[2:5] == ["providers", "microsoft.compute", "locations"] and low[6] == "operations":
        op = (OpName.OPERATION_RESULT if monitor else OpName.OPERATION_STATUS) if method == "GET" else OpName.UNKNOWN
        return _Route(op, sub, location=segs[5], operation_id=segs[7])
    if n < 7 or low[2] != "resourcegroups" or low[4:7] != ["providers", "microsoft.compute", "virtualmachines"]:
        return _Route(OpName.UNKNOWN, sub)
    rg = segs[3]
    if n == 7:
        return _Route(OpName.LIST if method == "GET" else OpName.UNKNOWN, sub, rg)
    name = segs[7]
    if n == 8:
        return _Route(OpName.GET if method == "GET" else OpName.UNKNOWN, sub, rg, name)
    if n == 9:
        tail = low[8]
        if tail == "instanceview" and method == "GET":
            return _Route(OpName.INSTANCE_VIEW, sub, rg, name)
        action = _ACTIONS.get(tail)
        if action is not None and method == "POST":
            return _Route(_POWER_OP[action], sub, rg, name, action)
        if tail == "simulateeviction" and method == "POST":
            return _Route(OpName.SIMULATE_EVICTION, sub, rg, name)
    if n == 12 and low[8:12] == ["providers", "microsoft.resources", "tags", "default"] and method in _TAG_METHODS:
        return _Route(_TAG_METHODS[method], sub, rg, name)
    return _Route(OpName.UNKNOWN, sub, rg, name)


class _Principal:
    """A token's identity and its role assignments: (actions, notActions) per assignment."""

    __slots__ = ("object_id", "grants", "admin")

    def __init__(self, token: str, grants: Collection[str] | Sequence[Permission] | None) -> None:
        self.object_id = str(uuid.uuid5(uuid.NAMESPACE_OID, "azuresim-principal:" + token))
        self.admin = grants is None
        if grants is None:
            self.grants: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = ((("*",), ()),)
        elif all(isinstance(g, Permission) for g in grants):
            self.grants = tuple((tuple(g.actions), tuple(g.not_actions)) for g in grants)  # type: ignore[union-attr]
        elif all(isinstance(g, str) for g in grants):
            self.grants = ((tuple(grants), ()),)  # type: ignore[arg-type]
        else:
            raise TypeError("a restricted token holds action patterns or Permission values, not a mix")

    def allows(self, action: str) -> bool:
        """Azure's rule: some assignment has a matching action and no matching notAction."""
        action = action.lower()
        return any(
            any(fnmatch.fnmatchcase(action, a.lower()) for a in actions)
            and not any(fnmatch.fnmatchcase(action, n.lower()) for n in not_actions)
            for actions, not_actions in self.grants
        )


class _Dropped(Exception):
    """Raised to close a connection without any answer (injected fault)."""


def _flag(value: str | None) -> bool:
    return value is not None and value.lower() == "true"


class AzureComputeSimulator:
    """ARM + Microsoft.Compute virtual machines, in memory, over HTTPS. See the package docstring."""

    def __init__(self, config: SimulatorConfig | None = None, vms: Iterable[SimVm] = ()) -> None:
        self.config = config or SimulatorConfig()
        self.token = self.config.token or secrets.token_urlsafe(32)
        self._principals = {self.token: _Principal(self.token, None)}
        for token, actions in self.config.restricted_tokens.items():
            self._principals[token] = _Principal(token, list(actions))
        self._expired: dict[str, float] = {}  # token -> when it expired (loop time)
        self._deleted: dict[VmKey, VmRecord] = {}
        self._specs = list(vms)
        self._faults = FaultSet(self.config.faults)
        self._throttler = Throttler(self.config.throttling)
        self._recorder = Recorder(log_size=self.config.log_size)
        self._operations: OrderedDict[str, Operation] = OrderedDict()
        self._vms: dict[VmKey, VmRecord] = {}
        self._by_rg: dict[tuple[str, str], list[VmRecord]] = {}
        self._by_sub: dict[str, list[VmRecord]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._tls: ServerTls | None = None
        self._port: int | None = None
        self._mono0 = 0.0
        self._wall0 = datetime.now(timezone.utc)
        keys = set()
        for spec in self._specs:
            key = vm_key(spec.subscription_id, spec.resource_group, spec.name)
            if key in keys:
                raise ValueError(f"VM {spec.name!r} in resource group {spec.resource_group!r} is given twice (names are case-insensitive)")
            keys.add(key)

    # ---- lifecycle ----

    @property
    def endpoint(self) -> str:
        if self._port is None:
            raise RuntimeError("the simulator is not started")
        host = self.config.host
        if host in ("0.0.0.0", "", "::"):
            host = "127.0.0.1"
        return f"https://{host}:{self._port}"

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the simulator is not started")
        return self._port

    @property
    def ca_file(self) -> str:
        if self._tls is None:
            raise RuntimeError("the simulator is not started")
        return self._tls.ca_file

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._mono0 = loop.time()
        self._wall0 = datetime.now(timezone.utc)
        self._build_vms()
        self._tls = make_server_tls(self.config.host, ca_file=self.config.ca_file)
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port, ssl_context=self._tls.context, backlog=1024)
        try:
            await site.start()
        except BaseException:
            await self._runner.cleanup()
            self._tls.cleanup()
            self._runner = None
            raise
        server = site._server  # aiohttp keeps the asyncio Server here; the only way to learn port 0's pick
        assert server is not None and server.sockets
        self._port = server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for vm in self._vms.values():
            if vm.operation is not None and vm.operation.handle is not None:
                vm.operation.handle.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._tls is not None:
            self._tls.cleanup()
        self._port = None

    def _build_vms(self) -> None:
        now = self._now()
        created = self._wall(now - 86400 * 30)
        self._vms = {}
        self._by_rg = {}
        self._by_sub = {}
        for spec in self._specs:
            vm = VmRecord(spec, timings=self.config.timings, time_created=created, now=now)
            self._vms[vm.key] = vm
            self._by_rg.setdefault(vm.key[:2], []).append(vm)
            self._by_sub.setdefault(vm.key[0], []).append(vm)
        for group in (*self._by_rg.values(), *self._by_sub.values()):
            group.sort(key=lambda v: v.key)

    def _now(self) -> float:
        return self._loop.time() if self._loop is not None else 0.0

    def _wall(self, t: float) -> str:
        return (self._wall0 + timedelta(seconds=t - self._mono0)).isoformat()

    # ---- inspection and driving (call on the simulator's loop) ----

    def _find(self, name: str, resource_group: str | None = None, subscription_id: str | None = None) -> VmRecord:
        lname = name.lower()
        found = [
            vm for vm in self._vms.values()
            if vm.key[2] == lname
            and (resource_group is None or vm.key[1] == resource_group.lower())
            and (subscription_id is None or vm.key[0] == subscription_id.lower())
        ]
        if not found:
            raise KeyError(f"no simulated VM {name!r}" + (f" in resource group {resource_group!r}" if resource_group else ""))
        if len(found) > 1:
            raise KeyError(f"VM name {name!r} is ambiguous: give resource_group (and subscription_id)")
        return found[0]

    def vm_state(self, name: str, *, resource_group: str | None = None, subscription_id: str | None = None) -> VmSnapshot:
        return VmSnapshot.of(self._find(name, resource_group, subscription_id))

    def vm_states(self) -> list[VmSnapshot]:
        return [VmSnapshot.of(vm) for vm in sorted(self._vms.values(), key=lambda v: v.key)]

    def request_log(self) -> list[RequestRecord]:
        return list(self._recorder.log)

    def counters(self) -> dict[tuple[str, int], int]:
        """Requests by (operation name, HTTP status); status 0 counts dropped connections."""
        return dict(self._recorder.counters)

    def count(self, operation: OpName | str, status: int | None = None) -> int:
        name = operation.value if isinstance(operation, OpName) else operation
        return sum(n for (op, st), n in self._recorder.counters.items() if op == name and (status is None or st == status))

    def overlaps(self) -> list[Overlap]:
        return list(self._recorder.overlaps)

    def add_fault(self, fault: Fault | str) -> int:
        """Install a fault (a :class:`Fault` or a spec string); returns its id."""
        return self._faults.add(Fault.parse(fault) if isinstance(fault, str) else fault)

    def remove_fault(self, fault_id: int) -> bool:
        return self._faults.remove(fault_id)

    def clear_faults(self) -> None:
        self._faults.clear()

    def faults(self) -> list[dict[str, object]]:
        return self._faults.listing()

    def out_of_band(
        self, name: str, action: PowerAction | str, *, hibernate: bool = False,
        resource_group: str | None = None, subscription_id: str | None = None,
    ) -> str:
        """Start a real transition as if another client (the portal) asked; returns the operation id.

        Raises :class:`~testbed.azuresim.wire.ArmError` (409) when the state machine refuses it.
        """
        vm = self._find(name, resource_group, subscription_id)
        action = PowerAction(action) if not isinstance(action, PowerAction) else action
        try:
            phases = plan(vm, action, hibernate=hibernate)
        except Refusal as r:
            raise wire.conflict(r.message) from None
        return self._begin(vm, action, hibernate=hibernate, origin=Origin.OUT_OF_BAND, phases=phases, fail=None).id

    def evict(self, name: str, *, resource_group: str | None = None, subscription_id: str | None = None) -> str:
        """The platform takes a Spot VM back, as Azure does when it needs the capacity or the
        price rises above the VM's maximum: it deallocates (``deallocating`` for the deallocate
        timing, then ``deallocated`` with a plain instance view). Returns the operation id.

        Raises :class:`~testbed.azuresim.wire.ArmError` (409) for a VM that is not Spot, is already
        deallocated, or is busy with another operation.
        """
        vm = self._find(name, resource_group, subscription_id)
        try:
            phases = plan_eviction(vm)
        except Refusal as r:
            raise wire.conflict(r.message) from None
        vm.evictions += 1
        return self._begin(vm, PowerAction.DEALLOCATE, hibernate=False, origin=Origin.EVICTION, phases=phases, fail=None).id

    def set_tags(
        self, name: str, tags: Mapping[str, str], *, resource_group: str | None = None, subscription_id: str | None = None,
    ) -> None:
        """Replace the VM's tags at once, as someone editing them in the portal would."""
        self._find(name, resource_group, subscription_id).tags = dict(tags)

    def set_power_state(
        self, name: str, state: PowerState | str, *, hibernated: bool = False,
        resource_group: str | None = None, subscription_id: str | None = None,
    ) -> None:
        """Change the power state at once ("shut down from inside the guest"). An operation in
        flight is ended as Canceled with ``OperationPreempted``, as Azure ends a preempted one."""
        vm = self._find(name, resource_group, subscription_id)
        state = PowerState(state)
        if vm.operation is not None:
            self._finish(vm.operation, OperationStatus.CANCELED, OperationError(
                "OperationPreempted", wire.default_failure_message("OperationPreempted")))
        vm.power = state
        vm.hibernated = hibernated and state is PowerState.DEALLOCATED
        vm.provisioning = "succeeded"
        vm.failure = None
        vm.status_time = self._now()

    def delete_vm(self, name: str, *, resource_group: str | None = None, subscription_id: str | None = None) -> None:
        """Delete the VM in Azure, as someone would in the portal: GETs answer 404 from now on, it
        leaves list pages, and an operation in flight ends Canceled. Its resource group stays."""
        vm = self._find(name, resource_group, subscription_id)
        if vm.operation is not None:
            self._finish(vm.operation, OperationStatus.CANCELED, OperationError(
                "OperationPreempted", wire.default_failure_message("OperationPreempted")))
        del self._vms[vm.key]
        for group in (self._by_rg[vm.key[:2]], self._by_sub[vm.key[0]]):
            group.remove(vm)
        self._deleted[vm.key] = vm

    def restore_vm(
        self, name: str, *, resource_group: str | None = None, subscription_id: str | None = None,
        power_state: PowerState | str | None = None, tags: Mapping[str, str] | None = None,
    ) -> None:
        """Bring a deleted VM back under the same resource id (and vmId): as it was when deleted,
        unless ``power_state`` or ``tags`` say otherwise."""
        lname = name.lower()
        found = [vm for key, vm in self._deleted.items() if key[2] == lname
                 and (resource_group is None or key[1] == resource_group.lower())
                 and (subscription_id is None or key[0] == subscription_id.lower())]
        if len(found) != 1:
            raise KeyError(f"no deleted VM {name!r}" if not found else f"deleted VM name {name!r} is ambiguous: give resource_group")
        vm = found[0]
        del self._deleted[vm.key]
        if power_state is not None:
            vm.power = PowerState(power_state)
        if tags is not None:
            vm.tags = dict(tags)
        vm.provisioning, vm.failure, vm.status_time = "succeeded", None, self._now()
        self._vms[vm.key] = vm
        for group in (self._by_rg[vm.key[:2]], self._by_sub[vm.key[0]]):
            group.append(vm)
            group.sort(key=lambda v: v.key)

    def issue_token(self, *, like: str | None = None, token: str | None = None) -> str:
        """A new bearer token for the identity that holds ``like`` (default: the full-access
        one), with the same permissions: what a credential gets when it signs in again."""
        source = self._principals.get(like or self.token)
        if source is None:
            raise KeyError("no such token to issue a new one like")
        new = token or secrets.token_urlsafe(32)
        if new in self._principals:
            raise ValueError("that token is already in use")
        principal = _Principal(new, None)
        principal.admin, principal.grants = source.admin, source.grants  # the same permissions ...
        principal.object_id = source.object_id  # ... and identity: RBAC and logs see one principal
        self._principals[new] = principal
        return new

    def expire_token(self, token: str) -> None:
        """From now on, requests with ``token`` are answered 401 ExpiredAuthenticationToken."""
        if token not in self._principals:
            raise KeyError("no such token")
        self._expired.setdefault(token, self._now())

    def fast_forward(self, name: str, *, resource_group: str | None = None, subscription_id: str | None = None) -> bool:
        """Run the VM's in-flight operation through its remaining steps now, as if its time had
        passed (success, or the injected failure). Returns False when nothing was in flight.

        Lets tests use long transitions (so a transient state cannot end under a slow machine)
        without waiting for them."""
        op = self._find(name, resource_group, subscription_id).operation
        if op is None:
            return False
        while not op.done and op.pending is not None:
            if op.handle is not None:
                op.handle.cancel()
            self._run_pending(op)
        return True

    def operation_log(self) -> list[OperationRecord]:
        """The operations the simulator keeps (``operations_kept``), oldest first: who asked,
        when each began and ended (loop clock, as in the request log)."""
        return [
            OperationRecord(
                id=op.id, vm=op.vm.spec.name, resource_group=op.vm.spec.resource_group, action=op.label, origin=op.origin.value,
                start=op.start_time, end=op.end_time, status=op.status.value,
            )
            for op in self._operations.values()
        ]

    def unobserved(self) -> list[Unobserved]:
        """The starvation guard (see recording.unobserved) over what the simulator kept."""
        return unobserved(self.operation_log(), list(self._recorder.log), now=self._now())

    def operation(self, operation_id: str) -> dict[str, Any] | None:
        op = self._operations.get(operation_id.lower())
        return None if op is None else self._operation_body(op)

    def reset(self, *, vms: bool = False) -> None:
        """Forget the log, counters, overlaps, faults and throttling state; with ``vms``, also
        put every VM back as configured (operations in flight are dropped)."""
        self._recorder.reset()
        self._faults.clear()
        self._throttler.reset()
        if vms:
            for vm in self._vms.values():
                if vm.operation is not None and vm.operation.handle is not None:
                    vm.operation.handle.cancel()
            self._operations.clear()
            self._deleted.clear()
            self._build_vms()

    # ---- power operations ----

    def _begin(self, vm: VmRecord, action: PowerAction, *, hibernate: bool, origin: Origin,
               phases: list[Phase] | None, fail: Fault | None) -> Operation:
        now = self._now()
        op = Operation(vm=vm, action=action, hibernate=hibernate, origin=origin, now=now)
        self._remember(op)
        if fail is not None:
            error = OperationError(
                fail.code or "InternalExecutionError",
                fail.message or wire.default_failure_message(
                    fail.code or "", vm.spec, hibernated=vm.hibernated and action is PowerAction.START
                ),
            )
            duration = fail.after if fail.after is not None else sum(s for _, s in phases or [])
            first = phases[0][0] if phases else vm.power
            self._occupy(vm, op)
            vm.power = first
            self._schedule(op, duration, self._fail, op, error)
            return op
        if not phases:
            op.status = OperationStatus.SUCCEEDED
            op.end_time = now
            return op
        self._occupy(vm, op)
        self._step(op, phases, 0)
        return op

    def _occupy(self, vm: VmRecord, op: Operation) -> None:
        vm.operation = op
        vm.provisioning = "updating"
        vm.failure = None
        vm.status_time = op.start_time

    def _step(self, op: Operation, phases: list[Phase], index: int) -> None:
        vm = op.vm
        if index == len(phases):
            vm.power = final_state(op.action)
            if op.action is PowerAction.DEALLOCATE:
                vm.hibernated = op.hibernate
            elif op.action is PowerAction.START:
                vm.hibernated = False
            self._finish(op, OperationStatus.SUCCEEDED, None)
            return
        state, seconds = phases[index]
        vm.power = state
        self._schedule(op, seconds, self._step, op, phases, index + 1)

    def _schedule(self, op: Operation, delay: float, callback: Any, *args: Any) -> None:
        assert self._loop is not None
        op.pending = (callback, args)
        op.handle = self._loop.call_later(delay, self._run_pending, op)

    @staticmethod
    def _run_pending(op: Operation) -> None:
        assert op.pending is not None
        callback, args = op.pending
        op.pending = op.handle = None
        callback(*args)

    def _fail(self, op: Operation, error: OperationError) -> None:
        op.vm.power = op.initial_power
        self._finish(op, OperationStatus.FAILED, error)

    def _finish(self, op: Operation, status: OperationStatus, error: OperationError | None) -> None:
        if op.handle is not None:
            op.handle.cancel()
        op.handle = op.pending = None
        now = self._now()
        op.status = status
        op.end_time = now
        op.error = error
        vm = op.vm
        if vm.operation is op:
            vm.operation = None
            vm.status_time = now
            if status is OperationStatus.SUCCEEDED:
                vm.provisioning, vm.failure = "succeeded", None
            elif status is OperationStatus.FAILED:
                vm.provisioning, vm.failure = "failed", error
            else:
                vm.provisioning, vm.failure = "succeeded", None

    def _remember(self, op: Operation) -> None:
        """Keep at most ``operations_kept`` operations, dropping the oldest finished ones first;
        operations still running are never dropped (clients are polling them)."""
        ops = self._operations
        ops[op.id] = op
        passes = 0
        while len(ops) > self.config.operations_kept and passes < len(ops):
            oldest_id, oldest = next(iter(ops.items()))
            if oldest.done:
                del ops[oldest_id]
            else:
                ops.move_to_end(oldest_id)
                passes += 1

    def _operation_body(self, op: Operation) -> dict[str, Any]:
        return wire.operation_status(
            op.id, op.status.value, self._wall(op.start_time),
            None if op.end_time is None else self._wall(op.end_time), op.error,
        )

    # ---- HTTP ----

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path.startswith("/_sim/") or path == "/_sim":
            return await self._admin(request)
        started = self._now()
        route = parse_route(request.method, path, monitor=_flag(request.query.get("monitor")))
        call: dict[str, Any] = {"status": NO_RESPONSE, "principal": None, "overlap": None}
        if route.action is not None:  # noted before anything can answer: an overlap counts whatever the answer
            vm = self._vms.get(vm_key(route.subscription or "", route.resource_group or "", route.name or ""))
            if vm is not None and vm.operation is not None:
                hibernate = route.action is PowerAction.DEALLOCATE and _flag(request.query.get("hibernate"))
                call["overlap"] = (vm.operation, "hibernate" if hibernate else route.action.value, vm)
        try:
            response = await self._serve(request, route, call)
            if call.get("lost"):
                raise _Dropped()  # served (the operation may have begun), the answer never arrives
            call["status"] = response.status
            return response
        except ArmError as e:
            call["status"] = e.status
            return self._error(e)
        except _Dropped:
            transport = request.transport
            if transport is not None:
                transport.abort()
            raise asyncio.CancelledError() from None
        finally:
            self._recorder.request(RequestRecord(
                time=started, method=request.method, path=path, operation=route.op.value, vm=route.name,
                status=call["status"], principal=call["principal"],
            ))
            overlap = call["overlap"]
            if overlap is not None:
                in_flight, requested, vm = overlap
                self._recorder.overlap(Overlap(
                    time=started, subscription_id=vm.spec.subscription_id, resource_group=vm.spec.resource_group,
                    vm=vm.spec.name, requested=requested, in_flight=in_flight.label,
                    in_flight_origin=in_flight.origin.value, in_flight_operation_id=in_flight.id, status=call["status"],
                ))

    def _error(self, e: ArmError) -> web.Response:
        headers = {"x-ms-request-id": str(uuid.uuid4()), **e.headers}
        return web.Response(status=e.status, body=e.body(), headers=headers, content_type=_JSON)

    def _authenticate(self, request: web.Request) -> _Principal:
        header = request.headers.get("Authorization")
        if not header:
            raise wire.authentication_missing()
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise wire.authentication_bad_header()
        principal = self._principals.get(token.strip())
        if principal is None:
            raise wire.authentication_invalid_token()
        expired = self._expired.get(token.strip())
        if expired is not None:
            def utc(t: float) -> str:  # ARM's format: 5/18/2026 9:07:50 PM
                w = self._wall0 + timedelta(seconds=t - self._mono0)
                return f"{w.month}/{w.day}/{w.year} {w.hour % 12 or 12}:{w.minute:02d}:{w.second:02d} {'AM' if w.hour < 12 else 'PM'}"

            raise wire.authentication_expired_token(utc(expired), utc(self._now()))
        return principal

    async def _serve(self, request: web.Request, route: _Route, call: dict[str, Any]) -> web.Response:
        principal = self._authenticate(request)
        call["principal"] = principal.object_id
        query = request.query
        api_version = query.get("api-version")
        if not api_version:
            raise wire.missing_api_version()
        if route.op is OpName.UNKNOWN:
            raise wire.not_found_route(request.path)
        sub, rg, name = route.subscription, route.resource_group, route.name
        fail: Fault | None = None
        mangle: Fault | None = None
        hide = False
        if self._faults:
            delay, fault = self._faults.request_faults(route.op, sub, rg, name)
            if delay:
                await asyncio.sleep(delay)
            if fault is not None:
                if fault.kind is FaultKind.TIMEOUT:
                    await asyncio.sleep(fault.delay or 5.0)
                    raise _Dropped()
                if fault.kind is FaultKind.DROP:
                    raise _Dropped()
                if fault.kind is FaultKind.FAIL:
                    fail = fault
                elif fault.kind in _ANSWERS:
                    return _ANSWERS[fault.kind](self, request, fault)
                elif fault.kind in _MANGLERS:
                    mangle = fault
                elif fault.kind is FaultKind.NO_POWER_STATE:  # drawn by a chaos fault for this request
                    hide = True
                elif fault.kind is FaultKind.LOST:
                    call["lost"] = True
                else:
                    raise self._fault_error(fault)
        response = await self._answer(request, route, principal, api_version, fail, hide_power_state=hide)
        if mangle is not None and response.body:
            response.body = _MANGLERS[mangle.kind](bytes(response.body), mangle)  # type: ignore[arg-type]
        return response

    async def _answer(self, request: web.Request, route: _Route, principal: _Principal, api_version: str,
                      fail: Fault | None, *, hide_power_state: bool) -> web.Response:
        """ARM's own answer once no fault took its place: throttling, RBAC, lookup, the operation."""
        query = request.query
        sub, rg, name = route.subscription, route.resource_group, route.name
        now = self._now()
        wall_now = self._wall0 + timedelta(seconds=now - self._mono0)
        headers = {"x-ms-request-id": str(uuid.uuid4())}
        if route.op is OpName.SUBSCRIPTIONS:  # tenant level: no subscription's buckets, no action needed
            return self._json(200, wire.subscriptions(self._subscription_ids()), headers)
        assert sub is not None
        headers.update(self._throttler.arm(
            write=request.method != "GET", subscription=sub, principal=principal.object_id, now=now,
        ))
        action = wire.REQUIRED_ACTION[route.op]
        if not principal.allows(action):
            raise wire.authorization_failed(principal.object_id, action, self._scope(route, request.path))
        if sub.lower() not in self._by_sub:
            raise wire.subscription_not_found(sub)
        vm: VmRecord | None = None
        if rg is not None:
            if (sub.lower(), rg.lower()) not in self._by_rg:
                raise wire.resource_group_not_found(rg)
            if name is not None:
                vm = self._vms.get(vm_key(sub, rg, name))
                if vm is None:
                    raise wire.vm_not_found(rg, name)
        headers.update(self._throttler.compute(route.op, subscription=sub, vm=vm.key if vm else None, now=now, wall=wall_now))

        op = route.op
        if op is OpName.PERMISSIONS:
            return self._json(200, wire.permissions(principal.grants), headers)
        if op is OpName.GET:
            assert vm is not None
            expand = (query.get("$expand") or "").lower() == "instanceview"
            view = self._view(vm, op, hide=hide_power_state) if expand else None
            return self._json(200, wire.vm_resource(vm, view=view), headers)
        if op is OpName.INSTANCE_VIEW:
            assert vm is not None
            return self._json(200, self._view(vm, op, hide=hide_power_state), headers)
        if op in (OpName.LIST, OpName.LIST_ALL):
            return self._list(request, route, headers, hide=hide_power_state)
        if route.action is not None:
            assert vm is not None
            return self._power(request, vm, route.action, api_version, headers, fail)
        if op is OpName.SIMULATE_EVICTION:
            assert vm is not None
            self.evict(vm.spec.name, resource_group=vm.spec.resource_group, subscription_id=vm.spec.subscription_id)
            return web.Response(status=204, headers=headers)
        if op in (OpName.OPERATION_STATUS, OpName.OPERATION_RESULT):
            return self._operation_status(request, route, api_version, headers)
        assert vm is not None
        return await self._tags(request, vm, op, headers)

    def _fault_error(self, fault: Fault) -> ArmError:
        status, code = fault.http_status, fault.http_code
        headers: dict[str, str] = {}
        if fault.retry_after is not None or status == 429:
            headers["Retry-After"] = _seconds(fault.retry_after if fault.retry_after is not None else 1.0)
        if status == 429 and fault.code is None:
            return ArmError(
                429, "OperationNotAllowed",
                fault.message or "The server rejected the request because too many requests have been received for this subscription.",
                details=[{"code": "TooManyRequests", "target": "InjectedFault", "message": "injected by the Azure simulator"}],
                headers=headers,
            )
        return ArmError(status, code, fault.message or f"Injected fault: {code}.", headers=headers)

    def _subscription_ids(self) -> list[str]:
        """Every subscription the simulator's VMs are in, as first spelled."""
        return sorted({vms[0].spec.subscription_id for vms in self._by_sub.values()}, key=str.lower)

    def _scope(self, route: _Route, path: str) -> str:
        if route.op in (OpName.OPERATION_STATUS, OpName.OPERATION_RESULT):
            return path
        scope = f"/subscriptions/{route.subscription}"
        if route.resource_group is not None:
            scope += f"/resourceGroups/{route.resource_group}"
        if route.name is not None:
            scope += f"/providers/Microsoft.Compute/virtualMachines/{route.name}"
        return scope

    def _json(self, status: int, body: Any, headers: dict[str, str]) -> web.Response:
        return web.Response(status=status, body=json.dumps(body).encode(), headers=headers, content_type=_JSON)

    def _view(self, vm: VmRecord, op: OpName, *, hide: bool = False) -> dict[str, Any]:
        hide = hide or (bool(self._faults) and self._faults.hide_power_state(op, vm.spec.subscription_id, vm.spec.resource_group, vm.spec.name))
        return wire.instance_view(vm, self._wall(vm.status_time), hide_power_state=hide)

    def _list(self, request: web.Request, route: _Route, headers: dict[str, str], *, hide: bool = False) -> web.Response:
        query = request.query
        assert route.subscription is not None
        if route.op is OpName.LIST:
            assert route.resource_group is not None
            vms = self._by_rg[(route.subscription.lower(), route.resource_group.lower())]
        else:
            vms = self._by_sub[route.subscription.lower()]
        token = query.get("$skiptoken", "0")
        try:
            offset = int(token)
            if offset < 0:
                raise ValueError
        except ValueError:
            raise ArmError(400, "InvalidSkipToken", f"The skip token '{token}' is not valid.") from None
        page = vms[offset: offset + self.config.page_size]
        status_only = _flag(query.get("statusOnly"))
        expand = (query.get("$expand") or "").lower() == "instanceview"
        if status_only:
            items = [wire.vm_status_only(vm, self._view(vm, route.op, hide=hide)) for vm in page]
        else:
            items = [wire.vm_resource(vm, view=self._view(vm, route.op, hide=hide) if expand else None) for vm in page]
        body: dict[str, Any] = {"value": items}
        following = offset + len(page)
        if following < len(vms):
            params = [(k, v) for k, v in query.items() if k != "$skiptoken"] + [("$skiptoken", str(following))]
            body["nextLink"] = f"{self.endpoint}{request.path}?{urlencode(params)}"
        return self._json(200, body, headers)

    def _power(self, request: web.Request, vm: VmRecord, action: PowerAction, api_version: str,
               headers: dict[str, str], fail: Fault | None) -> web.Response:
        query = request.query
        hibernate = action is PowerAction.DEALLOCATE and _flag(query.get("hibernate"))
        try:
            phases = plan(vm, action, hibernate=hibernate)
        except Refusal as r:
            raise wire.conflict(r.message) from None
        op = self._begin(vm, action, hibernate=hibernate, origin=Origin.API, phases=phases, fail=fail)
        base = f"{self.endpoint}/subscriptions/{vm.spec.subscription_id}/providers/Microsoft.Compute/locations/{vm.spec.location}/operations/{op.id}"
        headers["Azure-AsyncOperation"] = f"{base}?{urlencode({'api-version': api_version})}"
        headers["Location"] = f"{base}?{urlencode({'monitor': 'true', 'api-version': api_version})}"
        headers["Retry-After"] = str(int(-(-self.config.retry_after // 1)))  # whole seconds: the SDK parses it as int
        return web.Response(status=202, headers=headers)

    def _operation_status(self, request: web.Request, route: _Route, api_version: str, headers: dict[str, str]) -> web.Response:
        assert route.operation_id is not None
        op = self._operations.get(route.operation_id.lower())
        if (
            op is None
            or op.vm.spec.subscription_id.lower() != (route.subscription or "").lower()
            or op.vm.spec.location.lower() != (route.location or "").lower()
        ):
            raise ArmError(404, "NotFound", "The entity was not found in this Azure location.")
        monitor = route.op is OpName.OPERATION_RESULT
        if not op.done:
            headers["Retry-After"] = _seconds(self.config.retry_after)
        if not monitor:
            return self._json(200, self._operation_body(op), headers)
        # the Location monitor: 202 while running, 200 (empty) after success, the error after failure
        if not op.done:
            headers["Location"] = f"{self.endpoint}{request.path}?{urlencode({'monitor': 'true', 'api-version': api_version})}"
            return web.Response(status=202, headers=headers)
        if op.status is OperationStatus.SUCCEEDED:
            return web.Response(status=200, headers=headers)
        error = op.error or OperationError("OperationCanceled", "The operation was canceled.")
        raise ArmError(409, error.code, error.message, headers=headers)

    async def _tags(self, request: web.Request, vm: VmRecord, op: OpName, headers: dict[str, str]) -> web.Response:
        if op is OpName.TAGS_GET:
            return self._json(200, wire.tags_resource(vm), headers)
        if op is OpName.TAGS_DELETE:
            vm.tags = {}
            return web.Response(status=200, headers=headers)
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError) as e:
            raise wire.invalid_request_content(str(e)) from None
        if not isinstance(body, dict):
            raise wire.invalid_request_content("the body must be a JSON object")
        props = body.get("properties")
        tags = props.get("tags") if isinstance(props, dict) else None
        if tags is None:
            tags = {}
        if not isinstance(tags, dict):
            raise wire.invalid_request_content("properties.tags must be an object")
        if op is OpName.TAGS_PUT:
            operation = "replace"
        else:
            operation = str(body.get("operation") or "").lower()
            if operation not in ("merge", "replace", "delete"):
                raise wire.invalid_request_content(f"operation must be Merge, Replace or Delete, not {body.get('operation')!r}")
        wire.validate_tags(tags, check_values=operation != "delete")
        if operation == "replace":
            result = dict(tags)
        elif operation == "merge":
            result = wire.merge_tags(vm.tags, tags)
        else:
            result = wire.delete_tags(vm.tags, {k: v if isinstance(v, str) else "" for k, v in tags.items()})
        wire.check_tag_count(result)
        vm.tags = result
        return self._json(200, wire.tags_resource(vm), headers)

    # ---- admin endpoints (/_sim/…) ----

    async def _admin(self, request: web.Request) -> web.Response:
        try:
            principal = self._authenticate(request)
            if not principal.admin:
                raise ArmError(403, "AuthorizationFailed", "The admin endpoints need the simulator's full-access token.")
            return await self._admin_route(request)
        except ArmError as e:
            return self._error(e)
        except (KeyError, ValueError) as e:
            message = e.args[0] if e.args else str(e)
            return self._error(ArmError(404 if isinstance(e, KeyError) else 400, "SimulatorRequestInvalid", str(message)))

    async def _admin_route(self, request: web.Request) -> web.Response:
        segs = [s for s in request.path.split("/") if s][1:]
        method = request.method
        query = request.query
        sub = query.get("subscription")
        ok: dict[str, str] = {}
        if segs == ["vms"] and method == "GET":
            return self._json(200, [as_dict(s) for s in self.vm_states()], ok)
        if len(segs) == 3 and segs[0] == "vms" and method == "GET":
            return self._json(200, as_dict(self.vm_state(segs[2], resource_group=segs[1], subscription_id=sub)), ok)
        if len(segs) == 4 and segs[0] == "vms" and segs[3] == "power-state" and method == "PUT":
            body = await _json_body(request)
            self.set_power_state(segs[2], str(body.get("powerState")), hibernated=bool(body.get("hibernated", False)),
                                 resource_group=segs[1], subscription_id=sub)
            return self._json(200, as_dict(self.vm_state(segs[2], resource_group=segs[1], subscription_id=sub)), ok)
        if len(segs) == 3 and segs[0] == "vms" and method == "DELETE":
            self.delete_vm(segs[2], resource_group=segs[1], subscription_id=sub)
            return self._json(200, {"deleted": True}, ok)
        if len(segs) == 4 and segs[0] == "vms" and segs[3] == "restore" and method == "POST":
            body = await _json_body(request) if request.can_read_body else {}
            tags = body.get("tags")
            if tags is not None and not (isinstance(tags, dict) and all(isinstance(v, str) for v in tags.values())):
                raise ValueError('"tags" must be an object of strings')
            self.restore_vm(segs[2], resource_group=segs[1], subscription_id=sub, power_state=body.get("powerState"), tags=tags)
            return self._json(200, as_dict(self.vm_state(segs[2], resource_group=segs[1], subscription_id=sub)), ok)
        if len(segs) == 4 and segs[0] == "vms" and segs[3] == "tags" and method == "PUT":
            tags = (await _json_body(request)).get("tags")
            if not (isinstance(tags, dict) and all(isinstance(v, str) for v in tags.values())):
                raise ValueError('PUT …/tags takes {"tags": {"name": "value", …}}')
            self.set_tags(segs[2], tags, resource_group=segs[1], subscription_id=sub)
            return self._json(200, as_dict(self.vm_state(segs[2], resource_group=segs[1], subscription_id=sub)), ok)
        if segs == ["tokens"] and method == "POST":
            body = await _json_body(request) if request.can_read_body else {}
            like, token = body.get("like"), body.get("token")
            if not all(v is None or isinstance(v, str) for v in (like, token)):
                raise ValueError('POST /_sim/tokens takes {"like": "<token>", "token": "<new token>"} (both optional)')
            return self._json(201, {"token": self.issue_token(like=like, token=token)}, ok)
        if segs == ["tokens", "expire"] and method == "POST":
            token = (await _json_body(request)).get("token")
            if not isinstance(token, str):
                raise ValueError('POST /_sim/tokens/expire takes {"token": "<token>"}')
            self.expire_token(token)
            return self._json(200, {"expired": True}, ok)
        if len(segs) == 4 and segs[0] == "vms" and segs[3] == "fast-forward" and method == "POST":
            ran = self.fast_forward(segs[2], resource_group=segs[1], subscription_id=sub)
            return self._json(200, {"fastForwarded": ran, **as_dict(self.vm_state(segs[2], resource_group=segs[1], subscription_id=sub))}, ok)
        if len(segs) == 4 and segs[0] == "vms" and segs[3] == "evict" and method == "POST":
            op_id = self.evict(segs[2], resource_group=segs[1], subscription_id=sub)
            return self._json(202, {"operationId": op_id}, ok)
        if len(segs) == 4 and segs[0] == "vms" and method == "POST":
            action = _ACTIONS.get(segs[3].lower())
            if action is None:
                raise ValueError(f"unknown action {segs[3]!r} (start, deallocate, powerOff, restart, evict)")
            op_id = self.out_of_band(segs[2], action, hibernate=_flag(query.get("hibernate")),
                                     resource_group=segs[1], subscription_id=sub)
            return self._json(202, {"operationId": op_id}, ok)
        if segs == ["faults"]:
            if method == "GET":
                return self._json(200, self.faults(), ok)
            if method == "POST":
                body = await _json_body(request)
                spec = body.get("spec")
                if not isinstance(spec, str):
                    raise ValueError('POST /_sim/faults takes {"spec": "<fault spec>"}')
                return self._json(201, {"id": self.add_fault(spec)}, ok)
            if method == "DELETE":
                self.clear_faults()
                return self._json(200, {"cleared": True}, ok)
        if len(segs) == 2 and segs[0] == "faults" and method == "DELETE":
            if not self.remove_fault(int(segs[1])):
                raise KeyError(f"no fault with id {segs[1]}")
            return self._json(200, {"removed": int(segs[1])}, ok)
        if segs == ["counters"] and method == "GET":
            return self._json(200, self._recorder.counters_json(), ok)
        if segs == ["log"] and method == "GET":
            if "since" in query:  # a reader that follows the log: what came after its last read
                records, total = self._recorder.since(int(query["since"]))
                return self._json(200, [record_json(r) for r in records], {**ok, "X-Sim-Log-Total": str(total)})
            limit = int(query.get("limit", "100"))
            records = list(self._recorder.log)[-limit:] if limit > 0 else []
            return self._json(200, [record_json(r) for r in records], ok)
        if segs == ["operations"] and method == "GET":
            since = float(query["since"]) if "since" in query else None
            return self._json(200, [record_json(o) for o in self.operation_log()
                                    if since is None or o.end is None or o.end >= since or o.start >= since], ok)
        if segs == ["unobserved"] and method == "GET":
            return self._json(200, [record_json(u) for u in self.unobserved()], ok)
        if segs == ["overlaps"] and method == "GET":
            return self._json(200, {"total": self._recorder.overlap_total,
                                    "overlaps": [record_json(o) for o in self._recorder.overlaps]}, ok)
        if segs == ["reset"] and method == "POST":
            self.reset(vms=_flag(query.get("vms")))
            return self._json(200, {"reset": True}, ok)
        raise KeyError(f"no admin endpoint {method} {request.path}")


# ---- malformed answers (fault kinds that stand for broken gateways and proxies) ----

_HTML_PAGE = (
    "<!DOCTYPE html>\r\n<html><head><title>{status} - Web server received an invalid response while acting as a "
    "gateway or proxy server.</title></head>\r\n<body><div id=\"header\"><h1>Server Error</h1></div>\r\n"
    "<div id=\"content\"><h2>{status} - Web server received an invalid response while acting as a gateway or proxy "
    "server.</h2>\r\n<h3>There is a problem with the page you are looking for, and it cannot be displayed.</h3>"
    "</div></body></html>\r\n"
)


def _html(sim: AzureComputeSimulator, request: web.Request, fault: Fault) -> web.Response:
    status = fault.status or 502
    return web.Response(status=status, text=_HTML_PAGE.format(status=status), content_type="text/html")


def _empty(sim: AzureComputeSimulator, request: web.Request, fault: Fault) -> web.Response:
    return web.Response(status=200, body=b"", content_type=_JSON)


def _redirect(sim: AzureComputeSimulator, request: web.Request, fault: Fault) -> web.Response:
    location = fault.location or f"{sim.endpoint}{request.path_qs}"
    return web.Response(status=fault.status or 302, headers={"Location": location})


_ANSWERS = {FaultKind.HTML: _html, FaultKind.EMPTY: _empty, FaultKind.REDIRECT: _redirect}


def _truncate(body: bytes, fault: Fault) -> bytes:
    return body[: len(body) // 2]


def _resources(data: Any) -> list[dict[str, Any]]:
    """The VM resources of a GET answer or of a list page."""
    if isinstance(data, dict) and isinstance(data.get("value"), list):
        return [v for v in data["value"] if isinstance(v, dict)]
    return [data] if isinstance(data, dict) else []


def _no_properties(body: bytes, fault: Fault) -> bytes:
    data = json.loads(body)
    for vm in _resources(data):
        vm.pop("properties", None)
    return json.dumps(data).encode()


def _power_code(body: bytes, fault: Fault) -> bytes:
    data = json.loads(body)
    views = [(vm.get("properties") or {}).get("instanceView") for vm in _resources(data)]
    if isinstance(data, dict) and "statuses" in data:  # an instance view on its own
        views.append(data)
    for view in views:
        for status in (view or {}).get("statuses") or []:
            if str(status.get("code", "")).startswith("PowerState/"):
                status["code"] = f"PowerState/{fault.power}"
                status["displayStatus"] = f"VM {fault.power}"
    return json.dumps(data).encode()


_MANGLERS = {FaultKind.TRUNCATED: _truncate, FaultKind.NO_PROPERTIES: _no_properties, FaultKind.POWER_CODE: _power_code}


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError as e:
        raise ValueError(f"the body must be JSON: {e}") from None
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    return body


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.3f}".rstrip("0")
