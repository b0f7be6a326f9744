"""`gpuvm-operator check` end to end: the installed command against the Kubernetes emulator and
the Azure simulator, every check on its passing and its failing side.

Identities in Azure are the simulator's restricted tokens (their grants are what the permissions
API answers); the VMs' tags are their consent. Identities in Kubernetes are the emulator's bearer
tokens with RBAC rules (``emulator_identity``), which the check asks about with
SelfSubjectAccessReviews.
"""

from __future__ import annotations

import copy
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from controller.check import PERMISSIONS_READ
from controller.gpuvm import GROUP, PLURAL, VERSION
from controller.kube import OPERATOR_ACCESS, Connection, list_objects, list_page
from testbed.azuresim import Permission, SimulatorConfig
from testbed.kubeemu import KubeEmulator
from testbed.sandbox import Sandbox, write_kubeconfig
from testbed.serving import ServerThread
from tests.integration.cli import (
    COMMAND,
    Ran,
    base_env,
    emulator_identity,
    free_port,
    gpuvm_operator,
    on_a_terminal,
    silent_server,
    with_flag,
)
from tests.integration.conftest import FAST, NS, RG, SUB

ROOT = Path(__file__).parents[2]
ROLE = json.loads((ROOT / "deploy" / "azure" / "gpuvm-power-operator.role.json").read_text())["Actions"]
SCOPE = f"/subscriptions/{SUB}/resourceGroups/{RG}"
PERMISSIONS = f"azure.permissions.{SCOPE}"
CONTRIBUTOR = Permission(
    ("*",),
    (
        "Microsoft.Authorization/*/Delete",
        "Microsoft.Authorization/*/Write",
        "Microsoft.Authorization/elevateAccess/Action",
    ),
)
TOKENS = {
    "role": ROLE,
    "no-start": [a for a in ROLE if a != "Microsoft.Compute/virtualMachines/start/action"],
    "no-tags": [a for a in ROLE if "/tags/" not in a],
    "no-permissions-read": [a for a in ROLE if a != PERMISSIONS_READ],
    "contributor": [CONTRIBUTOR],
    "not-deallocate": [Permission(tuple(ROLE), ("Microsoft.Compute/virtualMachines/deallocate/action",))],
}
CRD = yaml.safe_load((ROOT / "deploy" / "crds" / "gpuvms.gpuvm.dev.yaml").read_text())
CLAIM_CRD = yaml.safe_load((ROOT / "deploy" / "crds" / "gpuvmclaims.gpuvm.dev.yaml").read_text())


@pytest.fixture
def azure_config() -> SimulatorConfig:
    return SimulatorConfig(timings=FAST, retry_after=0.05, restricted_tokens=TOKENS)


def flags(world: Sandbox, token: str = "role") -> list[str]:
    """`run`'s flags for the world, signing in to Azure with one of TOKENS, talking to the emulator
    through a kubeconfig (KUBECONFIG, as users do) rather than --kube-server."""
    out = world.operator_flags(subscription=SUB)
    return with_flag(with_flag(out, "--simulator-token-file", str(world.token_file(token))), "--kube-server", None)


@pytest.fixture
def env(world: Sandbox, tmp_path: Path) -> dict[str, str]:
    assert world.cluster is not None
    return base_env(tmp_path, KUBECONFIG=str(write_kubeconfig(tmp_path / "kubeconfig", world.cluster.url)))


def check(*args: str, env: dict[str, str]) -> Ran:
    return gpuvm_operator("check", "--output", "json", *args, env=env)


def statuses(ran: Ran) -> dict[str, str]:
    return {name: c["status"] for name, c in ran.checks.items()}


def gpuvms(world: Sandbox, *names: str, ns: str = NS) -> None:
    assert world.cluster is not None
    for vm in names:
        world.cluster.create(f"gpuvm-{vm}", {"vm": {"resourceGroup": RG, "name": vm}}, ns=ns)


