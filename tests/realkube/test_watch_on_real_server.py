"""Watch semantics kopf relies on, on a real kube-apiserver v1.36 and on the emulator beside it.

kopf (and so the operator) lists once, then watches from the list's resourceVersion, and resumes
from the last resourceVersion it saw whenever a watch request ends (the operator ends each one
after 300 s, controller/operator.py). That is correct only if the server replays exactly the
events after that version, says ``410 Gone`` when it no longer can (kopf then lists again), and
sends bookmarks that carry progress. Each of these is shown here on the real server, and the
emulator is held to it where it implements it; docs/testing.md lists where it does not.

Streams are read as they arrive and left as soon as the awaited event is there; a bound
(``timeoutSeconds``, the client's timeout, a deadline) ends every wait, never a fixed sleep.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any

import kopf
import pytest

from testbed.controlplane import ControlPlane
from testbed.sandbox import wait_for
from tests.realkube.conftest import Pair, _assets_or_skip
from tests.realkube.endpoints import API, Answer, Endpoint, gpuvm, kubectl, real_endpoint, rid
from tests.testbed.kopf_operator import kopf_in_thread

GPUVMS = API + "/namespaces/{ns}/gpuvms"
MERGE = "application/merge-patch+json"


def events_until(e: Endpoint, path: str, done: Any, *, timeout_seconds: int = 30,
                 stream: Iterator[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The events of ``path`` (a watch, or the ``stream`` of it already open) until
    ``done(events)`` holds or the server ends the stream after ``timeout_seconds``."""
    events: list[dict[str, Any]] = []
    for event in stream or watch(e, path, timeout_seconds):
        events.append(event)
        if done(events):
            break
    return events


def watch(e: Endpoint, path: str, timeout_seconds: int) -> Iterator[dict[str, Any]]:
    return e.stream(f"{path}&timeoutSeconds={timeout_seconds}", timeout=timeout_seconds + 30)


def kinds(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(ev["type"], ev["object"]["metadata"].get("name", "")) for ev in events]


@pytest.mark.parametrize("server", ["real", "emulator"])
def test_a_watch_resumes_after_a_resource_version_with_exactly_the_later_events(pair: Pair, server: str) -> None:
    """What kopf does after every ended watch request: resume from the last version it saw. It
    gets every later change, in order, once; and a watch from the newest version gets none."""
    e: Endpoint = getattr(pair, server)
    path = GPUVMS.format(ns=pair.namespace)
    a = e.call("POST", path, gpuvm("a", {"vm": {"resourceId": rid("a")}})).body
    e.call("PATCH", f"{path}/a", {"spec": {"desiredState": "Running"}}, content_type=MERGE)
    e.call("POST", path, gpuvm("b", {"vm": {"resourceId": rid("b")}}))
    e.call("DELETE", f"{path}/a")
    events = events_until(e, f"{path}?watch=true&resourceVersion={a['metadata']['resourceVersion']}", lambda evs: len(evs) == 3)
    assert kinds(events) == [("MODIFIED", "a"), ("ADDED", "b"), ("DELETED", "a")]
    assert events[0]["object"]["spec"]["desiredState"] == "Running"
    versions = [int(ev["object"]["metadata"]["resourceVersion"]) for ev in events]
    assert versions == sorted(set(versions))

    latest = e.call("GET", path).body["metadata"]["resourceVersion"]
    assert events_until(e, f"{path}?watch=true&resourceVersion={latest}", lambda evs: True, timeout_seconds=1) == []


