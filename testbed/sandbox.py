"""A whole world on loopback: Kubernetes emulator, Azure simulator, and the real operator.

The demo, the integration tests and the benchmarks all need the same three things running in
one process, each on an event loop of its own, and the same handful of ways to look at them.
They live here once.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from kubernetes import client

from testbed.azuresim import AzureComputeSimulator, SimulatorConfig, SimVm
from controller.config import OperatorConfig, parse_config
from controller.gpuvm import GROUP, KIND, PLURAL, VERSION
from testbed.kubeemu import Identity, KubeEmulator, Rule
from controller.operator import run_operator, startup_failure
from testbed import kubectl_apply
from testbed.serving import ServerThread

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, *, interval: float = 0.01, what: str = "") -> T:
    """Poll ``predicate`` until it returns something truthy; raise AssertionError after ``timeout``.

    How tests, the demo and benchmarks wait for asynchronous effects: on a condition, with a
    deadline, never a fixed sleep. Deadlines are generous for shared 2-core CI machines.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(interval)


async def until(predicate: Callable[[], Any], timeout: float = 10.0, *, interval: float = 0.01, what: str = "") -> None:
    """``wait_for`` for code on an event loop: lets the loop run (``interval`` at a time) until
    ``predicate`` holds; raises AssertionError after ``timeout`` seconds of loop time."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        await asyncio.sleep(interval)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict[str, float]:
    """The operator's Prometheus metrics on ``port`` as {'name{labels}': value} (samples only)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def probe(url: str) -> dict[str, Any]:
    """What an operator's liveness endpoint (``--liveness``) answers: kopf's probe results."""
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read().decode())


def crd_files(directory: Path) -> list[Path]:
    """The YAML files of ``directory`` that hold CustomResourceDefinitions (not kustomizations)."""
    return [
        path
        for path in sorted(directory.glob("*.yaml"))
        if any((doc or {}).get("kind") == "CustomResourceDefinition" for doc in yaml.safe_load_all(path.read_text()))
    ]