# ------------------------------------------------------------------ healthy


def test_lists_read_every_page_and_the_preflight_only_the_first(world: Sandbox) -> None:
    """More GpuVms than one page holds: check reads them all, run's pre-flight one page (it only asks
    whether listing is allowed), and neither trips over the client's name for ``continue``."""
    assert world.cluster is not None
    gpuvms(world, *(f"vm-{i}" for i in range(1, 6)))
    conn = Connection(world.cluster.api_client, "test", world.cluster.url)
    names = sorted(o["metadata"]["name"] for o in list_objects(conn, GROUP, VERSION, PLURAL, namespace=NS, timeout=10, limit=2))
    assert names == [f"gpuvm-vm-{i}" for i in range(1, 6)]
    first = list_page(conn, GROUP, VERSION, PLURAL, namespace=NS, timeout=10, limit=1)
    assert len(first["items"]) == 1 and first["metadata"]["continue"]


def test_a_healthy_world_passes(world: Sandbox, env: dict[str, str]) -> None:
    gpuvms(world, "vm-1", "vm-2")
    ran = check(*flags(world), env=env)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert statuses(ran) == {
        "kubernetes.config": "ok",
        "kubernetes.api": "ok",
        "kubernetes.version": "ok",
        "kubernetes.crd.gpuvmclaims.gpuvm.dev": "ok",
        "kubernetes.crd.gpuvms.gpuvm.dev": "ok",
        "kubernetes.rbac": "ok",
        "azure.credential": "ok",
        "azure.arm": "ok",
        PERMISSIONS: "ok",
        "consent.opt-in": "ok",
        "consent.namespaces": "ok",
    }
    checks = ran.checks
    assert checks["kubernetes.config"]["detail"] == f"kubeconfig {env['KUBECONFIG']} (context kubeemu)"
    assert checks[PERMISSIONS]["detail"] == (
        "the 5 actions the operator uses, nothing more (the tags actions are used only with --cluster-name)"
    )
    assert checks["consent.opt-in"]["detail"] == "2 of 2 VMs the GpuVms name carry gpuvm-managed=true"
    assert json.loads(ran.stdout)["ok"] is True and ran.stderr == ""


def test_text_output_is_one_line_per_check(world: Sandbox, env: dict[str, str]) -> None:
    gpuvms(world, "vm-1")
    ran = gpuvm_operator("check", *flags(world), env=env)
    assert ran.returncode == 0
    lines = ran.stdout.splitlines()
    assert lines[0] == "Kubernetes" and "Azure" in lines and "Consent" in lines
    body = [line for line in lines[:-1] if line.startswith("  ")]
    assert len(body) == 11 and all(line.startswith(("  OK   ", "  SKIP ")) for line in body), lines
    assert "  OK   CRD gpuvms.gpuvm.dev: installed, established, this build's (v1alpha1)" in lines
    assert lines[-1] == f"All {sum(line.startswith('  OK') for line in body)} checks passed."


def test_a_terminal_gets_marks(world: Sandbox, env: dict[str, str]) -> None:
    gpuvms(world, "vm-1", "vm-untagged")
    ran = on_a_terminal("check", *flags(world), env=env)
    assert ran.returncode == 1
    assert "  ✔ API server: " in ran.stdout
    assert "  ✖ opt-in tag: 1 of 2 VMs the GpuVms name carry gpuvm-managed=true; not: vm-untagged" in ran.stdout
    assert "      fix: az tag update --operation Merge --tags gpuvm-managed=true --resource-id " in ran.stdout
    assert "OK " not in ran.stdout and "FAIL" not in ran.stdout


# ------------------------------------------------------------------ Kubernetes


