"""Calls to the Kubernetes API that kopf does not make for us: the GpuVm status subresource.

kopf applies patches only when a handler returns, but a GpuVm's status must change while a
start is still running (Starting -> Running minutes later). The official client does that;
being synchronous, it runs in a small thread pool so the operator's loop never blocks on it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import kubernetes

from controller import __version__
from controller.gpuvm import GROUP, PLURAL, VERSION

log = logging.getLogger(__name__)


class KubeWriteError(Exception):
    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(message)
        self.status = status


def load_api_client(*, server: str | None = None, kubeconfig: str | None = None) -> kubernetes.client.ApiClient:
    """In-cluster config when there is one, else kubeconfig; ``server`` alone targets an emulator."""
    if server:
        configuration = kubernetes.client.Configuration()
        configuration.host = server
        return kubernetes.client.ApiClient(configuration)
    configuration = kubernetes.client.Configuration()
    try:
        if kubeconfig:
            raise kubernetes.config.ConfigException("explicit kubeconfig")
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    return kubernetes.client.ApiClient(configuration)


USER_AGENT = f"gpuvm-operator/{__version__}"


@dataclass(frozen=True)
class Stored:
    """What the API server answered a write with: the object's resourceVersion and status."""

    resource_version: str
    status: Mapping[str, Any]


class StatusWriter:
    def __init__(self, api_client: kubernetes.client.ApiClient, *, workers: int = 4) -> None:
        api_client.user_agent = USER_AGENT  # tells the operator's own writes apart in audit logs
        self._api = kubernetes.client.CustomObjectsApi(api_client)
        self._api_client = api_client
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="status")

    async def _call(self, call: Callable[[], Any]) -> Any:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, call)
        except kubernetes.client.ApiException as e:
            raise KubeWriteError(e.status, f"{e.status} {e.reason}: {_status_message(e.body)}") from None
        except Exception as e:  # noqa: BLE001 - urllib3 errors, timeouts
            raise KubeWriteError(None, f"{type(e).__name__}: {e}") from None

    async def replace_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> Stored:
        """Make ``.status`` exactly ``status`` through the status subresource (spec is never
        touched), whatever it held before — a status someone else rewrote included.

        A JSON patch ``add /status`` replaces the whole status in one step, so no stale field of
        an earlier or foreign write survives, and the operator needs no copy of what is stored
        to compute a diff from.
        """

        def call() -> Any:
            return self._api.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, name, [{"op": "add", "path": "/status", "value": dict(status)}],
                _content_type="application/json-patch+json", _request_timeout=30,
            )

        body = await self._call(call)
        metadata = body.get("metadata") or {}
        return Stored(str(metadata.get("resourceVersion") or ""), body.get("status") or {})

    async def exists(self, namespace: str, name: str, uid: str) -> bool:
        """Whether the GpuVm (this incarnation of it) is still stored: after a pause, objects
        deleted meanwhile were never announced."""

        def call() -> Any:
            return self._api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, _request_timeout=30)

        try:
            body = await self._call(call)
        except KubeWriteError as e:
            if e.status == 404:
                return False
            raise
        return (body.get("metadata") or {}).get("uid") == uid

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._api_client.close()


def _status_message(body: Any) -> str:
    import json

    try:
        return str(json.loads(body).get("message", body))
    except (TypeError, ValueError, AttributeError):
        return str(body)[:300]
