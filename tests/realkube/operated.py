"""The real operator on the real control plane, as its ServiceAccount, against the Azure simulator.

What the emulator cannot prove: that the RBAC objects of deploy/manifests, applied to a real
kube-apiserver, let the operator do its work (a ServiceAccount token minted by the TokenRequest
API, checked by the real authorizer), that the real garbage collector and kopf peering behave as
the emulator's readings of them do. The Azure side stays the simulator (real HTTPS on loopback).

One ``World`` per test module (an Azure simulator, the installed manifests, the operator's
token kubeconfig); operators are started by the module's fixtures and live for the module, so
a module pays the operator's start-up once. Each test works in a namespace of its own and, on
the way out, deletes its GpuVms while the operator still runs, so no finalizer outlives it and
the next module's operators inherit nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from controller.config import parse_config
from controller.demand import CLAIM_PLURAL
from controller.gpuvm import GROUP, PLURAL, VERSION
from testbed.azuresim import AzureComputeSimulator, SimulatorConfig, SimVm
from testbed.controlplane import ControlPlane
from testbed.kubeemu.access import Access
from testbed.realcluster import apply, audited, forbidden, service_account_token
from testbed.sandbox import Azure, Cluster, OperatorRunner, simulator_flags, stop_operators, token_file, wait_for
from testbed.serving import ServerThread
from tests.deploy.conftest import OPERATOR_NAMESPACE, render
from tests.integration.conftest import FAST, FAST_FLAGS, MANAGED, RG, SUB

OPERATOR_SA = "gpuvm-operator"
OPERATOR_USER = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SA}"
OPERATOR_AGENTS = ("kopf/", "gpuvm-operator/")  # kopf's client and the operator's status writer
# What an installation applies but a control plane without nodes cannot use (or need): the
# Deployment (no kubelet runs it), its ConfigMap (the tests pass flags), the PodDisruptionBudget.
NOT_APPLIED = frozenset({"Deployment", "ConfigMap", "PodDisruptionBudget"})


def audit_log(control_plane: ControlPlane) -> Path:
    """The session control plane's audit log (tests/realkube/conftest.py turns it on)."""
    return control_plane.workdir / "audit" / "audit.log"


def vms(*names: str) -> list[SimVm]:
    """Deallocated VMs in the simulator, tagged as the operator's to manage."""
    return [SimVm(subscription_id=SUB, resource_group=RG, name=name, tags=MANAGED) for name in names]


def installed(admin_api: client.ApiClient, install: str = "default") -> list[dict[str, Any]]:
    """Apply one install of deploy/manifests (rendered by kustomize) to the real server, but the
    Deployment and what only it uses; returns the rendered objects."""
    objects = render(install)
    apply(admin_api, [o for o in objects if o["kind"] not in NOT_APPLIED])
    return objects


class World:
    """The Azure simulator, the operator's identity on the real server, and operators to start.

    ``operator_kubeconfig`` authenticates as the ServiceAccount gpuvm-operator with a token the
    API server minted: the operator is allowed exactly what the applied ClusterRoles grant it.
    """

    def __init__(self, control_plane: ControlPlane, admin_api: client.ApiClient, workdir: Path, *,
                 vms: Sequence[SimVm], simulator: SimulatorConfig | None = None) -> None:
        self.control_plane = control_plane
        self.admin_api = admin_api
        self.workdir = workdir
        self._azure = ServerThread(AzureComputeSimulator(simulator or SimulatorConfig(timings=FAST, retry_after=0.05),
                                                         list(vms)), name="azure-sim")
        self.azure: Azure | None = None
        self.operators: list[OperatorRunner] = []
        self.operator_kubeconfig = workdir / "operator.kubeconfig"

    def start(self) -> "World":
        self._azure.start()
        self.azure = Azure(self._azure)
        token = service_account_token(self.admin_api, OPERATOR_NAMESPACE, OPERATOR_SA)
        self.control_plane.token_kubeconfig(self.operator_kubeconfig, token, namespace=OPERATOR_NAMESPACE)
        return self

    def operator_flags(self, *, azure_token: str | None = None, timing: Sequence[str] = FAST_FLAGS) -> list[str]:
        """``gpuvm-operator run`` as in a cluster, but with a kubeconfig (the ServiceAccount's token)
        instead of the in-cluster configuration, and the simulator as Azure (its full-access
        token unless ``azure_token``)."""
        assert self.azure is not None
        azure = token_file(self.workdir, azure_token if azure_token is not None else self.azure.sim.token)
        return ["--kubeconfig", str(self.operator_kubeconfig), *simulator_flags(self.azure, azure, subscription=SUB), *timing]

    def start_operator(self, extra: Sequence[str] = (), *, azure_token: str | None = None) -> OperatorRunner:
        flags = [*self.operator_flags(azure_token=azure_token), *extra]
        runner = OperatorRunner(parse_config(flags, {})).start(timeout=60)
        self.operators.append(runner)
        return runner

    def operator_requests(self) -> list[tuple[Access, int]]:
        """(request, HTTP status) of every request the operator's ServiceAccount made so far,
        from the API server's audit log, the operator's own (kopf and its status writer) only."""
        return [(a, code) for a, code in audited(audit_log(self.control_plane), OPERATOR_USER)
                if a.user_agent.startswith(OPERATOR_AGENTS)]

    def refused_by_rbac(self) -> list[Access]:
        """The operator's requests that RBAC refused (an admission refusal, such as an Event
        posted into another test's namespace while it is deleted, is not RBAC's)."""
        return [a for a in forbidden(audit_log(self.control_plane), OPERATOR_USER) if a.user_agent.startswith(OPERATOR_AGENTS)]

    def stop(self) -> None:
        errors = stop_operators(self.operators)
        self._azure.stop()
        if errors:
            raise errors[0]


