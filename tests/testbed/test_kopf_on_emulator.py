"""A minimal kopf operator against the emulator: no repeated, no lost handler calls.

kopf runs with ``asyncio.run`` in its own thread (its shutdown cancels every task of its loop),
the emulator in a ServerThread, and the test drives both with the blocking official client.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from typing import Any

import kopf
import pytest
from kubernetes import client

from tests.testbed.conftest import wait_for

GROUP, VERSION, PLURAL = "test.kubeemu.dev", "v1", "widgets"
FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"
DIFF_BASE = "kopf.zalando.org/last-handled-configuration"


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[tuple[str, Any, Any]] = []

    def add(self, *call: Any) -> None:
        with self.lock:
            self.calls.append(call)  # type: ignore[arg-type]

    def snapshot(self) -> list[tuple[str, Any, Any]]:
        with self.lock:
            return list(self.calls)


@pytest.fixture
def operator(kube_emulator: Any) -> Iterator[Recorder]:
    registry = kopf.OperatorRegistry()
    rec = Recorder()

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        # status.kopf would be pruned by a structural schema: keep kopf's state in annotations.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage()
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage()
        settings.watching.server_timeout = 30
        settings.posting.level = logging.INFO

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=kube_emulator.url, insecure=True)

    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    def created(spec: Any, **_: Any) -> None:
        rec.add("create", None, spec.get("replicas"))

    @kopf.on.field(GROUP, VERSION, PLURAL, field="spec.replicas", registry=registry)
    def replicas_changed(old: Any, new: Any, reason: Any, **_: Any) -> None:
        if reason == "update":
            rec.add("update", old, new)

    @kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry)
    def deleted(spec: Any, **_: Any) -> None:
        rec.add("delete", None, spec.get("replicas"))

    ready, stop = threading.Event(), threading.Event()

    def run() -> None:
        asyncio.run(kopf.operator(registry=registry, ready_flag=ready, stop_flag=stop, standalone=True,
                                  clusterwide=True))

    thread = threading.Thread(target=run, name="kopf", daemon=True)
    thread.start()
    try:
        assert ready.wait(20), "kopf did not become ready"
        yield rec
    finally:
        stop.set()
        thread.join(20)
        assert not thread.is_alive(), "kopf did not stop"


def _widget(name: str, replicas: int) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Widget", "metadata": {"name": name},
            "spec": {"size": 1, "replicas": replicas}}


def test_kopf_sees_every_change_once(operator: Recorder, kube_api: client.ApiClient, kube_emulator: Any) -> None:
    api = client.CustomObjectsApi(kube_api)
    api.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, _widget("w", 0))
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

    def settled() -> bool:
        updates = [c for c in operator.snapshot() if c[0] == "update"]
        return bool(updates) and updates[-1][2] == last

    wait_for(settled, 60, what="the last patch to be handled")
    calls = operator.snapshot()
    assert [c for c in calls if c[0] == "create"] == [("create", None, 0)]
    updates = [(old, new) for kind, old, new in calls if kind == "update"]
    print(f"kopf handled {len(updates)} changes for 100 patches: {updates}")
    # Nothing lost: each handled change starts where the previous one ended, from 0 to the last value.
    assert updates[0][0] == 0 and updates[-1][1] == last
    assert all(prev[1] == cur[0] for prev, cur in zip(updates, updates[1:])), updates
    # Nothing repeated: no change is handled twice and every handled change is a real change.
    assert len(set(updates)) == len(updates)
    assert all(old != new for old, new in updates)

    api.delete_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "w")

    def gone() -> bool:
        try:
            api.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "w")
            return False
        except client.ApiException as e:
            return e.status == 404

    wait_for(gone, 30, what="deletion after kopf released its finalizer")
    assert [c for c in operator.snapshot() if c[0] == "delete"] == [("delete", None, last)]
    assert len([c for c in operator.snapshot() if c[0] == "update"]) == len(updates)