def test_missing_kubeconfig(world: Sandbox, env: dict[str, str]) -> None:
    ran = check(*flags(world), env={**env, "KUBECONFIG": "/nonexistent/kubeconfig"})
    assert ran.returncode == 1
    config = ran.checks["kubernetes.config"]
    assert config["status"] == "fail"
    assert config["detail"] == "kubeconfig /nonexistent/kubeconfig does not exist (from --kubeconfig or KUBECONFIG)"
    assert "KUBECONFIG" in config["fix"]
    assert [n for n in ran.checks if n.startswith("kubernetes.")] == ["kubernetes.config"]
    assert ran.status("azure.credential") == "ok" and ran.status("azure.arm") == "ok"


def test_no_configuration_at_all(world: Sandbox, tmp_path: Path) -> None:
    ran = check(*flags(world), env=base_env(tmp_path))
    detail = ran.checks["kubernetes.config"]["detail"]
    assert ran.returncode == 1
    assert detail.startswith("no Kubernetes configuration: not in a cluster (")
    assert detail.endswith(
        f"and {tmp_path}/.kube/config does not exist; set KUBECONFIG or --kubeconfig to a kubeconfig file"
    )


def test_kubeconfig_that_is_not_yaml(world: Sandbox, env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "broken"
    bad.write_text("clusters: [\n")
    ran = check(*flags(world), env={**env, "KUBECONFIG": str(bad)})
    assert ran.checks["kubernetes.config"]["detail"].startswith(f"kubeconfig {bad} is not valid YAML: ")


def test_api_server_refusing_connections(world: Sandbox, env: dict[str, str]) -> None:
    ran = check(*flags(world), "--kube-server", f"http://127.0.0.1:{free_port()}", env=env)
    api = ran.checks["kubernetes.api"]
    assert ran.returncode == 1 and api["status"] == "fail"
    assert api["detail"].endswith(": connection refused") and "kubectl cluster-info" in api["fix"]


def test_a_silent_api_server_is_given_up_on_in_bounded_time(world: Sandbox, env: dict[str, str]) -> None:
    with silent_server() as url:
        started = time.monotonic()
        ran = check(*flags(world), "--kube-server", url, "--connect-timeout", "1", env=env)
        elapsed = time.monotonic() - started
    assert ran.checks["kubernetes.api"]["detail"] == f"cannot reach the API server at {url}: no answer in time"
    assert elapsed < 30, f"check took {elapsed:.1f} s with --connect-timeout 1"


@pytest.fixture
def bare_cluster(tmp_path: Path) -> Iterator[str]:
    """Another emulator, for CRDs other than the shipped one: its kubeconfig."""
    thread = ServerThread(KubeEmulator([]), name="bare-emulator").start()
    try:
        yield str(write_kubeconfig(tmp_path / "bare-kubeconfig", thread.server.url))
    finally:
        thread.stop()


def install_crd(kubeconfig: str, crd: dict) -> None:
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=kubeconfig)
    try:
        client.ApiextensionsV1Api(api).create_custom_resource_definition(crd)
    finally:
        api.close()


def test_crd_not_installed(world: Sandbox, env: dict[str, str], bare_cluster: str) -> None:
    ran = check(*flags(world), env={**env, "KUBECONFIG": bare_cluster})
    crd = ran.checks["kubernetes.crd.gpuvms.gpuvm.dev"]
    assert ran.returncode == 1
    assert (crd["status"], crd["detail"]) == ("fail", "not installed")
    assert crd["fix"].startswith("kubectl apply -f deploy/crds/")
    assert not any(n.startswith("consent.") for n in ran.checks), "no GpuVms to judge without their CRD"


def test_crd_of_another_version(world: Sandbox, env: dict[str, str], bare_cluster: str) -> None:
    other = copy.deepcopy(CRD)
    other["spec"]["versions"][0]["name"] = "v1beta1"
    install_crd(bare_cluster, other)
    ran = check(*flags(world), env={**env, "KUBECONFIG": bare_cluster})
    crd = ran.checks["kubernetes.crd.gpuvms.gpuvm.dev"]
    assert ran.returncode == 1
    assert (crd["status"], crd["detail"]) == ("fail", "serves v1beta1, not v1alpha1 which this build uses")


