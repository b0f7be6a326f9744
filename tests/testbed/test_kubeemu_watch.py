"""Watch streams: initial state, resume, 410 Expired, bookmarks, timeouts, selectors."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from kubernetes import client, watch

from tests.testbed.conftest import RawHttp, wait_for

G, V = "test.kubeemu.dev", "v1"
W = f"/apis/{G}/{V}/namespaces/default/widgets"


def widget(name: str, labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, **({"labels": labels} if labels else {})}
    return {"apiVersion": f"{G}/{V}", "kind": "Widget", "metadata": meta, "spec": {"size": 1, **spec}}


def kinds(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["type"], e["object"]["metadata"].get("name", "")) for e in events]


def test_initial_state_then_live_events(co: client.CustomObjectsApi, kube_raw: RawHttp) -> None:
    co.create_namespaced_custom_object(G, V, "default", "widgets", widget("a"))
    events: list[dict[str, Any]] = []

    def consume() -> None:
        # The stream must stay open while the test patches: 5 s, not a window a busy machine misses.
        for ev in kube_raw.stream(f"{W}?watch=1&timeoutSeconds=5", timeout=30):
            events.append(ev)

    t = threading.Thread(target=consume)
    t.start()
    wait_for(lambda: events, 30, what="synthetic ADDED")
    co.patch_namespaced_custom_object(G, V, "default", "widgets", "a", {"spec": {"size": 2}})
    co.patch_namespaced_custom_object(G, V, "default", "widgets", "a", {"spec": {"size": 2}})  # no-op: no event
    co.delete_namespaced_custom_object(G, V, "default", "widgets", "a")
    t.join(30)
    assert not t.is_alive(), "timeoutSeconds must end the stream"
    assert kinds(events) == [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")]
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert rvs == sorted(rvs) and len(set(rvs)) == 3


def test_resume_from_resource_version_with_official_client(co: client.CustomObjectsApi) -> None:
    a = co.create_namespaced_custom_object(G, V, "default", "widgets", widget("a"))
    co.patch_namespaced_custom_object(G, V, "default", "widgets", "a", {"spec": {"size": 3}})
    co.create_namespaced_custom_object(G, V, "default", "widgets", widget("b"))
    w = watch.Watch()
    seen = [(e["type"], e["object"]["metadata"]["name"], e["object"]["spec"]["size"])
            for e in w.stream(co.list_namespaced_custom_object, G, V, "default", "widgets",
                              resource_version=a["metadata"]["resourceVersion"], timeout_seconds=1)]
    assert seen == [("MODIFIED", "a", 3), ("ADDED", "b", 1)]


def test_expired_resource_version_is_410_event(co: client.CustomObjectsApi, kube_raw: RawHttp) -> None:
    first = co.create_namespaced_custom_object(G, V, "default", "widgets", widget("a"))
    for i in range(60):  # watch_history is 50 in the fixture
        co.patch_namespaced_custom_object(G, V, "default", "widgets", "a", {"spec": {"replicas": i}})
    events = list(kube_raw.stream(f"{W}?watch=true&resourceVersion={first['metadata']['resourceVersion']}"))
    assert len(events) == 1 and events[0]["type"] == "ERROR"
    status = events[0]["object"]
    assert status["kind"] == "Status" and status["reason"] == "Expired" and status["code"] == 410
    assert status["message"].startswith(f"too old resource version: {first['metadata']['resourceVersion']} (")


def test_bookmarks(co: client.CustomObjectsApi, kube_raw: RawHttp) -> None:
    a = co.create_namespaced_custom_object(G, V, "default", "widgets", widget("a"))
    rv = a["metadata"]["resourceVersion"]
    events = []
    for ev in kube_raw.stream(f"{W}?watch=true&allowWatchBookmarks=true&resourceVersion={rv}&timeoutSeconds=5"):
        events.append(ev)
        if ev["type"] == "BOOKMARK":
            break
    assert events[-1] == {"type": "BOOKMARK", "object": {"kind": "Widget", "apiVersion": f"{G}/{V}",
                                                         "metadata": {"resourceVersion": rv}}}
    none = list(kube_raw.stream(f"{W}?watch=true&resourceVersion={rv}&timeoutSeconds=1"))
    assert none == []


def test_selector_transitions(co: client.CustomObjectsApi, kube_raw: RawHttp) -> None:
    a = co.create_namespaced_custom_object(G, V, "default", "widgets", widget("a", {"team": "x"}))
    co.patch_namespaced_custom_object(G, V, "default", "widgets", "a", {"metadata": {"labels": {"team": "y"}}})
    co.patch_namespaced_custom_object(G, V, "default", "widgets", "a", {"metadata": {"labels": {"team": "x"}}})
    co.create_namespaced_custom_object(G, V, "default", "widgets", widget("b", {"team": "y"}))
    co.create_namespaced_custom_object(G, V, "kube-system", "widgets", widget("c", {"team": "x"}))
    rv = int(a["metadata"]["resourceVersion"]) - 1
    events = list(kube_raw.stream(f"{W}?watch=true&labelSelector=team%3Dx&resourceVersion={rv}&timeoutSeconds=1"))
    assert kinds(events) == [("ADDED", "a"), ("DELETED", "a"), ("ADDED", "a")]
    by_name = list(kube_raw.stream(f"/apis/{G}/{V}/widgets?watch=true&fieldSelector=metadata.name%3Dc&timeoutSeconds=1"))
    assert kinds(by_name) == [("ADDED", "c")]


def test_many_watchers_are_cheap(co: client.CustomObjectsApi, kube_emulator: Any, kube_raw: RawHttp) -> None:
    results: list[list[dict[str, Any]]] = [[] for _ in range(30)]

    def consume(i: int) -> None:
        # Open long enough for all 30 to start and the 5 creations to follow on a busy machine.
        for ev in kube_raw.stream(f"{W}?watch=true&resourceVersion=1&timeoutSeconds=8", timeout=30):
            results[i].append(ev)

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(30)]
    for t in threads:
        t.start()
    wait_for(lambda: kube_emulator.stats()["watchers"] == 30, 30, what="30 watchers")
    for i in range(5):
        co.create_namespaced_custom_object(G, V, "default", "widgets", widget(f"w{i}"))
    for t in threads:
        t.join(30)
    assert all(kinds(r) == [("ADDED", f"w{i}") for i in range(5)] for r in results)
    wait_for(lambda: kube_emulator.stats()["watchers"] == 0, 30, what="watchers to be released")
