"""`gpuvm-operator check`: the pure judgements (CRDs, Azure permissions, consent) and the output.

The commands themselves, against the emulator and the simulator, are in tests/integration/test_check.py.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.azure_compute import Grant
from controller.check import (
    EXIT_FAILED,
    Named,
    Result,
    Status,
    consent_results,
    crd_result,
    expected_crds,
    granted,
    kubernetes_version,
    listed,
    parse_resource_group,
    permission_result,
    render_json,
    render_text,
    role_actions,
)
from controller.config import ConfigError
from controller.gpuvm import VmRef
from controller.guard import GuardSettings
from controller.reasons import SpecError

ROOT = Path(__file__).parents[2]
CRD = yaml.safe_load((ROOT / "deploy" / "crds" / "gpuvms.gpuvm.dev.yaml").read_text())
SUB = "3f2c1a7e-0d4b-4c52-9a51-6f0e1d2c3b4a"
SCOPE = f"/subscriptions/{SUB}/resourceGroups/rg-gpu"
ROLE = json.loads((ROOT / "deploy" / "azure" / "gpuvm-power-operator.role.json").read_text())["Actions"]
CONTRIBUTOR = Grant(
    ("*",),
    (
        "Microsoft.Authorization/*/Delete",
        "Microsoft.Authorization/*/Write",
        "Microsoft.Authorization/elevateAccess/Action",
    ),
)


def installed(crd: dict[str, Any] | None = None, **conditions: str) -> dict[str, Any]:
    out = copy.deepcopy(crd or CRD)
    states = {"NamesAccepted": "True", "Established": "True", **conditions}
    out["status"] = {"conditions": [{"type": k, "status": v, "message": f"{k} is {v}"} for k, v in states.items()]}
    return out


# ------------------------------------------------------------------ what this build ships


def test_expected_crds_are_the_shipped_ones() -> None:
    shipped = sorted(
        d["metadata"]["name"]
        for p in (ROOT / "deploy" / "crds").glob("*.yaml")
        for d in yaml.safe_load_all(p.read_text())
        if d
    )
    assert sorted(c["metadata"]["name"] for c in expected_crds()) == shipped


def test_role_actions_are_the_role_files() -> None:
    assert role_actions() == tuple(ROLE)
    assert "Microsoft.Authorization/permissions/read" in role_actions()


# ------------------------------------------------------------------ CRDs


def test_crd_the_same_as_this_build() -> None:
    r = crd_result(CRD, installed())
    assert r.status is Status.OK and "v1alpha1" in r.detail


def test_crd_missing_says_how_to_install_it() -> None:
    r = crd_result(CRD, None)
    assert (r.status, r.detail) == (Status.FAIL, "not installed")
    assert r.fix.startswith("kubectl apply -f deploy/crds/")


@pytest.mark.parametrize("condition", ["Established", "NamesAccepted"])
def test_crd_not_established_fails_with_the_servers_message(condition: str) -> None:
    r = crd_result(CRD, installed(**{condition: "False"}))
    assert r.status is Status.FAIL and f"not {condition}: {condition} is False" in r.detail


def test_crd_of_another_version_fails() -> None:
    other = installed()
    other["spec"]["versions"][0]["name"] = "v1beta1"
    r = crd_result(CRD, other)
    assert r.status is Status.FAIL
    assert r.detail == "serves v1beta1, not v1alpha1 which this build uses"


def test_crd_with_another_schema_warns_naming_the_fields() -> None:
    older = installed()
    status = older["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    del status["startFailures"]
    status["legacy"] = {"type": "string"}
    r = crd_result(CRD, older)
    assert r.status is Status.WARN
    assert "fields of this build it lacks: status.startFailures" in r.detail
    assert "fields this build does not know: status.legacy" in r.detail
    assert "prunes" in r.fix


# ------------------------------------------------------------------ Azure permissions


@pytest.mark.parametrize(
    ("action", "grants", "expected"),
    [
        ("Microsoft.Compute/virtualMachines/start/action", [Grant(("microsoft.compute/virtualmachines/*",))], True),
        ("Microsoft.Compute/virtualMachines/start/action", [Grant(("*/read",))], False),
        ("Microsoft.Compute/virtualMachines/read", [Grant(("*/read",))], True),
        ("Microsoft.Authorization/roleAssignments/write", [CONTRIBUTOR], False),
        ("Microsoft.Compute/virtualMachines/start/action", [CONTRIBUTOR], True),
        # notActions take away from their own assignment only
        (
            "Microsoft.Compute/virtualMachines/start/action",
            [Grant(("*",), ("Microsoft.Compute/*",)), Grant(("Microsoft.Compute/virtualMachines/start/action",))],
            True,
        ),
        ("Microsoft.Compute/virtualMachines/start/action", [Grant(("*",), ("Microsoft.Compute/*",))], False),
        ("Microsoft.Compute/virtualMachines/read", [], False),
    ],
)
def test_granted_is_azures_rule(action: str, grants: list[Grant], expected: bool) -> None:
    assert granted(action, grants) is expected


def test_exactly_the_role_passes() -> None:
    r = permission_result(SCOPE, [Grant(tuple(ROLE))], claims=True)
    assert (r.status, r.detail) == (Status.OK, "the 7 actions the operator uses, nothing more")
    assert r.name == f"azure.permissions.{SCOPE}"


def test_tags_actions_are_needed_only_with_claims() -> None:
    without_tags = Grant(tuple(a for a in ROLE if "/tags/" not in a))
    assert permission_result(SCOPE, [without_tags], claims=False).status is Status.OK
    r = permission_result(SCOPE, [without_tags], claims=True)
    assert r.status is Status.FAIL
    assert r.detail == "missing Microsoft.Resources/tags/read, Microsoft.Resources/tags/write"


def test_missing_actions_are_named_with_the_role_to_assign() -> None:
    r = permission_result(SCOPE, [Grant(("Microsoft.Compute/virtualMachines/read",))], claims=False)
    assert r.status is Status.FAIL
    assert r.detail == (
        "missing Microsoft.Compute/virtualMachines/start/action, Microsoft.Compute/virtualMachines/deallocate/"
        "action, Microsoft.Compute/locations/operations/read, Microsoft.Authorization/permissions/read"
    )
    assert (
        "'GpuVm Power Operator'" in r.fix and "deploy/azure/gpuvm-power-operator.role.json" in r.fix and SCOPE in r.fix
    )


def test_not_actions_can_make_an_action_missing() -> None:
    r = permission_result(
        SCOPE, [Grant(tuple(ROLE), ("Microsoft.Compute/virtualMachines/deallocate/action",))], claims=False
    )
    assert r.status is Status.FAIL and r.detail == "missing Microsoft.Compute/virtualMachines/deallocate/action"


def test_contributor_works_but_is_broader_than_needed() -> None:
    r = permission_result(SCOPE, [CONTRIBUTOR], claims=True)
    assert r.status is Status.WARN
    assert "more than it needs: *" in r.detail and "Contributor" in r.detail
    assert "remove the broader role assignment" in r.fix


def test_a_second_role_beside_the_operators_is_broader() -> None:
    r = permission_result(
        SCOPE, [Grant(tuple(ROLE)), Grant(("Microsoft.Compute/virtualMachines/*", "*/read"))], claims=True
    )
    assert r.status is Status.WARN
    assert "more than it needs: */read, Microsoft.Compute/virtualMachines/*" in r.detail
    assert "Contributor" not in r.detail


# ------------------------------------------------------------------ consent


def ref(name: str, group: str = "rg-gpu") -> VmRef:
    return VmRef(SUB, group, name)


def named(ns: str, name: str, vm: VmRef | SpecError) -> Named:
    return Named(ns, name, vm)


MANAGED = {"gpuvm-managed": "true"}


def by_name(results: list[Result]) -> dict[str, Result]:
    return {r.name: r for r in results}


def test_consent_all_given() -> None:
    gpuvms = [named("ml", "a", ref("vm-a")), named("ml", "b", ref("vm-b")), named("ml", "b2", ref("vm-b"))]
    tags = {ref("vm-a").key: MANAGED, ref("vm-b").key: {**MANAGED, "gpuvm-namespaces": "ml,research"}}
    results = by_name(consent_results(gpuvms, tags, GuardSettings()))
    assert set(results) == {"consent.opt-in", "consent.namespaces"}
    assert results["consent.opt-in"].status is Status.OK
    assert results["consent.opt-in"].detail == "2 of 2 VMs the GpuVms name carry gpuvm-managed=true"
    assert results["consent.namespaces"].status is Status.OK


def test_consent_names_what_is_missing() -> None:
    gpuvms = [
        named("ml", "a", ref("vm-a")),
        named("ml", "untagged", ref("vm-untagged")),
        named("ml", "wrong-value", ref("vm-false")),
        named("ml", "elsewhere", ref("vm-research")),
        named("ml", "ghost", ref("vm-ghost")),
        named("ml", "bad", SpecError("spec.vm.subscriptionId", "required")),
        named("ml", "unread", ref("vm-x", "rg-unreadable")),
    ]
    tags = {
        ref("vm-a").key: MANAGED,
        ref("vm-untagged").key: {},
        ref("vm-false").key: {"gpuvm-managed": "false"},
        ref("vm-research").key: {**MANAGED, "gpuvm-namespaces": "research"},
        ref("vm-ghost").key: None,
    }
    results = by_name(consent_results(gpuvms, tags, GuardSettings()))
    assert results["consent.specs"].status is Status.FAIL
    assert results["consent.specs"].detail == "1 name no VM: ml/bad (spec.vm.subscriptionId: required)"
    assert results["consent.vms"].detail == "not found: vm-ghost in rg-gpu (ml/ghost)"
    opt_in = results["consent.opt-in"]
    assert opt_in.status is Status.FAIL
    assert opt_in.detail == "2 of 4 VMs the GpuVms name carry gpuvm-managed=true; not: vm-false, vm-untagged"
    assert "az tag update --operation Merge --tags gpuvm-managed=true" in opt_in.fix
    assert results["consent.namespaces"].status is Status.FAIL
    assert results["consent.namespaces"].detail == (
        "a VM's gpuvm-namespaces tag excludes the namespace of ml/elsewhere -> vm-research (gpuvm-namespaces=research)"
    )


def test_consent_with_claims_names_other_clusters() -> None:
    gpuvms = [named("ml", "a", ref("vm-a")), named("ml", "b", ref("vm-b"))]
    tags = {
        ref("vm-a").key: {**MANAGED, "gpuvm-owner": "aks-west"},
        ref("vm-b").key: {**MANAGED, "gpuvm-owner": "aks-east"},
    }
    results = by_name(consent_results(gpuvms, tags, GuardSettings(cluster_name="aks-east")))
    assert results["consent.claims"].status is Status.FAIL
    assert results["consent.claims"].detail == "claimed by other clusters: vm-a (gpuvm-owner=aks-west)"
    mine = by_name(consent_results(gpuvms[1:], tags, GuardSettings(cluster_name="aks-east")))
    assert mine["consent.claims"].status is Status.OK


def test_consent_with_the_guard_off_warns() -> None:
    results = by_name(
        consent_results([named("ml", "a", ref("vm-a"))], {ref("vm-a").key: {}}, GuardSettings(managed_tag=None))
    )
    assert results["consent.opt-in"].status is Status.WARN and "--managed-tag none" in results["consent.opt-in"].detail


def test_consent_without_gpuvms_is_not_a_failure() -> None:
    (only,) = consent_results([], {}, GuardSettings())
    assert only.status is Status.SKIP and "no GpuVm" in only.detail


# ------------------------------------------------------------------ small parts


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rg-gpu", (SUB, "rg-gpu")),
        (f"{SUB.upper()}/rg-gpu", (SUB, "rg-gpu")),
        (f"{SCOPE}", (SUB, "rg-gpu")),
        (f"{SCOPE.lower()}/", (SUB, "rg-gpu")),
    ],
)
def test_resource_group_forms(text: str, expected: tuple[str, str]) -> None:
    assert parse_resource_group(text, SUB) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rg-gpu", "give SUBSCRIPTION/rg-gpu, or set --subscription-id"),
        ("prod/rg-gpu", "expected RESOURCE_GROUP, SUBSCRIPTION/RESOURCE_GROUP"),
    ],
)
def test_resource_group_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_resource_group(text, None)


def test_kubernetes_version() -> None:
    assert kubernetes_version("v1.36.0-kubeemu") == (1, 36)
    assert kubernetes_version("v1.28.3+k3s1") == (1, 28)
    assert kubernetes_version("weird") is None


def test_listed_is_bounded() -> None:
    assert listed(["a", "b"]) == "a, b"
    assert listed([str(i) for i in range(12)], 3) == "0, 1, 2 and 9 more"


RESULTS = [
    Result("kubernetes.api", "Kubernetes", "API server", Status.OK, "answered"),
    Result("kubernetes.rbac", "Kubernetes", "RBAC", Status.SKIP, "not checked: why"),
    Result("azure.credential", "Azure", "credential 'auto'", Status.FAIL, "no identity", "set one up"),
    Result("azure.permissions.x", "Azure", "permissions at x", Status.WARN, "broad", "narrow it"),
]


def test_text_output_for_terminals_and_pipes() -> None:
    tty = render_text(RESULTS, tty=True).splitlines()
    assert tty == [
        "Kubernetes",
        "  ✔ API server: answered",
        "  - RBAC: not checked: why",
        "Azure",
        "  ✖ credential 'auto': no identity",
        "      fix: set one up",
        "  ! permissions at x: broad",
        "      fix: narrow it",
        "1 of 4 checks failed, 1 warned.",
    ]
    plain = render_text(RESULTS, tty=False)
    assert "  OK   API server: answered" in plain and "  FAIL credential 'auto': no identity" in plain
    assert "✔" not in plain and "✖" not in plain
    assert render_text(RESULTS[:2], tty=False).splitlines()[-1] == "All 1 checks passed."


def test_json_output() -> None:
    out = json.loads(render_json(RESULTS, pre=True))
    assert out["ok"] is False and out["pre"] is True
    assert [c["status"] for c in out["checks"]] == ["ok", "skip", "fail", "warn"]
    assert out["checks"][2] == {
        "name": "azure.credential",
        "section": "Azure",
        "title": "credential 'auto'",
        "status": "fail",
        "detail": "no identity",
        "fix": "set one up",
    }
    assert EXIT_FAILED == 1