def test_an_older_crd_schema_warns(world: Sandbox, env: dict[str, str], bare_cluster: str) -> None:
    older = copy.deepcopy(CRD)
    del older["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"][
        "convergedGeneration"
    ]
    install_crd(bare_cluster, older)
    install_crd(bare_cluster, CLAIM_CRD)
    ran = check(*flags(world), env={**env, "KUBECONFIG": bare_cluster})
    crd = ran.checks["kubernetes.crd.gpuvms.gpuvm.dev"]
    assert crd["status"] == "warn"
    assert "fields of this build it lacks: status.convergedGeneration" in crd["detail"]
    assert ran.returncode == 0, "a warning is not a failure"


def test_rbac_names_each_request_the_identity_may_not_make(world: Sandbox, env: dict[str, str], tmp_path: Path) -> None:
    assert world.cluster is not None
    token = emulator_identity(
        world.cluster,
        user="no-watch",
        rules=[
            {"apiGroups": ["gpuvm.dev"], "resources": ["gpuvms"], "verbs": ["list", "patch"]},
            {"apiGroups": ["gpuvm.dev"], "resources": ["gpuvms/status"], "verbs": ["patch"]},
            {"apiGroups": ["gpuvm.dev"], "resources": ["gpuvmclaims"], "verbs": ["list", "watch"]},
            {"apiGroups": ["gpuvm.dev"], "resources": ["gpuvmclaims/status"], "verbs": ["patch"]},
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
        ],
    )
    kubeconfig = write_kubeconfig(tmp_path / "no-watch", world.cluster.url, token=token)
    ran = check(*flags(world), env={**env, "KUBECONFIG": str(kubeconfig)})
    rbac = ran.checks["kubernetes.rbac"]
    assert ran.returncode == 1 and rbac["status"] == "fail"
    assert (
        rbac["detail"]
        == "no-watch may not watch gpuvm.dev/gpuvms in all namespaces, create core/events in all namespaces"
    )
    assert "deploy/manifests" in rbac["fix"]


def test_rbac_of_the_shipped_cluster_role_passes(world: Sandbox, env: dict[str, str], tmp_path: Path) -> None:
    assert world.cluster is not None
    rules = yaml.safe_load((ROOT / "deploy" / "manifests" / "base" / "rbac.yaml").read_text().split("---")[0])["rules"]
    token = emulator_identity(
        world.cluster, user="system:serviceaccount:gpuvm-system:gpuvm-operator", rules=rules
    )
    kubeconfig = write_kubeconfig(tmp_path / "operator", world.cluster.url, token=token)
    gpuvms(world, "vm-1")
    ran = check(*flags(world), env={**env, "KUBECONFIG": str(kubeconfig)})
    assert ran.status("kubernetes.rbac") == "ok"
    assert ran.checks["kubernetes.rbac"]["detail"] == (
        f"system:serviceaccount:gpuvm-system:gpuvm-operator may make all {len(OPERATOR_ACCESS)} "
        "kinds of request the operator makes, in all namespaces"
    )
    # The operator's identity may not read CRDs: discovery says served, the schema is not compared.
    assert ran.checks["kubernetes.crd.gpuvms.gpuvm.dev"]["detail"].startswith(
        "served (v1alpha1); its schema was not compared"
    )


