"""What the benchmark says to the emulator and the simulator: plain HTTP, as kubectl and curl would.

Everything is bounded: each request has a timeout and every wait a deadline. The watcher keeps
the latest body of every GpuVm and, for each event, the monotonic time it arrived, so that
"status says Running" can be timed without polling the API server.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from controller.gpuvm import GROUP, KIND, PLURAL, VERSION
from testbed import kubectl_apply

Key = tuple[str, str]  # (namespace, name)
Obj = dict[str, Any]

_TIMEOUT = aiohttp.ClientTimeout(total=60, connect=10)


def key_of(obj: Mapping[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return meta.get("namespace", ""), meta.get("name", "")


def ready_of(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return condition
    return None


def settled(obj: Mapping[str, Any]) -> bool:
    """Ready for the object's current generation: what "converged" means everywhere."""
    ready = ready_of(obj)
    status = obj.get("status") or {}
    return bool(ready and ready.get("status") == "True"
                and status.get("observedGeneration") == (obj.get("metadata") or {}).get("generation"))


def converged(obj: Mapping[str, Any], power: str) -> bool:
    return settled(obj) and (obj.get("status") or {}).get("powerState") == power


class KubeApi:
    """GpuVms through the API server's REST API, the emulator's or a real one (what the official
    client would send)."""

    def __init__(self, url: str, *, connections: int = 32, ssl_context: ssl.SSLContext | None = None) -> None:
        """``ssl_context``: for a real API server (its CA, and the admin's client certificate)."""
        self.url = url.rstrip("/")
        self._session = aiohttp.ClientSession(
            timeout=_TIMEOUT,
            connector=aiohttp.TCPConnector(limit=connections, force_close=False,
                                           ssl=ssl_context if ssl_context is not None else True))

    async def close(self) -> None:
        await self._session.close()

    def _path(self, namespace: str | None, name: str | None = None) -> str:
        base = f"{self.url}/apis/{GROUP}/{VERSION}"
        path = f"{base}/namespaces/{namespace}/{PLURAL}" if namespace else f"{base}/{PLURAL}"
        return f"{path}/{name}" if name else path

    async def _json(self, method: str, url: str, body: Any = None, *, content_type: str = "application/json",
                    ok: Iterable[int] = (200, 201)) -> Obj:
        data = None if body is None else json.dumps(body).encode()
        async with self._session.request(method, url, data=data, headers={"Content-Type": content_type}) as r:
            text = await r.text()
            if r.status not in tuple(ok):
                raise RuntimeError(f"{method} {url}: {r.status} {text[:300]}")
            return json.loads(text) if text else {}

    async def request(self, method: str, path: str, body: Any = None, *,
                      content_type: str = "application/json") -> tuple[int, Obj]:
        """Any request (``path`` from the server's root), as (status, body): for drivers that
        decide themselves what a 404 or a 409 means. A ``str`` body is sent as it is."""
        data = body.encode() if isinstance(body, str) else None if body is None else json.dumps(body).encode()
        async with self._session.request(method, self.url + path, data=data, headers={"Content-Type": content_type}) as r:
            text = await r.text()
            try:
                return r.status, (json.loads(text) if text else {})
            except ValueError:
                return r.status, {"text": text[:300]}

    async def create_namespace(self, name: str) -> None:
        await self._json("POST", f"{self.url}/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
                         ok=(201, 409))

    async def apply(self, namespace: str, name: str, spec: Mapping[str, Any], *, labels: Mapping[str, str] | None = None,
                    annotations: Mapping[str, str] | None = None) -> Obj:
        """Create a GpuVm as ``kubectl apply -f`` does: last-applied annotation, ``kubectl-client-side-apply``."""
        manifest = kubectl_apply.manifest(api_version=f"{GROUP}/{VERSION}", kind=KIND, name=name, spec=spec, labels=labels,
                                          annotations=annotations)
        body = kubectl_apply.modified_configuration(manifest, namespace=namespace)
        return await self._json("POST", self._path(namespace) + f"?fieldManager={kubectl_apply.FIELD_MANAGER}", body)

    async def patch_spec(self, namespace: str, name: str, spec: Mapping[str, Any]) -> Obj:
        """``kubectl patch --type merge -p '{"spec": ...}'`` (its field manager is ``kubectl-patch``)."""
        return await self._json("PATCH", self._path(namespace, name) + "?fieldManager=kubectl-patch", {"spec": dict(spec)},
                                content_type="application/merge-patch+json")

    async def list(self, namespace: str | None = None) -> Obj:
        return await self._json("GET", self._path(namespace))

    async def watch_lines(self, resource_version: str) -> aiohttp.ClientResponse:
        params = {"watch": "true", "resourceVersion": resource_version, "allowWatchBookmarks": "true", "timeoutSeconds": "3000"}
        response = await self._session.get(self._path(None), params=params, timeout=aiohttp.ClientTimeout(total=None, sock_read=None))
        if response.status != 200:
            text = await response.text()
            response.release()
            raise RuntimeError(f"watch: {response.status} {text[:300]}")
        return response


