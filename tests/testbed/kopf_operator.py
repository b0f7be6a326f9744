"""A minimal kopf operator on the emulator's test CRD, recording every handler call.

kopf runs with ``asyncio.run`` in its own thread (its shutdown cancels every task of its loop);
the tests drive the emulator with the blocking official client. Shared by the plain kopf test
and the tests of kopf under injected faults.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any

import kopf

GROUP, VERSION, PLURAL = "test.kubeemu.dev", "v1", "widgets"
FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"


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

    def updates(self) -> list[tuple[Any, Any]]:
        return [(old, new) for kind, old, new in self.snapshot() if kind == "update"]


@contextlib.contextmanager
def running_operator(url: str, *, error_backoff: float | None = None) -> Iterator[Recorder]:
    """kopf with create/field/delete handlers on widgets; the field handler also writes status.count."""
    registry = kopf.OperatorRegistry()
    rec = Recorder()

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        # status.kopf would be pruned by a structural schema: keep kopf's state in annotations.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage()
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage()
        settings.watching.server_timeout = 30
        settings.posting.level = logging.INFO
        if error_backoff is not None:  # retries of failed requests, and the pause after an error in processing
            settings.networking.error_backoffs = [error_backoff] * 20
            settings.queueing.error_delays = [error_backoff] * 20

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=url, insecure=True)

    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    def created(spec: Any, **_: Any) -> None:
        rec.add("create", None, spec.get("replicas"))

    @kopf.on.field(GROUP, VERSION, PLURAL, field="spec.replicas", registry=registry)
    def replicas_changed(old: Any, new: Any, reason: Any, patch: kopf.Patch, **_: Any) -> None:
        if reason == "update":
            rec.add("update", old, new)
            patch.status["count"] = new

    @kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry)
    def deleted(spec: Any, **_: Any) -> None:
        rec.add("delete", None, spec.get("replicas"))

    with kopf_in_thread(registry):
        yield rec


@contextlib.contextmanager
def kopf_in_thread(registry: kopf.OperatorRegistry, *, timeout: float = 20.0) -> Iterator[None]:
    """kopf.operator for ``registry`` (standalone, cluster-wide) in a thread of its own, ready
    within ``timeout`` seconds, and stopped within as many when the block ends."""
    ready, stop = threading.Event(), threading.Event()

    def run() -> None:
        asyncio.run(kopf.operator(registry=registry, ready_flag=ready, stop_flag=stop, standalone=True, clusterwide=True))

    thread = threading.Thread(target=run, name="kopf", daemon=True)
    thread.start()
    try:
        assert ready.wait(timeout), "kopf did not become ready"
        yield
    finally:
        stop.set()
        thread.join(timeout)
        assert not thread.is_alive(), "kopf did not stop"


def widget(name: str, replicas: int) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Widget", "metadata": {"name": name},
            "spec": {"size": 1, "replicas": replicas}}


def assert_every_change_seen(updates: list[tuple[Any, Any]], *, first: int, last: int) -> None:
    """Nothing lost (each handled change starts where the previous ended, from first to last), nothing repeated."""
    assert updates and updates[0][0] == first and updates[-1][1] == last, updates
    assert all(prev[1] == cur[0] for prev, cur in zip(updates, updates[1:])), updates
    assert len(set(updates)) == len(updates), updates
    assert all(old != new for old, new in updates), updates