def test_a_watch_from_before_the_watch_cache_window_is_410_gone(pair: Pair) -> None:
    """The real server answers a watch from a version its watch cache no longer holds with an
    ERROR event ``410 Expired``: here a version from before the CRD was installed (the cache of a
    resource starts when the server starts serving it). The emulator's window is a count of
    events per resource instead, so it replays from that version: a documented difference."""
    def before(e: Endpoint) -> str:
        """A version from the server's first moments: the default namespace's, never written since."""
        return str(e.call("GET", "/api/v1/namespaces/default").body["metadata"]["resourceVersion"])

    path = GPUVMS.format(ns=pair.namespace) + "?watch=true&resourceVersion={}"
    [event] = events_until(pair.real, path.format(before(pair.real)), lambda evs: True)
    assert event["type"] == "ERROR"
    status = event["object"]
    assert (status["kind"], status["status"], status["reason"], status["code"]) == ("Status", "Failure", "Expired", 410)
    oldest = status["message"].removeprefix(f"too old resource version: {before(pair.real)} (").removesuffix(")")
    assert oldest.isdigit() and int(oldest) > int(before(pair.real)), status["message"]

    emulated = pair.emulator.call("POST", GPUVMS.format(ns=pair.namespace), gpuvm("a", {"vm": {"resourceId": rid()}}))
    assert emulated.status == 201
    assert kinds(events_until(pair.emulator, path.format(before(pair.emulator)), lambda evs: True)) == [("ADDED", "a")]


@pytest.mark.parametrize("server", ["real", "emulator"])
def test_a_bookmark_carries_progress_the_watcher_saw_no_event_of(pair: Pair, server: str) -> None:
    """A watcher of one namespace is told, by a BOOKMARK with no object but its version, that
    the resource moved on past a change in another namespace: kopf keeps that version, so its
    next watch does not resume from far behind. The real server sends one about once a minute
    and 2 s before the watch's timeout (here after 4 s of 6); the emulator every second here."""
    e: Endpoint = getattr(pair, server)
    other = f"{pair.namespace}-b"
    created = e.call("POST", "/api/v1/namespaces", {"metadata": {"name": other}})
    assert created.status == 201, created
    try:
        path = GPUVMS.format(ns=pair.namespace)
        start = e.call("GET", path).body["metadata"]["resourceVersion"]
        # The change must come while the watch is open: the real server sends no bookmark for
        # progress made before (the watcher starts at the cache's newest version).
        stream = watch(e, f"{path}?watch=true&allowWatchBookmarks=true&resourceVersion={start}", 6)
        elsewhere = e.call("POST", GPUVMS.format(ns=other), gpuvm("x", {"vm": {"resourceId": rid()}})).body
        progress = int(elsewhere["metadata"]["resourceVersion"])

        def caught_up(evs: list[dict[str, Any]]) -> bool:
            last = evs[-1]
            return last["type"] == "BOOKMARK" and int(last["object"]["metadata"]["resourceVersion"]) >= progress

        events = events_until(e, path, caught_up, stream=stream)
        assert events and caught_up(events), f"no bookmark at or after {progress}: {events}"
        assert {ev["type"] for ev in events} == {"BOOKMARK"}  # nothing of the other namespace
        assert events[-1]["object"] == {"apiVersion": "gpuvm.dev/v1alpha1", "kind": "GpuVm",
                                        "metadata": {"resourceVersion": events[-1]["object"]["metadata"]["resourceVersion"]}}
    finally:
        e.call("DELETE", f"/api/v1/namespaces/{other}")