async def within(awaitable: Any, timeout: float, what: str) -> Any:
    """``await awaitable`` for at most ``timeout`` seconds (TimeoutError naming ``what``).

    Not ``asyncio.wait_for``: on Python 3.11 it swallows a cancellation that arrives as the
    awaited future completes, and the benchmark must stop at once on Ctrl-C."""
    future = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait({future}, timeout=timeout)
    finally:
        if not future.done():
            future.cancel()
    if not done:
        raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
    return future.result()


async def gather_limited(calls: Iterable[Callable[[], Any]], limit: int) -> list[Any]:
    """Run coroutine factories with at most ``limit`` at once (a fleet of clients, not a stampede)."""
    semaphore = asyncio.Semaphore(limit)

    async def one(call: Callable[[], Any]) -> Any:
        async with semaphore:
            return await call()

    return await asyncio.gather(*(one(c) for c in calls))


@dataclass
class _Expectation:
    key: Key
    predicate: Callable[[Obj], bool]
    future: asyncio.Future[tuple[float, Obj]]


class Watcher:
    """One watch on every GpuVm of the cluster: latest bodies, arrival times, and waits on them."""

    def __init__(self, api: KubeApi) -> None:
        self.api = api
        self.objects: dict[Key, Obj] = {}
        self.events = 0
        self._changed = asyncio.Event()
        self._expectations: list[_Expectation] = []
        self._trackers: list[Tracker] = []
        # Called with (event type, key, body, arrival time) for every event: a driver that keeps
        # a history of each object (the soak) sees every version, not only the latest.
        self.listeners: list[Callable[[str, Key, Obj, float], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._rv = "0"

    async def start(self) -> None:
        listing = await self.api.list()
        for item in listing.get("items", []):
            self.objects[key_of(item)] = item
        self._rv = listing.get("metadata", {}).get("resourceVersion", "0")
        self._task = asyncio.create_task(self._run(), name="watch gpuvms")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                if self._rv == "":
                    await self._relist()
                response = await self.api.watch_lines(self._rv)
                try:
                    async for line in response.content:
                        if line.strip():
                            self._event(time.monotonic(), json.loads(line))
                finally:
                    response.release()
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, RuntimeError, ValueError):
                await asyncio.sleep(0.2)  # the stream ended or broke: resume from the last resourceVersion

    def _event(self, at: float, event: Mapping[str, Any]) -> None:
        kind, obj = event.get("type"), event.get("object") or {}
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if rv:
            self._rv = rv
        if kind == "BOOKMARK":
            return
        if kind == "ERROR":
            self._rv = ""  # expired (410): list again before watching on
            return
        key = key_of(obj)
        self.events += 1
        if kind == "DELETED":
            self.objects.pop(key, None)
        else:
            self.objects[key] = obj
        for tracker in self._trackers:
            tracker.update(key, obj if kind != "DELETED" else None, at)
        for listener in self.listeners:
            listener(str(kind), key, obj, at)
        if self._expectations:
            still = []
            for e in self._expectations:
                if e.future.done():
                    continue
                if e.key == key and kind != "DELETED" and e.predicate(obj):
                    e.future.set_result((at, obj))
                else:
                    still.append(e)
            self._expectations = still
        self._changed.set()

    async def _relist(self) -> None:
        """What an informer does after 410 Gone: list, and take what vanished meanwhile as
        deleted (a watch from "now" would never say so), then watch from the list's version."""
        listing = await self.api.list()
        now = time.monotonic()
        items = {key_of(item): item for item in listing.get("items", [])}
        for key in [k for k in self.objects if k not in items]:
            self._event(now, {"type": "DELETED", "object": self.objects[key]})
        for item in items.values():
            self._event(now, {"type": "MODIFIED", "object": item})
        self._rv = listing.get("metadata", {}).get("resourceVersion", "0")

    def expect(self, key: Key, predicate: Callable[[Obj], bool]) -> asyncio.Future[tuple[float, Obj]]:
        """A future for the first event from now on in which ``key`` satisfies ``predicate``:
        (arrival time, body). Register it before causing the change."""
        future: asyncio.Future[tuple[float, Obj]] = asyncio.get_running_loop().create_future()
        self._expectations.append(_Expectation(key, predicate, future))
        return future

    def track(self, predicate: Callable[[Obj], bool], keys: Iterable[Key] | None = None) -> "Tracker":
        tracker = Tracker(predicate, None if keys is None else set(keys))
        for key, obj in self.objects.items():
            tracker.update(key, obj, None)
        self._trackers.append(tracker)
        return tracker

    def untrack(self, tracker: "Tracker") -> None:
        if tracker in self._trackers:
            self._trackers.remove(tracker)

    async def wait(self, condition: Callable[[], bool], timeout: float, what: str) -> float:
        """Wait until ``condition()`` holds (checked on every event); returns the monotonic time."""
        deadline = time.monotonic() + timeout
        while not condition():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
            self._changed.clear()
            try:
                await within(self._changed.wait(), min(remaining, 1.0), what)
            except TimeoutError:
                pass
        return time.monotonic()


class Tracker:
    """The keys satisfying a predicate right now, and when each first did (arrival time)."""

    def __init__(self, predicate: Callable[[Obj], bool], keys: set[Key] | None) -> None:
        self.predicate = predicate
        self.keys = keys
        self.now: set[Key] = set()
        self.first: dict[Key, float | None] = {}

    def update(self, key: Key, obj: Obj | None, at: float | None) -> None:
        if self.keys is not None and key not in self.keys:
            return
        if obj is not None and self.predicate(obj):
            self.now.add(key)
            self.first.setdefault(key, at)
        else:
            self.now.discard(key)


@dataclass(frozen=True)
class Request:
    """One entry of the simulator's request log (times on the shared monotonic clock)."""

    time: float
    method: str
    path: str
    operation: str
    vm: str | None
    status: int
    principal: str | None = None

    @property
    def subscription(self) -> str:
        parts = self.path.split("/")
        return parts[2].lower() if len(parts) > 2 and parts[1].lower() == "subscriptions" else ""


class SimAdmin:
    """The simulator's admin endpoints (/_sim/…), with its full-access token."""

    def __init__(self, endpoint: str, ca_file: Path, token: str) -> None:
        self.endpoint = endpoint.rstrip("/")
        context = ssl.create_default_context(cafile=str(ca_file))
        self._session = aiohttp.ClientSession(
            timeout=_TIMEOUT, headers={"Authorization": f"Bearer {token}"},
            connector=aiohttp.TCPConnector(ssl=context, limit=4))

    async def close(self) -> None:
        await self._session.close()

    async def send(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """Any admin request (``path`` below /_sim/), as (status, JSON body): out-of-band power
        actions, VM deletion and restore, tags, tokens, faults."""
        async with self._session.request(method, f"{self.endpoint}/_sim/{path}", json=body) as r:
            text = await r.text()
            try:
                return r.status, (json.loads(text) if text else None)
            except ValueError:
                return r.status, text[:300]

    async def log_since(self, seq: int) -> tuple[list[Request], int]:
        """The requests after the ``seq``-th one the simulator recorded, and the ``seq`` to ask
        with next; fewer than ``next - seq`` requests means the log's bound dropped some."""
        async with self._session.get(f"{self.endpoint}/_sim/log", params={"since": str(seq)}) as r:
            if r.status != 200:
                raise RuntimeError(f"GET /_sim/log: {r.status} {(await r.text())[:300]}")
            rows = await r.json()
            total = int(r.headers["X-Sim-Log-Total"])
        return [Request(x["time"], x["method"], x["path"], x["operation"], x["vm"], x["status"], x.get("principal"))
                for x in rows], total

    async def operations(self, since: float | None = None) -> list[dict[str, Any]]:
        """The simulator's power operations (running, or begun or ended since loop time ``since``)."""
        return list(await self._get("operations", **({"since": repr(since)} if since is not None else {})))

    async def _get(self, path: str, **params: str) -> Any:
        async with self._session.get(f"{self.endpoint}/_sim/{path}", params=params) as r:
            if r.status != 200:
                raise RuntimeError(f"GET /_sim/{path}: {r.status} {(await r.text())[:300]}")
            return await r.json()

    async def log(self, limit: int = 10_000) -> list[Request]:
        return [Request(r["time"], r["method"], r["path"], r["operation"], r["vm"], r["status"])
                for r in await self._get("log", limit=str(limit))]

    async def counters(self) -> dict[tuple[str, int], int]:
        return {(c["operation"], c["status"]): c["count"] for c in await self._get("counters")}

    async def overlaps(self) -> int:
        return int((await self._get("overlaps"))["total"])

    async def vms(self) -> list[dict[str, Any]]:
        return list(await self._get("vms"))

    async def unobserved(self) -> list[dict[str, Any]]:
        """Per operation a client asked for: the longest stretch without a request that could tell its state."""
        return list(await self._get("unobserved"))


def count_status(counters: Mapping[tuple[str, int], int], status: int, operation: str | None = None) -> int:
    return sum(n for (op, st), n in counters.items() if st == status and (operation is None or op == operation))