def test_peering_needs_its_crd_and_object(world: Sandbox, env: dict[str, str]) -> None:
    ran = check(*flags(world), "--peering", "gpuvm-operator", env=env)
    peering = ran.checks["kubernetes.peering"]
    assert ran.returncode == 1 and peering["detail"] == "clusterkopfpeerings.kopf.dev is not installed"
    assert peering["fix"] == "kubectl apply -f deploy/crds/kopf-peering/"
    assert world.cluster is not None
    for path in (ROOT / "deploy" / "crds" / "kopf-peering").glob("*.yaml"):
        for crd in yaml.safe_load_all(path.read_text()):
            install_crd(env["KUBECONFIG"], crd)
    ran = check(*flags(world), "--peering", "gpuvm-operator", env=env)
    assert ran.checks["kubernetes.peering"]["detail"].startswith("no ClusterKopfPeering gpuvm-operator (cluster)")
    world.cluster.custom.create_cluster_custom_object(
        "kopf.dev",
        "v1",
        "clusterkopfpeerings",
        {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": "gpuvm-operator"}},
    )
    ran = check(*flags(world), "--peering", "gpuvm-operator", env=env)
    assert ran.status("kubernetes.peering") == "ok" and ran.returncode == 0


# ------------------------------------------------------------------ Azure


def test_credential_message_is_the_one_run_logs(world: Sandbox, env: dict[str, str]) -> None:
    """No service principal in the environment: `check` says what `run` logs, word for word."""
    config = with_flag(with_flag(flags(world), "--credential", "environment"), "--simulator-token-file", None)
    ran = check(*config, env=env)
    credential = ran.checks["azure.credential"]
    assert ran.returncode == 1 and credential["status"] == "fail"
    assert credential["detail"].startswith("no service principal in the environment (AZURE_TENANT_ID missing, ")
    assert "azure.arm" not in ran.checks, "nothing more to ask Azure without a token"
    prefix = "Azure credential 'environment' is not usable: "
    logged = run_until_logged(config, env, prefix)
    assert logged == credential["detail"]


def run_until_logged(config: list[str], env: dict[str, str], prefix: str, timeout: float = 60) -> str:
    """Start `gpuvm-operator run`, return the rest of the first log line containing ``prefix``."""
    process = subprocess.Popen(
        [COMMAND, "run", *config], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + timeout
    try:
        assert process.stderr is not None
        for line in process.stderr:
            if prefix in line:
                return line.split(prefix, 1)[1].rstrip("\n")
            assert time.monotonic() < deadline, f"`run` logged no {prefix!r} within {timeout} s"
        raise AssertionError(f"`run` ended (exit {process.wait()}) without logging {prefix!r}")
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_a_token_arm_rejects(world: Sandbox, env: dict[str, str], tmp_path: Path) -> None:
    wrong = tmp_path / "wrong-token"
    wrong.write_text("not-a-token-of-this-simulator")
    ran = check(*with_flag(flags(world), "--simulator-token-file", str(wrong)), env=env)
    assert ran.status("azure.credential") == "ok"  # a fixed token is always "acquired"
    arm = ran.checks["azure.arm"]
    assert ran.returncode == 1 and arm["status"] == "fail"
    assert arm["detail"].startswith(
        "Azure Resource Manager rejected the operator's token (InvalidAuthenticationToken)."
    )


def test_arm_unreachable(world: Sandbox, env: dict[str, str]) -> None:
    ran = check(*with_flag(flags(world), "--arm-endpoint", f"https://127.0.0.1:{free_port()}"), env=env)
    arm = ran.checks["azure.arm"]
    assert ran.returncode == 1 and arm["status"] == "fail"
    assert arm["detail"].startswith("could not reach Azure Resource Manager at https://127.0.0.1:")
    assert "--ca-bundle" in arm["fix"]
    assert not any(n.startswith(("azure.permissions", "consent.")) for n in ran.checks)


@pytest.mark.parametrize(
    ("token", "extra", "status", "detail"),
    [
        ("no-start", [], "fail", "missing Microsoft.Compute/virtualMachines/start/action"),
        ("not-deallocate", [], "fail", "missing Microsoft.Compute/virtualMachines/deallocate/action"),
        (
            "no-tags",
            ["--cluster-name", "aks-a"],
            "fail",
            "missing Microsoft.Resources/tags/read, Microsoft.Resources/tags/write",
        ),
        (
            "no-tags",
            [],
            "ok",
            "the 5 actions the operator uses, nothing more (the tags actions are used only with --cluster-name)",
        ),
        ("role", ["--cluster-name", "aks-a"], "ok", "the 7 actions the operator uses, nothing more"),
    ],
)
def test_permissions_at_the_gpuvms_resource_group(
    world: Sandbox, env: dict[str, str], token: str, extra: list[str], status: str, detail: str
) -> None:
    gpuvms(world, "vm-1")
    ran = check(*flags(world, token), *extra, env=env)
    result = ran.checks[PERMISSIONS]
    assert (result["status"], result["detail"]) == (status, detail)
    assert ran.returncode == (1 if status == "fail" else 0)
    if status == "fail":
        assert (
            "assign the custom role 'GpuVm Power Operator' (deploy/azure/gpuvm-power-operator.role.json"
            in result["fix"]
        )


def test_contributor_passes_with_a_warning(world: Sandbox, env: dict[str, str]) -> None:
    gpuvms(world, "vm-1")
    ran = check(*flags(world, "contributor"), env=env)
    result = ran.checks[PERMISSIONS]
    assert ran.returncode == 0 and result["status"] == "warn"
    assert result["detail"] == (
        "every action the operator uses is granted, and more than it needs: * ('*' is Contributor "
        "or Owner: it may create, change and delete anything here)"
    )
    assert "remove the broader role assignment" in result["fix"]


def test_without_permissions_read_check_says_what_it_needs(world: Sandbox, env: dict[str, str]) -> None:
    gpuvms(world, "vm-1")
    ran = check(*flags(world, "no-permissions-read"), env=env)
    result = ran.checks[PERMISSIONS]
    assert ran.returncode == 1 and result["status"] == "fail"
    assert result["detail"].startswith(
        "the identity may not read its own permissions here: that needs "
        "Microsoft.Authorization/permissions/read, so this check cannot tell"
    )
    assert ran.status("consent.opt-in") == "ok", "reading the VMs needs no more than the operator has"


def test_resource_groups_given_explicitly(world: Sandbox, env: dict[str, str]) -> None:
    ran = check(*flags(world), "--resource-group", RG, "--resource-group", f"{SUB}/rg-nowhere", env=env)
    assert ran.status(PERMISSIONS) == "ok"
    nowhere = ran.checks[f"azure.permissions./subscriptions/{SUB}/resourceGroups/rg-nowhere"]
    assert (nowhere["status"], nowhere["detail"]) == (
        "fail",
        "the resource group does not exist or the identity cannot see it",
    )
    usage = gpuvm_operator(
        "check", *with_flag(flags(world), "--subscription-id", None), "--resource-group", RG, env=env
    )
    assert usage.returncode == 2 and usage.stdout == ""
    assert (
        usage.stderr
        == f"gpuvm-operator check: error: --resource-group {RG}: give SUBSCRIPTION/{RG}, or set --subscription-id\n"
    )


# ------------------------------------------------------------------ consent


def test_consent_names_every_vm_that_does_not_give_it(world: Sandbox, env: dict[str, str]) -> None:
    gpuvms(world, "vm-1", "vm-untagged", "vm-research", "vm-ghost")
    assert world.azure is not None
    world.azure.call(lambda: world.azure.sim.set_tags("vm-2", {"gpuvm-managed": "true", "gpuvm-owner": "aks-b"}))
    gpuvms(world, "vm-2")
    ran = check(*flags(world), "--cluster-name", "aks-a", env=env)
    checks = ran.checks
    assert ran.returncode == 1
    assert checks["consent.vms"]["detail"] == f"not found: vm-ghost in {RG} ({NS}/gpuvm-vm-ghost)"
    assert checks["consent.opt-in"]["detail"] == "3 of 4 VMs the GpuVms name carry gpuvm-managed=true; not: vm-untagged"
    assert checks["consent.namespaces"]["detail"] == (
        f"a VM's gpuvm-namespaces tag excludes the namespace of {NS}/gpuvm-vm-research -> vm-research "
        "(gpuvm-namespaces=research)"
    )
    assert checks["consent.claims"]["detail"] == "claimed by other clusters: vm-2 (gpuvm-owner=aks-b)"
    assert all(
        checks[n]["status"] == "fail" and checks[n]["fix"]
        for n in ("consent.vms", "consent.opt-in", "consent.namespaces", "consent.claims")
    )


def test_consent_only_in_the_served_namespaces_and_selector(world: Sandbox, env: dict[str, str]) -> None:
    assert world.cluster is not None
    world.cluster.namespace("research")
    gpuvms(world, "vm-1")
    gpuvms(world, "vm-untagged", ns="research")
    world.cluster.create("labelled", {"vm": {"resourceGroup": RG, "name": "vm-untagged"}}, labels={"shard": "b"})
    ran = check(*flags(world), "--namespace", NS, "--selector", "shard=a", env=env)
    assert ran.returncode == 0 and ran.status("consent.gpuvms") == "skip"
    ran = check(*flags(world), "--namespace", NS, env=env)
    assert ran.checks["consent.opt-in"]["detail"] == "1 of 2 VMs the GpuVms name carry gpuvm-managed=true; not: vm-untagged"
    ran = check(*flags(world), "--namespace", "res*", env=env)  # a kopf pattern: the namespaces matching it
    assert ran.checks["consent.opt-in"]["detail"] == "0 of 1 VMs the GpuVms name carry gpuvm-managed=true; not: vm-untagged"


# ------------------------------------------------------------------ --pre


def test_pre_checks_what_exists_before_an_install(world: Sandbox, env: dict[str, str], bare_cluster: str) -> None:
    ran = check(*flags(world), "--pre", "--resource-group", RG, env={**env, "KUBECONFIG": bare_cluster})
    assert ran.returncode == 0, ran.stdout
    assert statuses(ran) == {
        "kubernetes.config": "ok",
        "kubernetes.api": "ok",
        "kubernetes.version": "ok",
        "azure.credential": "ok",
        "azure.arm": "ok",
        PERMISSIONS: "ok",
    }
    assert json.loads(ran.stdout)["pre"] is True
    without_group = check(*flags(world), "--pre", env={**env, "KUBECONFIG": bare_cluster})
    assert without_group.checks["azure.permissions"]["detail"] == (
        "no resource group to check: no GpuVm names one; give --resource-group RESOURCE_GROUP"
    )
    assert without_group.returncode == 0


def test_a_stray_secret_beside_workload_identity_is_named(world: Sandbox, env: dict[str, str], tmp_path: Path) -> None:
    """`--credential auto` with both: DefaultAzureCredential takes the secret; check says so, as run logs it."""
    token_file = tmp_path / "federated-token"
    token_file.write_text("a.b.c")
    stray = {"AZURE_TENANT_ID": "00000000-0000-0000-0000-000000000001", "AZURE_CLIENT_ID": "client",
             "AZURE_CLIENT_SECRET": "stray", "AZURE_FEDERATED_TOKEN_FILE": str(token_file),
             "AZURE_AUTHORITY_HOST": f"https://127.0.0.1:{free_port()}"}  # sign-in fails at once, on loopback
    config = with_flag(with_flag(flags(world), "--credential", "auto"), "--simulator-token-file", None)
    ran = check(*config, "--connect-timeout", "20", env={**env, **stray})
    credential = ran.checks["azure.credential"]
    assert ran.returncode == 1 and credential["status"] == "fail"
    assert credential["fix"].startswith("both a service principal (AZURE_CLIENT_SECRET or AZURE_CLIENT_CERTIFICATE_PATH) "
                                        "and workload identity (AZURE_FEDERATED_TOKEN_FILE) are configured")
