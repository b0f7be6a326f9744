"""The tag guard: no opt-in tag, no power operation; namespaces the VM allows."""

from __future__ import annotations

import pytest

from controller.guard import GuardSettings, check, needs_claim, owner_of, parse_tag_setting
from controller.reasons import Reason

DEFAULT = GuardSettings()


def test_opted_in_vm_is_allowed() -> None:
    assert check({"gpuvm-managed": "true"}, namespace="ml", settings=DEFAULT) is None
    assert check({"GPUVM-Managed": "True"}, namespace="ml", settings=DEFAULT) is None  # names are case-insensitive


@pytest.mark.parametrize(("tags", "seen"), [({}, "it has no such tag"), ({"gpuvm-managed": "false"}, 'it has gpuvm-managed="false"')])
def test_vm_without_opt_in_is_not_managed(tags: dict, seen: str) -> None:
    refusal = check(tags, namespace="ml", settings=DEFAULT)
    assert refusal is not None and refusal.reason is Reason.NOT_MANAGED
    assert 'add the Azure tag gpuvm-managed="true"' in refusal.message and seen in refusal.message


def test_custom_and_disabled_opt_in_tag() -> None:
    custom = GuardSettings(managed_tag=("team-ml/power", "yes"))
    assert check({"team-ml/power": "yes"}, namespace="ml", settings=custom) is None
    assert check({"gpuvm-managed": "true"}, namespace="ml", settings=custom).reason is Reason.NOT_MANAGED
    assert check({}, namespace="ml", settings=GuardSettings(managed_tag=None)) is None


@pytest.mark.parametrize(
    ("allowed", "namespace", "ok"),
    [("ml,research", "ml", True), (" ml , research ", "research", True), ("ml", "dev", False), ("*", "dev", True), ("", "ml", False)],
)
def test_namespaces_tag(allowed: str, namespace: str, ok: bool) -> None:
    refusal = check({"gpuvm-managed": "true", "gpuvm-namespaces": allowed}, namespace=namespace, settings=DEFAULT)
    if ok:
        assert refusal is None
    else:
        assert refusal is not None and refusal.reason is Reason.NAMESPACE_NOT_ALLOWED
        assert f'namespace "{namespace}"' in refusal.message


@pytest.mark.parametrize(("text", "parsed"), [("gpuvm-managed=true", ("gpuvm-managed", "true")), (" a = b ", ("a", "b")), ("none", None), ("OFF", None)])
def test_parse_tag_setting(text: str, parsed: tuple | None) -> None:
    assert parse_tag_setting(text) == parsed


@pytest.mark.parametrize("text", ["gpuvm-managed", "=true", "gpuvm-managed=", ""])
def test_parse_tag_setting_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="NAME=VALUE"):
        parse_tag_setting(text)


def test_claims_by_other_clusters_are_refused() -> None:
    mine = GuardSettings(cluster_name="aks-prod-weu")
    tags = {"gpuvm-managed": "true", "gpuvm-owner": "aks-dev-neu"}
    refusal = check(tags, namespace="ml", settings=mine)
    assert refusal is not None and refusal.reason is Reason.DUPLICATE_VM and refusal.code == "OwnedByOtherCluster"
    assert 'claimed by cluster "aks-dev-neu"' in refusal.message
    assert check({**tags, "gpuvm-owner": "aks-prod-weu"}, namespace="ml", settings=mine) is None
    assert check(tags, namespace="ml", settings=GuardSettings()) is None  # claims are ignored without a cluster name


def test_needs_claim() -> None:
    mine = GuardSettings(cluster_name="c1")
    assert needs_claim({"gpuvm-managed": "true"}, mine)
    assert not needs_claim({"gpuvm-managed": "true", "GPUVM-OWNER": "c1"}, mine)
    assert not needs_claim({"gpuvm-managed": "true", "gpuvm-owner": "c2"}, mine)
    assert not needs_claim({"gpuvm-managed": "true"}, GuardSettings())
    assert owner_of({"Gpuvm-Owner": "c2"}, mine) == "c2"
