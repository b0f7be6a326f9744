"""The Tags API at a VM's scope, through azure-mgmt-resource (sync and aio), with ARM's tag rules."""

from __future__ import annotations

import pytest
from azure.core.exceptions import HttpResponseError

from testbed.azuresim import OpName
from tests.testbed.azure_fixtures import (
    RG,
    aio_resources,
    azure_sim,
    azure_sim_factory,
    compute,
    resources,
    sim_of,
    vm_scope,
)

__all__ = ["aio_resources", "azure_sim", "azure_sim_factory", "compute", "resources"]


def _patch(operation: str, tags: dict[str, str]) -> dict:
    return {"operation": operation, "properties": {"tags": tags}}


def test_get_merge_replace_delete(azure_sim, resources, compute) -> None:
    scope = vm_scope("vm-1")
    got = resources.tags.get_at_scope(scope)
    assert got.properties.tags == {"team": "ml"}
    assert got.id == scope + "/providers/Microsoft.Resources/tags/default"

    merged = resources.tags.begin_update_at_scope(scope, _patch("Merge", {"owner": "alice", "TEAM": "cv"})).result()
    assert merged.properties.tags == {"team": "cv", "owner": "alice"}  # names are case-insensitive
    assert compute.virtual_machines.get(RG, "vm-1").tags == {"team": "cv", "owner": "alice"}

    deleted = resources.tags.begin_update_at_scope(scope, _patch("Delete", {"owner": "bob", "team": ""})).result()
    assert deleted.properties.tags == {"owner": "alice"}  # a value that does not match keeps the tag

    replaced = resources.tags.begin_update_at_scope(scope, _patch("Replace", {"x": "1"})).result()
    assert replaced.properties.tags == {"x": "1"}

    put = resources.tags.begin_create_or_update_at_scope(scope, {"properties": {"tags": {"y": "2"}}}).result()
    assert put.properties.tags == {"y": "2"}

    assert resources.tags.begin_delete_at_scope(scope).result() is None
    assert resources.tags.get_at_scope(scope).properties.tags == {}
    assert compute.virtual_machines.get(RG, "vm-1").tags is None
    counters = azure_sim.run_sync(sim_of(azure_sim).counters)
    assert counters[(OpName.TAGS_PATCH.value, 200)] == 3
    assert counters[(OpName.TAGS_DELETE.value, 200)] == 1


async def test_aio_tags(aio_resources) -> None:
    scope = vm_scope("vm-2")
    poller = await aio_resources.tags.begin_update_at_scope(scope, _patch("Merge", {"claim": "job-7"}))
    assert (await poller.result()).properties.tags == {"claim": "job-7"}
    assert (await aio_resources.tags.get_at_scope(scope)).properties.tags == {"claim": "job-7"}
    await (await aio_resources.tags.begin_delete_at_scope(scope)).result()
    assert (await aio_resources.tags.get_at_scope(scope)).properties.tags == {}


@pytest.mark.parametrize(
    ("tags", "code"),
    [
        ({"a/b": "1"}, "InvalidTagNameCharacters"),
        ({"a<b": "1"}, "InvalidTagNameCharacters"),
        ({"n" * 513: "1"}, "InvalidTagName"),
        ({"ok": "v" * 257}, "InvalidTagValueLength"),
        ({f"t{i}": "v" for i in range(51)}, "InvalidTags"),
        ({" ": "v"}, "InvalidTagName"),
    ],
)
def test_tag_rules(resources, tags: dict[str, str], code: str) -> None:
    with pytest.raises(HttpResponseError) as e:
        resources.tags.begin_update_at_scope(vm_scope("vm-1"), _patch("Merge", tags)).result()
    assert e.value.status_code == 400 and e.value.error.code == code
    assert resources.tags.get_at_scope(vm_scope("vm-1")).properties.tags == {"team": "ml"}


def test_limits_count_the_result_and_accept_the_maxima(resources) -> None:
    scope = vm_scope("vm-3")
    resources.tags.begin_create_or_update_at_scope(
        scope, {"properties": {"tags": {f"t{i}": "v" for i in range(49)} | {"n" * 512: "v" * 256}}}).result()
    with pytest.raises(HttpResponseError) as e:
        resources.tags.begin_update_at_scope(scope, _patch("Merge", {"one-more": "x"})).result()
    assert e.value.error.code == "InvalidTags"
    assert len(resources.tags.get_at_scope(scope).properties.tags) == 50


def test_tags_on_missing_vm_is_404(resources) -> None:
    with pytest.raises(HttpResponseError) as e:
        resources.tags.get_at_scope(vm_scope("ghost"))
    assert e.value.status_code == 404 and e.value.error.code == "ResourceNotFound"