def test_initial_events_end_with_a_bookmark_on_the_real_server_only(pair: Pair) -> None:
    """A streaming list (``sendInitialEvents=true``, kopf's ``watching.initial_streaming``) ends
    its initial ADDED events with a BOOKMARK annotated ``k8s.io/initial-events-end`` on the real
    server. The emulator ignores sendInitialEvents (documented): it sends the ADDED events but no
    such bookmark, so kopf's initial_streaming must stay off against it (the operator leaves it off)."""
    query = "?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true"
    for e in (pair.real, pair.emulator):
        assert e.call("POST", GPUVMS.format(ns=pair.namespace), gpuvm("a", {"vm": {"resourceId": rid()}})).status == 201

    def ended(evs: list[dict[str, Any]]) -> bool:
        return evs[-1]["type"] == "BOOKMARK" and "k8s.io/initial-events-end" in evs[-1]["object"]["metadata"].get("annotations", {})

    real = events_until(pair.real, GPUVMS.format(ns=pair.namespace) + query, ended, timeout_seconds=10)
    assert kinds(real) == [("ADDED", "a"), ("BOOKMARK", "")]
    assert real[-1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    emulated = events_until(pair.emulator, GPUVMS.format(ns=pair.namespace) + query, ended, timeout_seconds=2)
    assert kinds(emulated)[0] == ("ADDED", "a") and not ended(emulated)


# ------------------------------------------------------------------------------ kopf after a 410
class Seen:
    """What a kopf event handler saw, and kopf's own log lines, for assertions from the test thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[str | None, str, str]] = []  # (type, name, desiredState); type None: from a list
        self.log: list[str] = []

    def add(self, item: tuple[str | None, str, str]) -> None:
        with self.lock:
            self.events.append(item)

    def snapshot(self) -> list[tuple[str | None, str, str]]:
        with self.lock:
            return list(self.events)


class _Capture(logging.Handler):
    def __init__(self, seen: Seen) -> None:
        super().__init__(logging.DEBUG)
        self.seen = seen

    def emit(self, record: logging.LogRecord) -> None:
        with self.seen.lock:
            self.seen.log.append(record.getMessage())


@contextlib.contextmanager
def kopf_watching_gpuvms(plane: ControlPlane) -> Iterator[Seen]:
    """kopf with one event handler on gpuvms, against ``plane`` with its admin certificates."""
    registry = kopf.OperatorRegistry()
    seen = Seen()

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.networking.error_backoffs = [0.5] * 120  # keep retrying through the restart, briskly
        settings.watching.reconnect_backoff = 0.2
        settings.posting.enabled = False

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        c = plane.certs
        return kopf.ConnectionInfo(server=plane.url, ca_path=str(c / "ca.crt"), certificate_path=str(c / "admin.crt"),
                                   private_key_path=str(c / "admin.key"))

    @kopf.on.event("gpuvm.dev", "v1alpha1", "gpuvms", registry=registry)
    def on_event(name: str, spec: Any, **kwargs: Any) -> None:
        seen.add((kwargs["type"], name, spec.get("desiredState", "")))

    capture = _Capture(seen)
    watching = logging.getLogger("kopf._cogs.clients.watching")
    watching.addHandler(capture)
    old_level = watching.level
    watching.setLevel(logging.DEBUG)
    try:
        with kopf_in_thread(registry, timeout=60):
            yield seen
    finally:
        watching.removeHandler(capture)
        watching.setLevel(old_level)


@pytest.fixture(scope="module")
def own_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A control plane of this module's own (no controller manager): one test restarts its API
    server, another waits for etcd compaction, which it asks for every 2 s (the default is 5 min)."""
    _assets_or_skip()
    plane = ControlPlane(tmp_path_factory.mktemp("plane"), with_controller_manager=False,
                         extra_apiserver_flags=("--etcd-compaction-interval=2s",))
    try:
        plane.start()
        kubectl(plane.kubeconfig, "apply", "-f", "deploy/crds/gpuvms.gpuvm.dev.yaml")
        kubectl(plane.kubeconfig, "wait", "--for=condition=Established", "--timeout=120s", "crd/gpuvms.gpuvm.dev")
        yield plane
    finally:
        plane.stop()


def test_kopf_lists_again_after_a_410_when_the_api_server_restarted(own_plane: ControlPlane) -> None:
    """An API server restart (a control-plane upgrade) empties its watch cache, which then starts
    at etcd's current revision. kopf, resuming its watch from the last version it saw, gets
    410 Gone, lists again (its event handler sees the GpuVm once more, from the list) and goes on
    watching: a change after the restart reaches it."""
    e = real_endpoint(own_plane.url, own_plane.certs, own_plane.kubeconfig)
    path = GPUVMS.format(ns="default")
    wait_for(lambda: e.call("GET", path).status == 200, 60, interval=0.2, what="gpuvms to be served")
    assert e.call("POST", path, gpuvm("a", {"vm": {"resourceId": rid()}})).status == 201
    with kopf_watching_gpuvms(own_plane) as seen:
        wait_for(lambda: (None, "a", "Deallocated") in seen.snapshot(), 60, what="kopf's first list")
        patched = e.call("PATCH", f"{path}/a", {"spec": {"desiredState": "Running"}}, content_type=MERGE).body
        wait_for(lambda: ("MODIFIED", "a", "Running") in seen.snapshot(), 60, what="the patch through kopf's watch")
        last_seen = patched["metadata"]["resourceVersion"]
        # Other writes move etcd's revision past the last version kopf saw of gpuvms.
        assert e.call("POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"name": "bump"}}).status == 201

        own_plane.restart_apiserver()

        # The raw answer kopf gets: a watch from its last version is now too old.
        [gone] = events_until(e, f"{path}?watch=true&resourceVersion={last_seen}", lambda evs: True)
        assert (gone["type"], gone["object"]["code"], gone["object"]["reason"]) == ("ERROR", 410, "Expired")
        wait_for(lambda: seen.snapshot().count((None, "a", "Running")) == 1, 60, what="kopf to list again after the 410")
        assert any(line.startswith("Restarting the watch-stream for gpuvms") for line in seen.log), seen.log
        e.call("PATCH", f"{path}/a", {"spec": {"desiredState": "Auto"}}, content_type=MERGE)
        wait_for(lambda: ("MODIFIED", "a", "Auto") in seen.snapshot(), 60, what="a change after the restart to reach kopf")


def test_etcd_compaction_expires_continue_tokens_and_exact_lists_but_not_watches(own_plane: ControlPlane) -> None:
    """What compaction does on a real server: a paged list's continue token and a list at an exact
    old version become 410 Expired once etcd has compacted past them, while a watch from that same
    version is still served from the watch cache (its 410 comes from the cache's window, above).
    The operator pages its lists (controller.kube.list_objects); the emulator never expires a
    continue token (documented)."""
    e = real_endpoint(own_plane.url, own_plane.certs, own_plane.kubeconfig)
    assert e.call("POST", "/api/v1/namespaces", {"metadata": {"name": "paged"}}).status == 201
    path = GPUVMS.format(ns="paged")
    wait_for(lambda: e.call("GET", path).status == 200, 60, interval=0.2, what="gpuvms to be served")
    for i in range(3):
        assert e.call("POST", path, gpuvm(f"g{i}", {"vm": {"resourceId": rid(f"vm-{i}")}})).status == 201
    first = e.call("GET", f"{path}?limit=1").body
    token, version = first["metadata"]["continue"], first["metadata"]["resourceVersion"]

    def expired() -> Answer | None:
        # Writes elsewhere move etcd's revision on, so each compaction passes the list's version.
        assert e.call("POST", "/api/v1/namespaces/paged/configmaps", {"metadata": {"generateName": "bump-"}}).status == 201
        page = e.call("GET", f"{path}?limit=1&continue={token}")
        assert page.status in (200, 410), page
        return page if page.status == 410 else None

    # About 15 s on the 2-core machine; the deadline stays inside pytest's 120 s per test.
    gone = wait_for(expired, 90, interval=0.5, what="etcd compaction to expire the continue token")
    assert (gone.body["reason"], gone.body["code"]) == ("Expired", 410)
    assert gone.body["message"].startswith("The provided continue parameter is too old to display a consistent list result.")
    assert gone.body["metadata"]["continue"]  # a token to go on with anyway, inconsistently
    exact = e.call("GET", f"{path}?resourceVersion={version}&resourceVersionMatch=Exact")
    assert (exact.status, exact.body["reason"], exact.body["message"]) == (410, "Expired", "The resourceVersion for the provided list is too old.")
    assert events_until(e, f"{path}?watch=true&resourceVersion={version}", lambda evs: True, timeout_seconds=1) == []
