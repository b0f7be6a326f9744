"""The soak's shell: start the processes, apply the plan, misbehave, record, settle, collect.

Processes (bench/procs.py): ``gpuvm-operator kube-emulator`` with the project's CRDs and kopf's
peering CRDs, ``gpuvm-operator azure-sim`` with the plan's VMs, and ``gpuvm-operator run`` —
standalone first, killed and restarted, then two peered replicas. Requests (bench/clients.py):
GpuVms created as ``kubectl apply`` creates them and patched as ``kubectl patch`` does; claims,
Pods, the simulator's and the emulator's admin endpoints.

What is recorded while it runs: every intent the moment the server took it (``model.World``),
every request the simulator saw and every power operation it ran (followed through
``/_sim/log?since`` and ``/_sim/operations?since``, so nothing is lost to the log's bound),
every version of every GpuVm (one watch), each operator process's RSS, and what each disruption
did. Every wait has a deadline; on a slow machine intents fall behind their planned moments but
are applied in order, and nothing is asserted here (``invariants`` judges afterwards).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.clients import KubeApi, Request, SimAdmin, Watcher, gather_limited, ready_of, settled, within
from bench.procs import Emulator, Operator, Processes, Proc, Simulator, start_emulator, start_operator, start_simulator
from controller.gpuvm import GROUP, PLURAL, VERSION
from soak import model
from soak.plan import MANAGED, SUBSCRIPTION, Disruption, DisruptionKind, Intent, IntentKind, Key, Plan, resolve_window
from testbed.azuresim.model import vm_resource_id
from testbed.sandbox import crd_files

log = logging.getLogger("soak")

ROOT = Path(__file__).resolve().parents[1]
CRDS = [*crd_files(ROOT / "deploy" / "crds"), *crd_files(ROOT / "deploy" / "crds" / "kopf-peering")]
PEERING = "gpuvm-soak"
CLAIMS = "gpuvmclaims"
# The operator's clocks in the soak: the shipped defaults compressed so that a 10-minute run sees
# many cycles of each (resync, consent refresh, back-offs); model.Timing mirrors them.
OPERATOR_FLAGS = (
    "--resync-interval", "20", "--tag-refresh-interval", "10", "--transition-poll", "5", "--error-retry", "5",
    "--capacity-backoff", "5", "--capacity-backoff-max", "40", "--denied-retry", "20",
    "--deallocation-warning", "5", "--resume-confirm", "10",
)
SIM_FLAGS = ("--page-size", "100", "--retry-after", "1", "--log-size", "400000")
HA_PRIORITIES = (100, 50)
# Intents that set one spec field, named by the kind's value.
_SPEC_FIELDS = frozenset({IntentKind.DESIRED, IntentKind.DRIFT_POLICY, IntentKind.STOP_MODE, IntentKind.IDLE_TIMEOUT})


def kube_fault_specs(seed: int) -> list[str]:
    """Kubernetes-side faults, seeded from the run's seed: watches cut (and 410 Gone on resume),
    409 conflicts and 500s on status writes. They hit every client of the emulator alike."""
    return [
        f"kind=watch-cut resource=gpuvms p=0.002 seed={seed + 11}",
        f"kind=watch-cut resource=gpuvmclaims p=0.01 seed={seed + 12}",
        f"kind=watch-cut resource=pods p=0.02 seed={seed + 13}",
        f"kind=watch-gone resource=gpuvms p=0.5 seed={seed + 14}",
        f"kind=conflict resource=gpuvms/status p=0.05 seed={seed + 15}",
        f"kind=http status=500 resource=gpuvms/status p=0.05 seed={seed + 16}",
        f"kind=conflict resource=gpuvmclaims/status p=0.05 seed={seed + 17}",
    ]


def azure_fault_spec(seed: int, p: float) -> str:
    return f"kind=chaos p={p:g} seed={seed}"


@dataclass
class DisruptionRecord:
    kind: str
    planned: float
    at: float = 0.0  # loop time it happened
    detail: dict[str, Any] = field(default_factory=dict)
    down: tuple[float, float] | None = None  # when no operator could act (until the next one was ready)


@dataclass
class Collected:
    """Everything the invariants judge."""

    plan: Plan
    world: model.World
    started: float = 0.0
    intents_started: float = 0.0
    intents_done: float = 0.0
    faults_off: float = 0.0
    quiet: float = 0.0
    converged_at: float | None = None
    convergence_misses: list[str] = field(default_factory=list)
    applied: list[tuple[Intent, float, str]] = field(default_factory=list)  # (intent, loop time, outcome)
    skipped: list[tuple[Intent, str]] = field(default_factory=list)
    disruptions: list[DisruptionRecord] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    requests_missed: int = 0
    operations: dict[str, dict[str, Any]] = field(default_factory=dict)
    overlaps: dict[str, Any] = field(default_factory=dict)
    gpuvms: dict[Key, dict[str, Any]] = field(default_factory=dict)  # final bodies
    claims: dict[Key, dict[str, Any]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    sim_vms: dict[str, dict[str, Any]] = field(default_factory=dict)
    versions: dict[Key, list[tuple[float, str]]] = field(default_factory=dict)  # status changes seen on the watch
    rss: list[tuple[float, int, str, float]] = field(default_factory=list)  # (loop time, intents applied, process, MiB)
    rss_marks: dict[str, tuple[str, float]] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)
    secrets: list[str] = field(default_factory=list)
    azure_faults: list[dict[str, Any]] = field(default_factory=list)
    kube_faults: dict[str, Any] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # what went wrong in the driver itself


class Soak:
    def __init__(self, plan: Plan, workdir: Path, *, timing: model.Timing = model.Timing()) -> None:
        self.plan = plan
        self.config = plan.config
        self.workdir = workdir
        self.out = Collected(plan, model.World(wall_offset=time.time() - time.monotonic(), timing=timing))
        self.world = self.out.world
        self.vms = {v.name: v for v in plan.vms}
        for v in plan.vms:
            self.world.vms[v.name] = model.VmRecord(v.name, v.resource_group, v.power, spot=v.spot, hibernation=v.hibernation)
        self.specs: dict[Key, dict[str, Any]] = {}  # the spec as last written (the driver's copy)
        self.gone_at: dict[Key, float] = {}
        self.pods: dict[str, tuple[str, str]] = {}  # pod -> (namespace, uid)
        self.operators: list[Operator] = []
        self.operator_count = 0
        self.applied = 0
        self.token = ""
        self._token_file = workdir / "operator.token"
        self._log_seq = 0
        self._ops_since = 0.0
        self._poll_lock = asyncio.Lock()
        self._pending_marks: list[str] = []

    # ---- the run ---------------------------------------------------------------------------

    async def run(self) -> Collected:
        out = self.out
        out.started = time.monotonic()
        with Processes(self.workdir) as procs:
            self.procs = procs
            self.emulator = start_emulator(procs, crds=CRDS)
            vms_file = self._write_vm_file()
            self.sim = start_simulator(procs, vms_file=vms_file, flags=SIM_FLAGS, timeout=60)
            self.admin = SimAdmin(self.sim.endpoint, self.sim.ca_file, self.sim.token)
            self.api = KubeApi(self.emulator.url)
            self.watcher = Watcher(self.api)
            self.watcher.listeners.append(self._seen)
            try:
                await self._prepare()
                await self._operate()
            finally:
                await self._collect_final()
                for op in list(self.operators):
                    out.logs[op.proc.name] = op.proc.log_path
                await self.watcher.stop()
                await self.api.close()
                await self.admin.close()
        for proc_name in ("kube-emulator", "azure-sim"):
            out.logs.setdefault(proc_name, self.workdir / f"{proc_name}.log")
        return out

    async def _prepare(self) -> None:
        """Namespaces, the peering object, the GpuVms (as kubectl apply creates them), the
        operator's own token, the first operator; then wait for every GpuVm to be Ready."""
        out = self.out
        status, body = await self.admin.send("POST", "tokens", {})
        assert status == 201, body
        self.token = body["token"]
        out.secrets = [self.sim.token, self.token]
        self._write_token(self.token)
        for ns in sorted({g.key[0] for g in self.plan.gpuvms}):
            await self.api.create_namespace(ns)
        await self.api.request("POST", "/apis/kopf.dev/v1/clusterkopfpeerings",
                               {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": PEERING}})
        await self.watcher.start()
        now = time.monotonic()
        for g in self.plan.gpuvms:
            self.specs[g.key] = dict(g.spec)

        async def create(key: Key) -> None:
            body = await self.api.apply(key[0], key[1], self._crd_spec(key, self.specs[key]))
            self.world.spec_changed(key, time.monotonic() if body else now, self._model_spec(self.specs[key]))

        await gather_limited([(lambda k=g.key: create(k)) for g in self.plan.gpuvms], 16)
        await self._start_operator(standalone=True)
        keys = [g.key for g in self.plan.gpuvms]
        await self.watcher.wait(lambda: all(settled(self.watcher.objects.get(k, {})) for k in keys), 300,
                                f"{len(keys)} GpuVms Ready after the cold start")
        self._tasks = [asyncio.create_task(self._follow_simulator(), name="follow simulator"),
                       asyncio.create_task(self._sample_rss(), name="rss")]

    async def _operate(self) -> None:
        out = self.out
        await self._faults(on=True)
        out.intents_started = time.monotonic()
        queues: dict[Key, list[Intent]] = {}
        for intent in self.plan.intents:
            queues.setdefault(intent.key, []).append(intent)
        runners = [self._run_queue(q) for q in queues.values()]
        disruptions = asyncio.create_task(self._run_disruptions(), name="disruptions")
        await asyncio.gather(*runners)
        out.intents_done = time.monotonic()
        await disruptions
        self._mark_rss("end of intents")
        await self._faults(on=False)
        out.faults_off = time.monotonic()
        out.quiet = max(out.faults_off, self._quiet_after(out.intents_done))
        await self._settle()
        self._mark_rss("settled")

    # ---- intents -------------------------------------------------------------------------

    async def _run_queue(self, intents: list[Intent]) -> None:
        start = self.out.intents_started
        for intent in intents:
            wait = start + intent.at - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)  # the workload's pace, not a wait for a condition
            try:
                outcome = await self._apply(intent)
            except Exception as e:  # noqa: BLE001 - one failed intent is recorded, the run goes on
                outcome = None
                self.out.skipped.append((intent, f"{type(e).__name__}: {e}"))
                self.out.errors.append(f"{intent.describe()}: {type(e).__name__}: {e}")
            if outcome is not None:
                self.out.applied.append((intent, time.monotonic(), outcome))
            self.applied += 1
            if self.applied == self.config.rss_after:
                self._mark_rss(f"after {self.applied} intents")

    async def _apply(self, intent: Intent) -> str:
        kind, key, p = intent.kind, intent.key, intent.params
        handler: Callable[[Intent], Awaitable[str]] = (
            self._spec_field if kind in _SPEC_FIELDS else getattr(self, "_" + kind.name.lower()))
        return await handler(intent)

    async def _patch(self, key: Key, change: Mapping[str, Any]) -> float:
        """``kubectl patch --type merge`` of the spec. Every intent is recorded at the moment its
        request was sent: the server took it at or after then, and the operator may act on it
        before the answer is back here (the model allows acting late, by ``lag``, not early)."""
        spec = self.specs[key]
        for k, v in change.items():
            if v is None:
                spec.pop(k, None)
            else:
                spec[k] = v
        crd = {k: (self._crd_spec(key, spec).get(k) if v is not None else None) for k, v in change.items()}
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{key[0]}/{PLURAL}/{key[1]}?fieldManager=kubectl-patch"
        t = time.monotonic()  # sent: the server took it at or after this
        status, body = await self._retrying("PATCH", path, {"spec": crd}, content_type="application/merge-patch+json")
        if status != 200:
            raise RuntimeError(f"PATCH {key}: {status} {str(body)[:200]}")
        self.world.spec_changed(key, t, self._model_spec(spec))
        return t

    async def _retrying(self, method: str, path: str, body: Any = None, *, content_type: str = "application/json",
                        ok: tuple[int, ...] = (200, 201, 202, 404, 409)) -> tuple[int, Any]:
        """The driver's own requests ride out a busy API server: a few tries, then the answer."""
        for attempt in range(5):
            status, answer = await self.api.request(method, path, body, content_type=content_type)
            if status in ok or attempt == 4:
                return status, answer
            await asyncio.sleep(0.2 * (attempt + 1))
        raise AssertionError("unreachable")

    async def _spec_field(self, i: Intent) -> str:
        """One spec field set to the intent's value; the kind's value names the field."""
        name = i.kind.value
        await self._patch(i.key, {name: i.params[name]})
        return i.params[name]

    async def _retarget(self, i: Intent) -> str:
        await self._patch(i.key, {"vm": i.params["vm"]})
        return f"{i.params['from']} -> {i.params['vm']}"

    async def _schedule(self, i: Intent) -> str:
        if i.params["window"] is None:
            await self._patch(i.key, {"schedule": None})
            return "removed"
        crd, window = resolve_window(i.params["window"], i.params["minutes"], dt.datetime.now(dt.timezone.utc))
        await self._patch(i.key, {"schedule": {"crd": crd, "resolved": [window]}})
        w = crd["windows"][0]
        return f"{w['days']} {w['start']}-{w['end']}"

    async def _delete(self, i: Intent) -> str:
        key, policy = i.key, i.params["deletionPolicy"]
        if self.specs[key].get("deletionPolicy") != policy:
            await self._patch(key, {"deletionPolicy": policy})
        self.gone_at.pop(key, None)
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{key[0]}/{PLURAL}/{key[1]}"
        t = time.monotonic()
        status, body = await self._retrying("DELETE", path)
        if status not in (200, 202):
            raise RuntimeError(f"DELETE {key}: {status} {str(body)[:200]}")
        self.world.spec_changed(key, t, self._model_spec(self.specs[key]), deleting=policy, generation_change=False)
        return "deleting" if body.get("kind") != "Status" else "deleted at once"

    async def _recreate(self, i: Intent) -> str:
        key = i.key
        # The deletion may take longer than planned (the finalizer deallocates, faults, a killed
        # operator): this GpuVm's intents wait for it.
        await self.watcher.wait(lambda: key not in self.watcher.objects and key in self.gone_at, 600,
                                f"{key[0]}/{key[1]} to be deleted")
        change = self.world.change_at(key, float("inf"))
        self.world.spec_changed(key, max(self.gone_at[key], change.at if change else 0.0), None)
        self.specs[key] = dict(i.params["spec"])
        sent = time.monotonic()
        await self.api.apply(key[0], key[1], self._crd_spec(key, self.specs[key]))
        self.world.spec_changed(key, sent, self._model_spec(self.specs[key]))
        return self.specs[key]["desiredState"]

    async def _sim_vm(self, method: str, vm: str, action: str, body: Any = None) -> tuple[int, Any]:
        rg = self.vms[vm].resource_group
        return await self.admin.send(method, f"vms/{rg}/{vm}" + (f"/{action}" if action else ""), body)

    async def _oob(self, i: Intent) -> str:
        vm, action = i.params["vm"], i.params["action"]
        status, _ = await self._sim_vm("POST", vm, action)
        self.world.vms[vm].oob.append((time.monotonic(), action, status == 202))
        return "accepted" if status == 202 else f"refused {status}"

    async def _evict(self, i: Intent) -> str:
        vm = i.params["vm"]
        status, _ = await self._sim_vm("POST", vm, "evict")
        self.world.vms[vm].evictions.append((time.monotonic(), status == 202))
        return "evicted" if status == 202 else f"refused {status}"

    async def _vm_delete(self, i: Intent) -> str:
        vm = i.params["vm"]
        sent = time.monotonic()
        status, body = await self._sim_vm("DELETE", vm, "")
        if status != 200:
            raise RuntimeError(f"deleting VM {vm}: {status} {body}")
        self.world.vms[vm].deleted.append([sent, None])
        return "deleted"

    async def _vm_restore(self, i: Intent) -> str:
        vm, power = i.params["vm"], i.params["power"]
        t = time.monotonic()
        status, body = await self._sim_vm("POST", vm, "restore", {"powerState": power})
        if status != 200:
            raise RuntimeError(f"restoring VM {vm}: {status} {body}")
        record = self.world.vms[vm]
        record.deleted[-1][1] = t
        record.restored_as.append((t, power))
        return f"restored {power}"

    async def _tags_remove(self, i: Intent) -> str:
        vm = i.params["vm"]
        sent = time.monotonic()
        status, body = await self._sim_vm("PUT", vm, "tags", {"tags": {}})
        if status != 200:
            raise RuntimeError(f"untagging VM {vm}: {status} {body}")
        self.world.vms[vm].untagged.append([sent, None])
        return "removed"

    async def _tags_restore(self, i: Intent) -> str:
        vm = i.params["vm"]
        sent = time.monotonic()
        status, body = await self._sim_vm("PUT", vm, "tags", {"tags": dict(MANAGED)})
        if status != 200:
            raise RuntimeError(f"tagging VM {vm}: {status} {body}")
        self.world.vms[vm].untagged[-1][1] = sent
        return "restored"

    async def _claim_create(self, i: Intent) -> str:
        ns, gpuvm = i.key
        name, variant = i.params["claim"], i.params["variant"]
        metadata: dict[str, Any] = {"name": name}
        spec: dict[str, Any] = {"gpuVm": gpuvm}
        record = model.ClaimRecord(ns, name, gpuvm, variant, created=0.0)
        now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        if variant == "lease":
            spec["leaseDurationSeconds"] = i.params["lease"]
            spec["renewTime"] = _rfc3339(now)
            record.lease = float(i.params["lease"])
            renew_time = self.world.mono(now)
        elif variant == "expires":
            expires = now + dt.timedelta(seconds=i.params["expires_in"])
            spec["expiresAt"] = _rfc3339(expires)
            record.expires = self.world.mono(expires)
        elif variant.startswith("pod"):
            pod = i.params["pod"]
            labels = {"gpuvm.dev/claimant": "true"} if variant == "pod" else {}
            status, body = await self._retrying("POST", f"/api/v1/namespaces/{ns}/pods", {
                "apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod, "labels": labels},
                "spec": {"containers": [{"name": "job", "image": "job:1"}]}})
            if status != 201:
                raise RuntimeError(f"creating Pod {pod}: {status} {str(body)[:200]}")
            uid = body["metadata"]["uid"]
            self.pods[pod] = (ns, uid)
            metadata["ownerReferences"] = [{"apiVersion": "v1", "kind": "Pod", "name": pod, "uid": uid}]
            record.pod, record.labelled = pod, variant == "pod"
        sent = time.monotonic()
        status, body = await self._retrying("POST", f"/apis/{GROUP}/{VERSION}/namespaces/{ns}/{CLAIMS}", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "GpuVmClaim", "metadata": metadata, "spec": spec})
        if status != 201:
            raise RuntimeError(f"creating claim {name}: {status} {str(body)[:200]}")
        record.created = sent
        if record.lease is not None:
            record.renewals.append((sent, renew_time))
        self.world.claim(record)
        return variant

    async def _claim_delete(self, i: Intent) -> str:
        ns = i.key[0]
        record = self.world.claims.get((ns, i.params["claim"]))
        sent = time.monotonic()
        status, body = await self._retrying("DELETE", f"/apis/{GROUP}/{VERSION}/namespaces/{ns}/{CLAIMS}/{i.params['claim']}")
        if status not in (200, 404):
            raise RuntimeError(f"deleting claim: {status} {str(body)[:200]}")
        if record is not None and record.deleted is None:
            record.deleted = sent
            self.world.claim_changed(record)
        return "deleted" if status == 200 else "already gone"

    async def _pod_finish(self, i: Intent) -> str:
        pod, phase = i.params["pod"], i.params["phase"]
        ns, _ = self.pods[pod]
        sent = time.monotonic()
        status, body = await self._retrying("PATCH", f"/api/v1/namespaces/{ns}/pods/{pod}/status",
                                            {"status": {"phase": phase}}, content_type="application/merge-patch+json")
        if status != 200:
            raise RuntimeError(f"finishing Pod {pod}: {status} {str(body)[:200]}")
        record = self.world.claims.get((ns, i.params["claim"]))
        if record is not None and record.finished is None:
            record.finished, record.finished_phase = sent, phase
            self.world.claim_changed(record)
        return phase

    async def _lease_renew(self, i: Intent) -> str:
        ns, claim = i.key[0], i.params["claim"]
        record = self.world.claims.get((ns, claim))
        now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        sent = time.monotonic()
        status, body = await self._retrying("PATCH", f"/apis/{GROUP}/{VERSION}/namespaces/{ns}/{CLAIMS}/{claim}",
                                            {"spec": {"renewTime": _rfc3339(now)}},
                                            content_type="application/merge-patch+json")
        if status == 404:
            return "already gone"
        if status != 200:
            raise RuntimeError(f"renewing {claim}: {status} {str(body)[:200]}")
        if record is not None:
            record.renewals.append((sent, self.world.mono(now)))
            self.world.claim_changed(record)
        return "renewed"

    # ---- specs ---------------------------------------------------------------------------

    def _crd_spec(self, key: Key, spec: Mapping[str, Any]) -> dict[str, Any]:
        vm = self.vms[spec["vm"]]
        out = {k: v for k, v in spec.items() if k not in ("vm", "schedule")}
        out["vm"] = {"resourceId": vm_resource_id(SUBSCRIPTION, vm.resource_group, vm.name)}
        if spec.get("schedule"):
            out["schedule"] = spec["schedule"]["crd"]
        return out

    @staticmethod
    def _model_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(spec)
        if spec.get("schedule"):
            out["schedule"] = {"resolved": list(spec["schedule"]["resolved"])}
        return out

    def _write_vm_file(self) -> Path:
        vms = []
        for v in self.plan.vms:
            item: dict[str, Any] = {"name": v.name, "subscription_id": SUBSCRIPTION, "resource_group": v.resource_group,
                                    "power_state": v.power, "tags": dict(MANAGED),
                                    "timings": {"start": v.start, "deallocate": v.deallocate, "hibernate": v.deallocate + 1}}
            if v.hibernation:
                item["hibernation_enabled"] = True
            if v.spot:
                item["priority"] = "Spot"
            vms.append(item)
        path = self.workdir / "soak-vms.yaml"
        path.write_text(yaml.safe_dump({"defaults": {"location": "eastus", "size": "Standard_NC24ads_A100_v4"}, "vms": vms},
                                       sort_keys=False))
        return path

    def _write_token(self, token: str) -> None:
        """Atomically, as the kubelet updates a mounted Secret."""
        staged = self._token_file.with_name(self._token_file.name + ".new")
        staged.write_text(token)
        staged.chmod(0o600)
        os.replace(staged, self._token_file)

    # ---- operators -----------------------------------------------------------------------

    async def _start_operator(self, *, standalone: bool, priority: int = 0) -> Operator:
        self.operator_count += 1
        sim = dataclasses.replace(self.sim, token_file=self._token_file)
        flags = [*OPERATOR_FLAGS]
        if not standalone:
            flags += ["--peering", PEERING, "--priority", str(priority)]
        name = f"operator-{self.operator_count}" + ("" if standalone else f"-prio{priority}")
        op = await asyncio.to_thread(start_operator, self.procs, emulator=self.emulator, simulator=sim,
                                     subscription=SUBSCRIPTION, flags=flags, name=name, timeout=120)
        self.operators.append(op)
        self.out.logs[op.proc.name] = op.proc.log_path
        self.out.commands.append(op.proc.command)
        return op

    def _kill(self, op: Operator, sig: signal.Signals) -> float:
        """Signal the process and wait (bounded) for it to end; returns how long that took."""
        began = time.monotonic()
        op.proc.popen.send_signal(sig)
        try:
            op.proc.popen.wait(30 if sig == signal.SIGTERM else 10)
        except Exception:  # noqa: BLE001 - SIGTERM not honoured in time: that is recorded, then it is killed
            op.proc.popen.kill()
            op.proc.popen.wait(10)
        if op in self.operators:
            self.operators.remove(op)
        if op.proc in self.procs.procs:
            self.procs.procs.remove(op.proc)
        return time.monotonic() - began

    async def _active(self, op: Operator) -> bool:
        def probe() -> bool:
            try:
                import urllib.request

                with urllib.request.urlopen(op.health_url, timeout=5) as r:  # noqa: S310 - loopback
                    return bool(json.loads(r.read().decode()).get("operator", {}).get("active"))
            except OSError:
                return False

        return await asyncio.to_thread(probe)

    async def _wait_active(self, op: Operator, timeout: float, what: str) -> float:
        deadline = time.monotonic() + timeout
        while not await self._active(op):
            op.proc.check()
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
            await asyncio.sleep(0.5)  # polling a probe with a deadline
        return time.monotonic()

    # ---- disruptions ---------------------------------------------------------------------

    async def _run_disruptions(self) -> None:
        for d in self.plan.disruptions:
            wait = self.out.intents_started + d.at - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)  # the planned moment
            record = DisruptionRecord(d.kind.value, d.at)
            self.out.disruptions.append(record)
            try:
                await self._disrupt(d, record)
            except Exception as e:  # noqa: BLE001 - recorded; the invariants fail on it
                record.detail["error"] = f"{type(e).__name__}: {e}"
                self.out.errors.append(f"disruption {d.kind.value}: {type(e).__name__}: {e}")
                log.exception("disruption %s failed", d.kind.value)

    async def _in_flight(self) -> list[dict[str, Any]]:
        return [o for o in await self.admin.operations(time.monotonic()) if o["origin"] == "api" and o["end"] is None]

    async def _disrupt(self, d: Disruption, record: DisruptionRecord) -> None:
        kind = d.kind
        if kind in (DisruptionKind.KILL, DisruptionKind.KILL_IN_FLIGHT):
            if kind is DisruptionKind.KILL_IN_FLIGHT:
                deadline = time.monotonic() + 60
                while len(await self._in_flight()) < 3 and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)  # watching for operations in flight, with a deadline
            in_flight = await self._in_flight()
            (op,) = self.operators
            record.at = time.monotonic()
            record.detail = {"process": op.proc.name, "operations_in_flight": len(in_flight),
                             "in_flight": sorted(o["vm"] for o in in_flight)[:10]}
            self._mark_rss(f"before {kind.value}", op)
            self._kill(op, signal.SIGKILL)
            new = await self._start_operator(standalone=True)
            record.down = (record.at, time.monotonic())
            record.detail["restarted_as"] = new.proc.name
        elif kind is DisruptionKind.TOKEN_EXPIRY:
            record.at = time.monotonic()
            status, body = await self.admin.send("POST", "tokens/expire", {"token": self.token})
            assert status == 200, body
            seq = self._log_seq
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # until the operator has met the expiry
                if any(r.status == 401 for r in self.out.requests[seq:] if r.time >= record.at):
                    break
                await asyncio.sleep(0.2)
            status, body = await self.admin.send("POST", "tokens", {"like": self.token})
            assert status == 201, body
            self.token = body["token"]
            self.out.secrets.append(self.token)
            self._write_token(self.token)
            rotated = time.monotonic()
            record.down = (record.at, rotated)
            record.detail = {"401_seen_after": round(rotated - record.at, 1)}
        elif kind is DisruptionKind.TERM_TO_HA:
            (op,) = self.operators
            record.at = time.monotonic()
            self._mark_rss("before sigterm", op)
            took = self._kill(op, signal.SIGTERM)
            record.detail = {"process": op.proc.name, "exit_code": op.proc.popen.returncode, "stopped_in": round(took, 1)}
            first = await self._start_operator(standalone=False, priority=HA_PRIORITIES[0])
            await self._start_operator(standalone=False, priority=HA_PRIORITIES[1])
            active = await self._wait_active(first, 120, "the higher-priority replica to be active")
            record.down = (record.at, active)
            record.detail["active_after"] = round(active - record.at, 1)
        elif kind is DisruptionKind.HA_KILL_ACTIVE:
            actives = [op for op in self.operators if await self._active(op)]
            if len(actives) != 1:
                raise RuntimeError(f"{len(actives)} active replicas before the kill")
            (active,) = actives
            (other,) = [op for op in self.operators if op is not active]
            priority = HA_PRIORITIES[0] if "prio100" in active.proc.name else HA_PRIORITIES[1]
            in_flight = await self._in_flight()
            record.at = time.monotonic()
            record.detail = {"process": active.proc.name, "operations_in_flight": len(in_flight)}
            self._kill(active, signal.SIGKILL)
            took_over = await self._wait_active(other, 180, f"{other.proc.name} to take over")
            record.detail["standby_active_after"] = round(took_over - record.at, 1)
            record.down = (record.at, took_over)
            again = await self._start_operator(standalone=False, priority=priority)
            back = await self._wait_active(again, 120, f"{again.proc.name} to take over again")
            record.detail["restarted_as"] = again.proc.name
            record.detail["restarted_active_after"] = round(back - took_over, 1)

    # ---- faults --------------------------------------------------------------------------

    async def _faults(self, *, on: bool) -> None:
        if on:
            if self.config.azure_fault_p > 0:
                status, body = await self.admin.send("POST", "faults", {"spec": azure_fault_spec(self.config.seed, self.config.azure_fault_p)})
                assert status == 201, body
            if self.config.kube_faults:
                for spec in kube_fault_specs(self.config.seed):
                    status, body = await self.api.request("POST", "/_emu/faults", spec, content_type="text/plain")
                    assert status == 201, body
            return
        status, listing = await self.admin.send("GET", "faults")
        self.out.azure_faults = list(listing or [])
        await self.admin.send("DELETE", "faults")
        status, listing = await self.api.request("GET", "/_emu/faults")
        self.out.kube_faults = listing
        await self.api.request("DELETE", "/_emu/faults")

    # ---- recording -----------------------------------------------------------------------

    def _seen(self, kind: str, key: Key, obj: dict[str, Any], at: float) -> None:
        """Every version of every GpuVm on the watch: the status changes (for histories) and the
        moment each one was gone."""
        if kind == "DELETED":
            self.gone_at[key] = at
            self.out.versions.setdefault(key, []).append((at, "gone"))
            return
        status = obj.get("status") or {}
        ready = ready_of(obj) or {}
        line = (f"gen {obj.get('metadata', {}).get('generation')} observed {status.get('observedGeneration')} "
                f"{status.get('powerState')} {ready.get('status')} {ready.get('reason')}")
        seen = self.out.versions.setdefault(key, [])
        if not seen or seen[-1][1] != line:
            seen.append((at, line))

    async def _follow_simulator(self) -> None:
        while True:
            try:
                await self._poll_simulator()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - the next poll catches up (the log keeps 400,000 requests)
                log.warning("following the simulator: %s", e)
            await asyncio.sleep(1.0)  # the log follower's pace

    async def _poll_simulator(self) -> None:
        """One read of what the simulator recorded since the last read (the follower and the
        settle both read: one at a time, or a stretch of the log would be read twice)."""
        async with self._poll_lock:
            await self._read_simulator()

    async def _read_simulator(self) -> None:
        rows, total = await self.admin.log_since(self._log_seq)
        self.out.requests_missed += (total - self._log_seq) - len(rows)
        self.out.requests.extend(rows)
        self._log_seq = total
        began = time.monotonic()
        for op in await self.admin.operations(self._ops_since - 5.0):
            self.out.operations[op["id"]] = op
        self._ops_since = began

    async def _sample_rss(self) -> None:
        """RSS of each operator every 2 s, and a progress line a minute for the one who waits."""
        shown = time.monotonic()
        while True:
            if time.monotonic() - shown >= 60:
                shown = time.monotonic()
                print(f"soak: {self.applied:,} of {len(self.plan.intents):,} intents applied, "
                      f"{len(self.out.disruptions)} of {len(self.plan.disruptions)} disruptions, "
                      f"{len(self.out.requests):,} Azure requests", flush=True)
            pending, self._pending_marks = self._pending_marks, []
            for label in pending:
                self._mark_rss(label)
            for op in list(self.operators):
                try:
                    self.out.rss.append((time.monotonic(), self.applied, op.proc.name, op.proc.usage().rss_mib))
                except OSError:
                    pass  # it just ended
            await asyncio.sleep(2.0)  # the sampler's pace

    def _mark_rss(self, label: str, op: Operator | None = None) -> None:
        """The RSS of ``op`` (default: the operator serving) under ``label``; while none serves
        (a restart), the first one serving next is read (by the sampler)."""
        op = op or self._main_operator()
        try:
            if op is None:
                raise OSError("no operator serving")
            self.out.rss_marks[label] = (op.proc.name, op.proc.usage().rss_mib)
        except OSError:
            self._pending_marks.append(label)

    def _main_operator(self) -> Operator | None:
        return self.operators[0] if len(self.operators) == 1 else next(
            (op for op in self.operators if "prio100" in op.proc.name), self.operators[0] if self.operators else None)

    # ---- the end -------------------------------------------------------------------------

    def _quiet_after(self, t: float) -> float:
        """When time-based demand stops changing after the last intent: leases lapsing, claims
        expiring, unlabelled owners read, schedule edges — then each GpuVm's idle grace."""
        quiet = t
        for key in self.world.gpuvms:
            spec = self.world.spec_at(key, float("inf"))
            if spec is None:
                continue
            later = [p for p in self.world.change_points(key) if t < p <= t + 900]
            if later:
                quiet = max(quiet, max(later) + model.parse_duration(spec.get("idleTimeout", "0s")))
            elif spec.get("desiredState") == "Auto":
                quiet = max(quiet, t + model.parse_duration(spec.get("idleTimeout", "0s")))
        return quiet

    async def _settle(self) -> None:
        """Wait until every GpuVm shows what its last intent wants, all at once, within the
        bound (``settle`` seconds after time-based demand went quiet)."""
        from soak.invariants import convergence

        out = self.out
        deadline = out.quiet + self.config.settle
        while True:
            now = time.monotonic()
            if now >= out.quiet:
                await self._poll_simulator()
                self.world.set_operations(model_operations(out.operations))
                sim_vms = await self._sim_vms()
                claims = await self._claims()
                misses = convergence(self.world, dict(self.watcher.objects), claims, sim_vms, now)
                if not misses:
                    out.converged_at = now
                    out.convergence_misses = []
                    return
                out.convergence_misses = misses
            if now > deadline:
                return
            await asyncio.sleep(1.0)  # re-checking a condition with a deadline

    async def _sim_vms(self) -> dict[str, dict[str, Any]]:
        status, body = await self.admin.send("GET", "vms")
        return {v["name"]: v for v in body or []}

    async def _claims(self) -> dict[Key, dict[str, Any]]:
        status, body = await self.api.request("GET", f"/apis/{GROUP}/{VERSION}/{CLAIMS}")
        return {(c["metadata"]["namespace"], c["metadata"]["name"]): c for c in body.get("items", [])}

    async def _collect_final(self) -> None:
        out = self.out
        for task in getattr(self, "_tasks", []):
            task.cancel()
        await asyncio.gather(*getattr(self, "_tasks", []), return_exceptions=True)
        try:
            await self._poll_simulator()
            self.world.set_operations(model_operations(out.operations))
            status, out.overlaps = await self.admin.send("GET", "overlaps")
            out.sim_vms = await self._sim_vms()
            out.gpuvms = dict(self.watcher.objects)
            out.claims = await self._claims()
            status, events = await self.api.request("GET", "/api/v1/events")
            out.events = list(events.get("items", []))
        except Exception as e:  # noqa: BLE001 - the processes may be gone after a failure
            out.errors.append(f"final collection: {type(e).__name__}: {e}")


def model_operations(ops: Mapping[str, Mapping[str, Any]]) -> list[model.Operation]:
    return [model.Operation(o["id"], o["vm"], o["action"], o["origin"], o["start"], o["end"], o["status"]) for o in ops.values()]


def _rfc3339(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")