def write_kubeconfig(path: Path, server: str, *, token: str | None = None, context: str = "kubeemu") -> Path:
    """A kubeconfig for ``server`` (the emulator's plain-http URL), as kubectl and the official
    client read it; ``token`` is sent as the bearer token when given."""
    user: dict[str, Any] = {"token": token} if token else {}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": context, "cluster": {"server": server}}],
        "users": [{"name": context, "user": user}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": context}}],
        "current-context": context,
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


# The bearer token of the sandbox's own client: ignored while the emulator's RBAC is off, and
# kept working (as ``admin_identity``) by whoever turns RBAC on in a running sandbox.
ADMIN_TOKEN = "sandbox-admin-token"


def admin_identity(token: str = ADMIN_TOKEN) -> Identity:
    """kubeadm's ``kubernetes-admin`` (cluster-admin): every verb on every resource and path.

    For test drivers (a test's own client, an operator stand-in) once the emulator enforces RBAC:
    on a real cluster they would be an administrator too, not the identity under test.
    """
    everything = [Rule(verbs=["*"], api_groups=["*"], resources=["*"]), Rule(verbs=["*"], non_resource_urls=["*"])]
    return Identity("kubernetes-admin", token=token, rules=everything)


def api_client(url: str, *, token: str | None = None, user_agent: str | None = None) -> client.ApiClient:
    """An official-client ApiClient for the emulator at ``url``, sending ``token`` as its bearer token
    (the Python client sends it over plain HTTP; client-go, hence kubectl, does not)."""
    configuration = client.Configuration()
    configuration.host = url
    if token is not None:
        configuration.api_key = {"authorization": token}
        configuration.api_key_prefix = {"authorization": "Bearer"}
    api = client.ApiClient(configuration)
    if user_agent is not None:
        api.user_agent = user_agent
    return api


class Cluster:
    """The Kubernetes side, through the official client, as kubectl users see it.

    Calls default to one namespace, as ``kubectl -n`` would. ``server`` is either the emulator's
    ServerThread (then ``token`` is the client's bearer token, for an emulator with identities:
    ``admin_identity`` is the one test drivers use) or an ApiClient for any API server, a real one
    included (testbed/controlplane.py): the same reads, waits and writes then run against it, and
    ``emulator``/``thread`` say that there is no emulator to reach into. Either way the Cluster
    owns its client: ``close()`` closes it.
    """

    def __init__(self, server: ServerThread | client.ApiClient, *, namespace: str = "default",
                 token: str | None = None) -> None:
        self.default_namespace = namespace
        self.token = token
        self._thread: ServerThread | None = None
        if isinstance(server, client.ApiClient):
            self.api_client = server
        else:
            self._thread = server
            self.api_client = api_client(self.emulator.url, token=token)
        self.custom = client.CustomObjectsApi(self.api_client)
        self.core = client.CoreV1Api(self.api_client)

    @property
    def thread(self) -> ServerThread:
        """The emulator's thread (to run code on its loop); only when the cluster is the emulator."""
        if self._thread is None:
            raise RuntimeError("this Cluster wraps an ApiClient of a real API server: there is no emulator thread")
        return self._thread

    @property
    def emulator(self) -> KubeEmulator:
        return self.thread.server  # type: ignore[return-value]

    @property
    def url(self) -> str:
        return str(self.api_client.configuration.host)

    def namespace(self, name: str) -> None:
        self.core.create_namespace({"metadata": {"name": name}})

    def create(self, name: str, spec: Mapping[str, Any], ns: str | None = None, *, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": name}
        if labels:
            metadata["labels"] = dict(labels)
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "metadata": metadata, "spec": dict(spec)}
        return self.custom.create_namespaced_custom_object(GROUP, VERSION, ns or self.default_namespace, PLURAL, body)

    def apply(self, name: str, spec: Mapping[str, Any], ns: str | None = None, *,
              labels: Mapping[str, str] | None = None, annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
        """A GpuVm as ``kubectl apply`` (client-side) creates or updates it: last-applied annotation,
        field manager ``kubectl-client-side-apply``, a three-way merge patch when it exists."""
        manifest = kubectl_apply.manifest(api_version=f"{GROUP}/{VERSION}", kind=KIND, name=name, spec=spec, labels=labels,
                                          annotations=annotations)
        namespace = ns or self.default_namespace
        modified = kubectl_apply.modified_configuration(manifest, namespace=namespace)
        current = self.get(name, namespace)
        if current is None:
            return self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, modified,
                                                               field_manager=kubectl_apply.FIELD_MANAGER)
        patch = kubectl_apply.three_way_patch(modified=modified, current=current)
        if not patch:
            return current
        return self.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, patch,
                                                          field_manager=kubectl_apply.FIELD_MANAGER,
                                                          _content_type="application/merge-patch+json")

    def get(self, name: str, ns: str | None = None) -> dict[str, Any] | None:
        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, ns or self.default_namespace, PLURAL, name)
        except client.ApiException as e:
            if e.status == 404:
                return None
            raise

    def objects(self, ns: str | None = None) -> dict[str, dict[str, Any]]:
        """GpuVms of one namespace by name."""
        items = self.custom.list_namespaced_custom_object(GROUP, VERSION, ns or self.default_namespace, PLURAL)["items"]
        return {o["metadata"]["name"]: o for o in items}

    def all_objects(self) -> list[dict[str, Any]]:
        return self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]

    def patch_spec(self, name: str, spec: Mapping[str, Any], ns: str | None = None) -> dict[str, Any]:
        body = {"spec": dict(spec)}
        return self.custom.patch_namespaced_custom_object(GROUP, VERSION, ns or self.default_namespace, PLURAL, name, body)

    def patch_status(self, name: str, status: Mapping[str, Any], ns: str | None = None) -> dict[str, Any]:
        """Merge-patch the status subresource, as someone other than the operator would."""
        body = {"status": dict(status)}
        return self.custom.patch_namespaced_custom_object_status(GROUP, VERSION, ns or self.default_namespace, PLURAL, name, body)

    def claim(self, name: str, gpuvm: str, ns: str | None = None, *, owner: Mapping[str, Any] | None = None,
              **spec: Any) -> dict[str, Any]:
        """Create a GpuVmClaim for ``gpuvm`` (optionally owned by the Pod ``owner``, as the claim
        wrapper does in a Pod)."""
        metadata: dict[str, Any] = {"name": name}
        if owner is not None:
            meta = owner["metadata"]
            metadata["ownerReferences"] = [{"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": meta["uid"]}]
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "GpuVmClaim", "metadata": metadata, "spec": {"gpuVm": gpuvm, **spec}}
        return self.custom.create_namespaced_custom_object(GROUP, VERSION, ns or self.default_namespace, "gpuvmclaims", body)

    def get_claim(self, name: str, ns: str | None = None) -> dict[str, Any] | None:
        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, ns or self.default_namespace, "gpuvmclaims", name)
        except client.ApiException as e:
            if e.status == 404:
                return None
            raise

    def delete_claim(self, name: str, ns: str | None = None) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, ns or self.default_namespace, "gpuvmclaims", name)

    def claim_ready(self, name: str, ns: str | None = None) -> tuple[str, str, str, str] | None:
        """(phase, Ready status, reason, message) of a claim, once the operator wrote them."""
        obj = self.get_claim(name, ns) or {}
        ready = ready_of(obj)
        return ((obj.get("status") or {}).get("phase", ""), *ready) if ready else None

    def pod(self, name: str, ns: str | None = None, *, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
        """A Pod (no kubelet runs it: its phase is whatever ``pod_phase`` sets)."""
        body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": dict(labels or {})},
                "spec": {"containers": [{"name": "job", "image": "job:1"}]}}
        return self.api_client.sanitize_for_serialization(self.core.create_namespaced_pod(ns or self.default_namespace, body))

    def pod_phase(self, name: str, phase: str, ns: str | None = None) -> None:
        self.core.patch_namespaced_pod_status(name, ns or self.default_namespace, {"status": {"phase": phase}})

    def delete(self, name: str, ns: str | None = None) -> dict[str, Any]:
        """DELETE; returns the apiserver's answer: the object with deletionTimestamp while
        finalizers hold it, a Status once it is gone."""
        return self.custom.delete_namespaced_custom_object(GROUP, VERSION, ns or self.default_namespace, PLURAL, name)

    def status(self, name: str, ns: str | None = None) -> dict[str, Any]:
        return (self.get(name, ns) or {}).get("status") or {}

    def ready(self, name: str, ns: str | None = None) -> tuple[str, str, str] | None:
        """(status, reason, message) of the Ready condition, if written."""
        return ready_of(self.get(name, ns) or {})

    def reason(self, name: str, ns: str | None = None) -> str | None:
        ready = self.ready(name, ns)
        return ready[1] if ready else None

    def wait_object(
        self, name: str, predicate: Callable[[dict[str, Any]], Any], *, ns: str | None = None,
        timeout: float = 30.0, what: str = "",
    ) -> dict[str, Any]:
        """Wait until ``predicate`` holds for the object; returns that very read of it.

        Assertions about a state that may pass (a failure before its retry) belong in the
        predicate: a second read could already show the next state.
        """
        last: list[dict[str, Any] | None] = [None]

        def check() -> dict[str, Any] | None:
            obj = last[0] = self.get(name, ns)
            return obj if obj is not None and predicate(obj) else None

        try:
            return wait_for(check, timeout, what=what or f"{name} to satisfy {predicate}")
        except AssertionError as e:
            raise AssertionError(f"{e}; last seen status: {(last[0] or {}).get('status')}") from None

    def wait_reason(self, name: str, reason: str, *, ns: str | None = None, timeout: float = 30.0) -> dict[str, Any]:
        """Wait until the Ready condition has ``reason``; returns the status of that same read."""
        obj = self.wait_object(name, lambda o: reason_of(o) == reason, ns=ns, timeout=timeout,
                               what=f"{name} Ready reason {reason}")
        return obj.get("status") or {}

    def events(self, name: str, ns: str | None = None) -> list[tuple[str, str, str]]:
        items = self.core.list_namespaced_event(ns or self.default_namespace).items
        return [(e.type, e.reason, e.message) for e in items if e.involved_object.name == name]

    def wait_events(self, name: str, *reasons: str, ns: str | None = None, timeout: float = 30.0) -> list[tuple[str, str, str]]:
        """Wait until Events with all these reasons were posted about ``name``; returns its Events.

        Events are posted asynchronously (kopf queues them), after the status they go with:
        never read them once right after a status change. kopf posts in order, so once a later
        Event is there, an earlier one that is missing was never emitted.
        """
        wanted = set(reasons)
        return wait_for(lambda: (events := self.events(name, ns)) and wanted <= {r for _, r, _ in events} and events,
                        timeout, what=f"Events {sorted(wanted)} about {name}")

    def history(self, name: str, ns: str | None = None) -> "History":
        """Start recording every version of one object (see :class:`History`)."""
        return History(self.api_client.configuration, namespace=ns or self.default_namespace, name=name).start()

    def close(self) -> None:
        self.api_client.close()


