"""A Kubernetes emulator with the project's CRDs, and a stand-in for the operator's claim handling.

The operator does not process GpuVmClaims yet (the engine wiring comes later), so the claim
wrapper is tested against ``ClaimsStandIn``: a thread that does the operator's part the way the
contract says, through the pure core the operator will use (``controller.demand``: liveness,
claim_state) and the status renderer (``controller.status.render_claim_status``) — it writes each
claim's status, and plays a GpuVm in Auto starting while live claims want it. Tests with the real
operator replace it once the engine handles claims.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from controller.demand import CLAIM_PLURAL, claim_state, gpuvm_view, liveness, parse_claim
from controller.gpuvm import GROUP, PLURAL, VERSION
from controller.status import render_claim_status
from testbed.kubeemu import KubeEmulator
from testbed.sandbox import ADMIN_TOKEN, Cluster, api_client, crd_files
from testbed.serving import ServerThread

ROOT = Path(__file__).parents[2]
NS = "ml"
STAND_IN_AGENT = "claims-stand-in/1.0"
# A GpuVm with this label never gets its VM running: the stand-in reports this reason instead.
STUCK_LABEL = "test.gpuvm.dev/stuck"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class ClaimsStandIn:
    """Polls claims and GpuVms of one namespace and writes what the operator would.

    A GpuVm in Auto with a Bound claim goes Deallocated -> Starting (``boot_polls`` polls) ->
    Running/Ready; with none it goes back to Deallocated at once (idle 0s). ``pod_phases`` plays
    the owner Pods' phases (uid -> phase), as the operator would read them. ``token``: its bearer token
    where the emulator enforces RBAC (the operator's part, played as an administrator).
    """

    def __init__(self, url: str, *, token: str | None = None, namespace: str = NS, boot_polls: int = 5,
                 interval: float = 0.02) -> None:
        self._api_client = api_client(url, token=token, user_agent=STAND_IN_AGENT)
        self.api = client.CustomObjectsApi(self._api_client)
        self.namespace = namespace
        self.boot_polls = boot_polls
        self.interval = interval
        self.pod_phases: dict[str, str] = {}
        self.paused = threading.Event()  # set: the "operator" is down, nothing is written
        self._stop = threading.Event()
        self._booting: dict[str, int] = {}
        self._thread = threading.Thread(target=self._loop, name="claims-stand-in", daemon=True)
        self.errors: list[BaseException] = []

    def start(self) -> ClaimsStandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._api_client.close()
        if self.errors:
            raise self.errors[0]

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            if self.paused.is_set():
                continue
            try:
                self.step()
            except client.ApiException as e:
                if e.status not in (404, 409):  # raced with a deletion or a concurrent write: next poll
                    self.errors.append(e)
            except Exception as e:  # noqa: BLE001 - surfaced by stop()
                self.errors.append(e)
                return

    def step(self) -> None:
        now = utcnow()
        ns = self.namespace
        vms = {o["metadata"]["name"]: o for o in self.api.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]}
        claims = self.api.list_namespaced_custom_object(GROUP, VERSION, ns, CLAIM_PLURAL)["items"]
        wanted: set[str] = set()
        for body in claims:
            parsed = parse_claim(body)
            if not hasattr(parsed, "gpu_vm"):
                continue
            live = liveness(parsed, now=now, pod_phases=self.pod_phases)
            vm = vms.get(parsed.gpu_vm)
            state = claim_state(parsed, live, gpuvm_view(vm) if vm is not None else None)
            if live.live and vm is not None:
                wanted.add(parsed.gpu_vm)
            old = body.get("status") or {}
            new = render_claim_status(state, generation=parsed.generation, previous=old, now=now)
            patch = merge_patch(old, new)
            if patch:
                self.api.patch_namespaced_custom_object_status(GROUP, VERSION, ns, CLAIM_PLURAL, parsed.name, {"status": patch})
        for name, vm in vms.items():
            if (vm.get("spec") or {}).get("desiredState") == "Auto":
                self._drive(name, vm, name in wanted)

    def _drive(self, name: str, vm: Mapping[str, Any], wanted: bool) -> None:
        generation = vm["metadata"].get("generation", 1)
        stuck = (vm["metadata"].get("labels") or {}).get(STUCK_LABEL)
        if not wanted:
            self._booting.pop(name, None)
            status = _vm_status("Deallocated", True, "Reconciled", "VM is deallocated as desired by Auto: nothing wants it", generation)
        elif stuck:
            status = _vm_status("Deallocated", False, stuck, "start failed 1 time (last: ZonalAllocationFailed); "
                                "next retry at 2026-11-25T12:01:00Z", generation)
        else:
            polls = self._booting.get(name, 0) + 1
            self._booting[name] = polls
            if polls < self.boot_polls:
                status = _vm_status("Starting", False, "Starting", "start requested; waiting for PowerState/running", generation)
            else:
                status = _vm_status("Running", True, "Reconciled", "VM is running as desired by Auto: wanted by claims", generation)
        old = vm.get("status") or {}
        new = {**old, **status}
        new["conditions"] = [{**status["conditions"][0], "lastTransitionTime": _same_or_now(old, status)}]
        patch = merge_patch(old, new)
        if patch:
            self.api.patch_namespaced_custom_object_status(GROUP, VERSION, self.namespace, PLURAL, name, {"status": patch})


def _vm_status(power: str, ready: bool, reason: str, message: str, generation: int) -> dict[str, Any]:
    return {
        "observedGeneration": generation,
        "powerState": power,
        "conditions": [{"type": "Ready", "status": "True" if ready else "False", "reason": reason, "message": message,
                        "observedGeneration": generation}],
    }


def _same_or_now(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    before = next((c for c in old.get("conditions") or [] if c.get("type") == "Ready"), None)
    if before and before.get("status") == new["conditions"][0]["status"]:
        return before["lastTransitionTime"]
    return utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")


class Kube:
    """The emulator (as ``testbed.sandbox.Cluster``, whose client is the administrator when RBAC is on),
    a namespace, and a kubeconfig file for the job (its token is not checked while RBAC is off)."""

    def __init__(self, thread: ServerThread, workdir: Path) -> None:
        self.thread = thread
        self.workdir = workdir
        self.cluster = Cluster(thread, namespace=NS, token=ADMIN_TOKEN)
        self.emulator = self.cluster.emulator
        self.api = self.cluster.custom
        self.cluster.namespace(NS)
        self.kubeconfig = self.kubeconfig_with("not-checked")

    def kubeconfig_with(self, token: str) -> Path:
        """A kubeconfig for the emulator and the namespace, for the user with this bearer token."""
        path = self.workdir / f"kubeconfig-{abs(hash(token)):x}"
        path.write_text(yaml.safe_dump(kubeconfig(self.emulator.url, namespace=NS, token=token)))
        return path

    def gpuvm(self, name: str, *, desired: str = "Auto", labels: Mapping[str, str] | None = None) -> None:
        self.cluster.create(name, {"vm": {"resourceGroup": "rg-gpu", "name": f"vm-{name}"}, "desiredState": desired},
                            labels=labels)

    def pod(self, name: str) -> str:
        """A Pod for a job (never scheduled: no kubelet here) to own a claim; its uid. The owner must
        exist: the garbage collector deletes a claim whose owner reference names no live object."""
        body = {"metadata": {"name": name}, "spec": {"containers": [{"name": "job", "image": "busybox:1.36"}]}}
        return str(self.cluster.core.create_namespaced_pod(NS, body).metadata.uid)

    def claims(self) -> list[dict[str, Any]]:
        return self.api.list_namespaced_custom_object(GROUP, VERSION, NS, CLAIM_PLURAL)["items"]

    def accesses(self) -> frozenset[Any]:
        return self.thread.run_sync(self.emulator.access_log)


def kubeconfig(server: str, *, namespace: str, token: str = "not-checked") -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Config", "current-context": "emu",
        "clusters": [{"name": "emu", "cluster": {"server": server}}],
        "users": [{"name": "job", "user": {"token": token}}],
        "contexts": [{"name": "emu", "context": {"cluster": "emu", "user": "job", "namespace": namespace}}],
    }


@contextmanager
def kube_with_crds(workdir: Path) -> Iterator[Kube]:
    thread = ServerThread(KubeEmulator(crd_files(ROOT / "deploy" / "crds"), bookmark_interval=1.0),
                          name="kube-emulator").start()
    kube = Kube(thread, workdir)
    try:
        yield kube
    finally:
        kube.cluster.close()
        thread.stop()


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