@pytest.fixture(scope="module")
def world_factory(control_plane: ControlPlane, admin_api: client.ApiClient,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., World]]:
    """Makes the module's World (once), stops it at the module's end."""
    made: list[World] = []

    def make(*, vms: Sequence[SimVm], simulator: SimulatorConfig | None = None) -> World:
        world = World(control_plane, admin_api, tmp_path_factory.mktemp("world"), vms=vms, simulator=simulator).start()
        made.append(world)
        return world

    yield make
    for world in made:
        world.stop()


def clean_up(cluster: Cluster, namespace: str, *, timeout: float = 60.0) -> None:
    """Delete the namespace's GpuVms and claims and wait until they are gone: the running operator
    releases its finalizers now, not some later operator of another module."""
    for plural in (CLAIM_PLURAL, PLURAL):
        for obj in cluster.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)["items"]:
            try:
                cluster.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, plural, obj["metadata"]["name"])
            except client.ApiException as e:
                if e.status != 404:
                    raise
    wait_for(lambda: not cluster.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"],
             timeout, interval=0.1, what=f"the GpuVms of {namespace} released by the operator")


@pytest.fixture
def cluster(control_plane: ControlPlane, namespace: str) -> Iterator[Cluster]:
    """testbed.sandbox.Cluster on the real server, as cluster-admin, defaulting to the test's
    namespace; its GpuVms are deleted (and released by the operator) before the namespace goes."""
    kube = Cluster(config.new_client_from_config(str(control_plane.kubeconfig)), namespace=namespace)
    try:
        yield kube
        clean_up(kube, namespace)
    finally:
        kube.close()


def as_user(kubeconfig: Path) -> client.ApiClient:
    """An official-client ApiClient from a (token) kubeconfig: requests as that identity."""
    return config.new_client_from_config(str(kubeconfig))


def gpuvm(cluster: Cluster, name: str, vm: str, *, desired: str = "Auto", **spec: Any) -> dict[str, Any]:
    """A GpuVm naming ``vm`` by resource group and name (the operator's --subscription-id completes
    it), once the operator has written its status: it knows the GpuVm.

    Why wait: the operator answers a claim whose GpuVm it has not been told of yet with
    GpuVmNotFound, which the wrapper takes as final (exit 66) — also when its watch of GpuVms is
    merely late, as it is on a real server for the first seconds of a new CRD ("storage is
    (re)initializing"). tests/integration/test_claim_order.py shows that bug; the tests here are
    about other things and must not depend on winning that race.
    """
    cluster.create(name, {"vm": {"resourceGroup": RG, "name": vm}, "desiredState": desired, **spec})
    return cluster.wait_object(name, lambda o: (o.get("status") or {}).get("observedGeneration") == o["metadata"]["generation"],
                               timeout=60, what=f"the operator to know GpuVm {name}")


def owner_pod(cluster: Cluster, name: str, *, labels: Mapping[str, str] | None = None, phase: str = "Running") -> dict[str, Any]:
    """A job's Pod. No kubelet runs here: the Pod stays Pending unless its status is patched, as
    a kubelet would patch it once the containers run (``phase``)."""
    wait_for(lambda: any(sa.metadata.name == "default" for sa in cluster.core.list_namespaced_service_account(
        cluster.default_namespace).items), 60, interval=0.1, what="the default ServiceAccount (Pods need it)")
    pod = cluster.pod(name, labels=labels)
    if phase != "Pending":
        cluster.pod_phase(name, phase)
    return pod