class History:
    """Every version of one GpuVm, as a watch delivers them, recorded in a thread.

    For assertions about states that pass: a capacity failure shows for the back-off only, a
    poll of the object under load can miss it, a watch started before it cannot.
    """

    def __init__(self, server: str | client.Configuration, *, namespace: str, name: str) -> None:
        """``server``: the emulator's URL, or the Configuration of the client to watch with (its
        credentials and CA included: a real API server wants them)."""
        if isinstance(server, str):
            configuration = client.Configuration()
            configuration.host = server
        else:
            configuration = server
        self._api = client.ApiClient(configuration)
        self._custom = client.CustomObjectsApi(self._api)
        self.namespace, self.name = namespace, name
        self._lock = threading.Lock()
        self._versions: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"history-{name}", daemon=True)

    def start(self) -> "History":
        self._thread.start()
        if not self._ready.wait(30):
            raise AssertionError(f"the watch of {self.name} did not start within 30 s")
        return self

    def _run(self) -> None:
        from kubernetes import watch

        selector = f"metadata.name={self.name}"
        try:
            # The list is the starting point; every later version comes through the watch.
            listed = self._custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, field_selector=selector)
            resource_version = listed["metadata"]["resourceVersion"]
            with self._lock:
                self._versions.extend(listed["items"])
            self._ready.set()
            while not self._stop.is_set():
                for event in watch.Watch().stream(
                    self._custom.list_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL,
                    field_selector=selector, resource_version=resource_version, timeout_seconds=2,
                ):
                    if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                        with self._lock:
                            self._versions.append(event["object"])
                        resource_version = event["object"]["metadata"]["resourceVersion"]
        except BaseException as e:  # noqa: BLE001 - reported by wait()
            self.error = e
            self._ready.set()

    @property
    def versions(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._versions)

    def wait(self, predicate: Callable[[dict[str, Any]], Any], timeout: float = 30.0, *, what: str = "") -> dict[str, Any]:
        """The first recorded version satisfying ``predicate`` (waiting for it if need be)."""

        def found() -> dict[str, Any] | None:
            if self.error is not None:
                raise AssertionError(f"the watch of {self.name} failed: {self.error!r}")
            return next((v for v in self.versions if predicate(v)), None)

        return wait_for(found, timeout, what=what or f"a version of {self.name} satisfying {predicate}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._api.close()

    def __enter__(self) -> "History":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def ready_of(obj: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """(status, reason, message) of the Ready condition; None when there is none (or no
    readable status at all: tests also look at objects carrying garbage)."""
    status = obj.get("status")
    conditions = status.get("conditions") if isinstance(status, Mapping) else None
    for condition in conditions if isinstance(conditions, list) else []:
        if isinstance(condition, Mapping) and condition.get("type") == "Ready":
            return condition.get("status", ""), condition.get("reason", ""), condition.get("message", "")
    return None


def reason_of(obj: Mapping[str, Any]) -> str | None:
    """The Ready condition's reason, if written."""
    ready = ready_of(obj)
    return ready[1] if ready else None


def settled(obj: Mapping[str, Any]) -> bool:
    """Ready for the object's current generation: what "converged" means everywhere."""
    ready = ready_of(obj)
    status = obj.get("status")
    return bool(ready and ready[0] == "True" and isinstance(status, Mapping)
                and status.get("observedGeneration") == obj["metadata"].get("generation"))


class Azure:
    """The simulator, read and driven on its own loop."""

    def __init__(self, thread: ServerThread) -> None:
        self.thread = thread
        self.sim: AzureComputeSimulator = thread.server  # type: ignore[assignment]

    def call(self, fn: Callable[[], T]) -> T:
        return self.thread.run_sync(fn)

    def power(self, name: str) -> str:
        return self.call(lambda: self.sim.vm_state(name).power_state.value)

    def snapshot(self, name: str) -> Any:
        return self.call(lambda: self.sim.vm_state(name))

    def busy(self) -> bool:
        """Any operation in flight on any VM."""
        return self.call(lambda: any(s.operation for s in self.sim.vm_states()))

    def count(self, operation: str, status: int | None = None) -> int:
        return self.call(lambda: self.sim.count(operation, status))

    def counters(self) -> dict[tuple[str, int], int]:
        return self.call(self.sim.counters)

    def overlaps(self) -> list[Any]:
        return self.call(self.sim.overlaps)

    def requests(self) -> list[Any]:
        return self.call(self.sim.request_log)

    def unobserved(self) -> list[Any]:
        """Per operation the operator asked for: how long it went without a read that could tell
        its state (the starvation guard; testbed.azuresim.recording.unobserved)."""
        return self.call(self.sim.unobserved)

    def fault(self, spec: str) -> int:
        return self.call(lambda: self.sim.add_fault(spec))

    def evict(self, name: str) -> str:
        """The platform evicts a Spot VM (deallocates it), as Azure does when it needs the capacity."""
        return self.call(lambda: self.sim.evict(name))

    def out_of_band(self, name: str, action: str) -> str:
        return self.call(lambda: self.sim.out_of_band(name, action))

    def power_requests(self, name: str, action: str) -> list[Any]:
        """Power POSTs for one VM from the request log, whatever the answer."""
        wanted = f"VirtualMachines.{action[0].upper()}{action[1:]}"
        return [r for r in self.requests() if str(r.operation) == wanted and (r.vm or "").lower() == name.lower()]


def token_file(workdir: Path, token: str) -> Path:
    """A file in ``workdir`` holding a simulator bearer token, mode 0600 (what --simulator-token-file reads)."""
    path = workdir / f"azure-token-{abs(hash(token)):x}"
    path.write_text(token)
    path.chmod(0o600)
    return path


def simulator_flags(azure: Azure, token_file: Path, *, subscription: str) -> list[str]:
    """``gpuvm-operator run`` flags for the Azure side: the simulator's endpoint and CA, and the
    bearer token in ``token_file`` (whichever Kubernetes the operator is pointed at)."""
    return [
        "--arm-endpoint", azure.sim.endpoint,
        "--ca-bundle", azure.sim.ca_file,
        "--credential", "simulator-token",
        "--simulator-token-file", str(token_file),
        "--subscription-id", subscription,
    ]


class OperatorRunner:
    """``gpuvm-operator run`` in a thread, stoppable like a pod receiving SIGTERM."""

    def __init__(self, config: OperatorConfig) -> None:
        self.config = config
        self.ready = threading.Event()
        self.stop_flag = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="operator", daemon=True)

    def _run(self) -> None:
        try:
            run_operator(self.config, ready_flag=self.ready, stop_flag=self.stop_flag)
        except BaseException as e:  # noqa: BLE001 - reported by whoever waits on it
            self.error = e

    def start(self, *, timeout: float = 30.0) -> "OperatorRunner":
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.ready.wait(0.05):
            if self.error is not None or not self.thread.is_alive():
                reason = startup_failure(self.error) if self.error else None
                raise RuntimeError(reason or f"the operator stopped during start-up: {self.error!r}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the operator was not ready within {timeout} s")
        return self

    def stop(self, *, timeout: float = 30.0) -> None:
        self.stop_flag.set()
        self.thread.join(timeout=timeout)
        if self.thread.is_alive():
            raise TimeoutError(f"the operator did not stop within {timeout} s")
        if self.error is not None:
            raise RuntimeError(f"the operator failed: {self.error!r}")

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()


def stop_operators(runners: Iterable[OperatorRunner]) -> list[BaseException]:
    """Stop every operator still running, each even if another failed; returns the failures
    (for the caller to raise once what else it runs is stopped too)."""
    errors: list[BaseException] = []
    for runner in runners:
        if runner.alive:
            try:
                runner.stop()
            except BaseException as e:  # noqa: BLE001 - keep stopping the rest
                errors.append(e)
    return errors


class Sandbox:
    """Starts the emulator and the simulator; starts operators on demand; stops all of it.

    The emulator starts without RBAC; ``cluster`` sends ``ADMIN_TOKEN`` so that a test may turn RBAC
    on (with ``admin_identity`` among the identities) without locking out its own client.
    """

    def __init__(
        self,
        *,
        crds: Iterable[Path | Mapping[str, Any]],
        simulator: SimulatorConfig,
        vms: Sequence[SimVm],
        workdir: Path,
        namespace: str = "default",
    ) -> None:
        self.workdir = workdir
        self.namespace = namespace
        self._kube = ServerThread(KubeEmulator(list(crds)), name="kube-emulator")
        self._azure = ServerThread(AzureComputeSimulator(simulator, vms), name="azure-sim")
        self.operators: list[OperatorRunner] = []
        self.cluster: Cluster | None = None
        self.azure: Azure | None = None

    def start(self) -> "Sandbox":
        self._kube.start()
        self._azure.start()
        self.cluster = Cluster(self._kube, namespace=self.namespace, token=ADMIN_TOKEN)
        if self.namespace not in ("default", "kube-system"):
            self.cluster.namespace(self.namespace)
        self.azure = Azure(self._azure)
        return self

    def token_file(self, token: str | None = None) -> Path:
        """A file with a simulator bearer token (the full-access one by default), mode 0600."""
        assert self.azure is not None
        return token_file(self.workdir, token if token is not None else self.azure.sim.token)

    def operator_flags(self, *, subscription: str, timing: Sequence[str] = ()) -> list[str]:
        """``gpuvm-operator run`` flags pointing at this sandbox, plus cadence flags."""
        assert self.cluster is not None and self.azure is not None
        return ["--kube-server", self.cluster.url, *simulator_flags(self.azure, self.token_file(), subscription=subscription),
                *timing]

    def start_operator(self, flags: Sequence[str], env: Mapping[str, str] | None = None) -> OperatorRunner:
        runner = OperatorRunner(parse_config(list(flags), env or {})).start()
        self.operators.append(runner)
        return runner

    def stop(self) -> None:
        errors = stop_operators(self.operators)
        if self.cluster is not None:
            self.cluster.close()
        self._azure.stop()
        self._kube.stop()
        if errors:
            raise errors[0]

    def __enter__(self) -> "Sandbox":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
