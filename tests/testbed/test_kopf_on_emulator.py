"""A minimal kopf operator against the emulator: no repeated, no lost handler calls."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from tests.testbed.conftest import wait_for
from tests.testbed.kopf_operator import FINALIZER, GROUP, PLURAL, VERSION, Recorder, assert_every_change_seen, running_operator, widget

DIFF_BASE = "kopf.zalando.org/last-handled-configuration"


@pytest.fixture
def operator(kube_emulator: Any) -> Iterator[Recorder]:
    with running_operator(kube_emulator.url) as rec:
        yield rec


def test_kopf_sees_every_change_once(operator: Recorder, kube_api: client.ApiClient, kube_emulator: Any) -> None:
    api = client.CustomObjectsApi(kube_api)
    api.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, widget("w", 0))
    wait_for(lambda: any(c[0] == "create" for c in operator.snapshot()), 30, what="create handler")
    # Creation is over once kopf stored what it handled (its diff-base annotation): a patch sent
    # before that is folded into the creation (kopf handles the latest body), not seen as an update.
    obj = wait_for(lambda: (o := api.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "w"))
                   and FINALIZER in o["metadata"].get("finalizers", [])
                   and DIFF_BASE in (o["metadata"].get("annotations") or {}) and o, 30, what="kopf's creation to end")
    assert obj["metadata"]["finalizers"] == [FINALIZER]
    # kopf added its finalizer with a JSON patch guarded by a `test` of the resourceVersion.
    assert any(k[0] == "PATCH" and k[1] == PLURAL for k in kube_emulator.stats()["requests"])

    last = 0
    for value in range(1, 101):
        api.patch_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "w", {"spec": {"replicas": value}})
        last = value

    wait_for(lambda: (u := operator.updates()) and u[-1][1] == last, 60, what="the last patch to be handled")
    updates = operator.updates()
    print(f"kopf handled {len(updates)} changes for 100 patches: {updates}")
    assert [c for c in operator.snapshot() if c[0] == "create"] == [("create", None, 0)]
    assert_every_change_seen(updates, first=0, last=last)
    wait_for(lambda: api.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "w").get("status", {}).get("count") == last,
             15, what="status written through /status")

    api.delete_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "w")

    def gone() -> bool:
        try:
            api.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "w")
            return False
        except client.ApiException as e:
            return e.status == 404

    wait_for(gone, 30, what="deletion after kopf released its finalizer")
    assert [c for c in operator.snapshot() if c[0] == "delete"] == [("delete", None, last)]
    assert len(operator.updates()) == len(updates)
