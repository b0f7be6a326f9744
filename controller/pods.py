"""The phases of the Pods that own GpuVmClaims: a finished owner releases its claim at once.

A job killed hard never deletes its claim; its Pod, though, ends in phase Failed (or Succeeded),
and Kubernetes only deletes the claim when the Pod itself is deleted — for a finished Job's Pod,
possibly never. So the operator reads the phases of owner Pods. It must not pay memory in
proportion to the cluster's pods, so it never watches all of them (kopf would: its filters are
client-side). Instead:

- one list+watch per served namespace (or one cluster-wide) with the server-side label selector
  ``gpuvm.dev/claimant=true``, which the examples put on the pod templates of jobs that claim:
  only those Pods' phases are kept, and a phase change reaches the engine at once;
- for an owner Pod without that label, a GET when its claim is first seen and whenever the
  claim is looked at again (``read``), so a finished unlabelled owner is noticed within the
  claim's resync.

The official client is synchronous: the watch runs in a daemon thread and hands each change to
the event loop; reads run in the caller's thread pool. Every request is bounded (watch timeout,
request timeout) and failures back off up to 30 s.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import kubernetes
from kubernetes import watch as kube_watch

from controller.demand import CLAIMANT_LABEL

log = logging.getLogger(__name__)

SELECTOR = f"{CLAIMANT_LABEL}=true"
WATCH_SECONDS = 300  # each watch request ends after this; it resumes from the last resourceVersion
_BACKOFF_MAX = 30.0

PhaseChange = Callable[[str, str | None], None]  # (pod uid, phase or None when the Pod is gone)


class PodPhases:
    """uid -> phase of the labelled Pods, kept current by watches; GETs for the others."""

    def __init__(self, api_client: kubernetes.client.ApiClient, *, namespaces: Sequence[str],
                 on_change: PhaseChange) -> None:
        """``namespaces`` empty: cluster-wide. ``on_change`` is called on the event loop that
        called ``start``."""
        self._core = kubernetes.client.CoreV1Api(api_client)
        self._namespaces = list(namespaces) or [""]
        self._on_change = on_change
        self.phases: dict[str, str] = {}
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for namespace in self._namespaces:
            thread = threading.Thread(target=self._watch_forever, args=(namespace,), daemon=True,
                                      name=f"pods {namespace or '*'}")
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()

    def _changed(self, uid: str, phase: str | None) -> None:
        """On the loop: record and tell."""
        if phase is None:
            self.phases.pop(uid, None)
        elif self.phases.get(uid) == phase:
            return
        else:
            self.phases[uid] = phase
        self._on_change(uid, phase)

    def _tell(self, uid: str, phase: str | None) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._changed, uid, phase)

    def _watch_forever(self, namespace: str) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            try:
                version = self._list(namespace)
                backoff = 1.0
                while not self._stop.is_set():
                    version = self._watch(namespace, version)
            except kubernetes.client.ApiException as e:
                if e.status == 410:
                    continue  # the resourceVersion is too old: list again
                log.warning("watching claimant Pods%s failed: %s %s; retrying in %.0f s",
                            f" in {namespace}" if namespace else "", e.status, e.reason, backoff)
            except Exception as e:  # noqa: BLE001 - network errors, timeouts: the watch must go on
                log.warning("watching claimant Pods%s failed: %s: %s; retrying in %.0f s",
                            f" in {namespace}" if namespace else "", type(e).__name__, str(e)[:200], backoff)
            if self._stop.wait(backoff):
                return
            backoff = min(backoff * 2, _BACKOFF_MAX)

    def _list(self, namespace: str) -> str:
        kwargs: dict[str, Any] = {"label_selector": SELECTOR, "_request_timeout": 30}
        pods = (self._core.list_namespaced_pod(namespace, **kwargs) if namespace
                else self._core.list_pod_for_all_namespaces(**kwargs))
        for pod in pods.items:
            self._tell(pod.metadata.uid, (pod.status.phase if pod.status else None) or "Pending")
        return str(pods.metadata.resource_version or "")

    def _watch(self, namespace: str, version: str) -> str:
        """One watch request; returns the resourceVersion to resume from."""
        watch = kube_watch.Watch()
        kwargs: dict[str, Any] = {"label_selector": SELECTOR, "resource_version": version, "allow_watch_bookmarks": True,
                                  "timeout_seconds": WATCH_SECONDS, "_request_timeout": WATCH_SECONDS + 30}
        call = (self._core.list_namespaced_pod, namespace) if namespace else (self._core.list_pod_for_all_namespaces,)
        for event in watch.stream(*call, **kwargs):
            if self._stop.is_set():
                watch.stop()
                break
            kind = event["type"]
            if kind == "ERROR":
                raw = event.get("raw_object") or {}
                raise kubernetes.client.ApiException(status=raw.get("code"), reason=raw.get("reason"))
            # The raw JSON: the client's models do not survive every event (a BOOKMARK's object
            # is a bare metadata, left undecoded).
            raw = event.get("raw_object") or {}
            meta = raw.get("metadata") or {}
            version = meta.get("resourceVersion") or version
            if kind == "BOOKMARK" or not meta.get("uid"):
                continue
            phase = None if kind == "DELETED" else ((raw.get("status") or {}).get("phase") or "Pending")
            self._tell(meta["uid"], phase)
        return version

    def read(self, namespace: str, name: str, uid: str) -> str | None:
        """One owner Pod's phase by a GET (blocking: run it in a thread); None when it is gone
        or is another Pod of that name (a new incarnation does not own the claim)."""
        try:
            pod = self._core.read_namespaced_pod(name, namespace, _request_timeout=30)
        except kubernetes.client.ApiException as e:
            if e.status == 404:
                return None
            raise
        if pod.metadata.uid != uid:
            return None
        return (pod.status.phase if pod.status else None) or "Pending"
