"""The operator's own Kubernetes client: status writes kopf does not do for us, the reads of
``gpuvm-operator check`` and the start-up pre-flight, and the list of requests the operator makes.

kopf applies patches only when a handler returns, but a GpuVm's status must change while a
start is still running (Starting -> Running minutes later). The official client does that;
being synchronous, it runs in a small thread pool so the operator's loop never blocks on it.
Every failure leaves this module as one readable line (``KubeConfigError``, ``KubeCallError``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import kubernetes
import yaml

from controller import __version__
from controller.gpuvm import GROUP, PLURAL, VERSION

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class KubeAccess:
    """One kind of request the operator makes, as RBAC sees it (verb, group, resource, ...)."""

    verb: str
    group: str
    resource: str
    subresource: str = ""
    name: str = ""
    why: str = ""

    def __str__(self) -> str:
        resource = self.resource + (f"/{self.subresource}" if self.subresource else "")
        return f"{self.verb} {self.group or 'core'}/{resource}" + (f" {self.name}" if self.name else "")


# Every kind of request the running operator makes in a namespace it serves. tests/deploy/
# test_rbac.py records the real operator's requests and holds them equal to this list, and the
# shipped RBAC to those requests; `gpuvm-operator check` asks the API server for exactly these.
OPERATOR_ACCESS: tuple[KubeAccess, ...] = (
    KubeAccess("list", GROUP, PLURAL, why="kopf's watch starts with a list"),
    KubeAccess("watch", GROUP, PLURAL, why="kopf's watch stream"),
    KubeAccess("patch", GROUP, PLURAL, why="kopf: the finalizer and its progress annotations"),
    KubeAccess("patch", GROUP, PLURAL, "status", why="the operator's status writer"),
    KubeAccess("create", "", "events", why="kopf posts the operator's Events"),
    KubeAccess("list", GROUP, "gpuvmclaims", why="kopf's watch of the claims starts with a list"),
    KubeAccess("watch", GROUP, "gpuvmclaims", why="kopf's watch of the claims"),
    KubeAccess("patch", GROUP, "gpuvmclaims", "status", why="each claim's phase and Ready condition"),
    KubeAccess("list", "", "pods", why="the watch of claimant Pods (label gpuvm.dev/claimant=true) starts with a list"),
    KubeAccess("watch", "", "pods", why="the watch of claimant Pods: a finished owner releases its claims"),
    KubeAccess("get", "", "pods", why="owner Pods without the claimant label, read one by one"),
)


def peering_access(name: str, *, clusterwide: bool) -> tuple[KubeAccess, ...]:
    """What kopf peering (HA) adds: it watches the peerings and patches its entry into its own."""
    resource = "clusterkopfpeerings" if clusterwide else "kopfpeerings"
    return (
        KubeAccess("list", "kopf.dev", resource, why="kopf peering"),
        KubeAccess("watch", "kopf.dev", resource, why="kopf peering"),
        KubeAccess("patch", "kopf.dev", resource, name=name, why="kopf peering: this replica's entry, and the finalizer of the scheduler's daemon"),
        KubeAccess("get", GROUP, PLURAL, why="a resumed replica asks about GpuVms deleted while it was paused"),
    )


# With namespace patterns (team-*), kopf lists and watches namespaces to learn which match.
NAMESPACE_SCAN_ACCESS: tuple[KubeAccess, ...] = (
    KubeAccess("list", "", "namespaces", why="kopf: which namespaces match the patterns"),
    KubeAccess("watch", "", "namespaces", why="kopf: which namespaces match the patterns"),
)


class KubeWriteError(Exception):
    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(message)
        self.status = status


class KubeConfigError(Exception):
    """No usable Kubernetes configuration; the message names what was tried and why it failed."""


class KubeCallError(Exception):
    """A request that failed: ``status`` is the HTTP status, None when no answer came."""

    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Connection:
    client: kubernetes.client.ApiClient
    source: str  # where the configuration came from, for people: "kubeconfig ~/.kube/config (context dev)"
    server: str


def connect(*, server: str | None = None, kubeconfig: str | None = None, retries: int | None = None) -> Connection:
    """In-cluster config when there is one, else kubeconfig; ``server`` alone targets an emulator.

    ``retries`` (urllib3's, per request) is 0 for callers that bound their own waiting.
    Raises KubeConfigError with one line saying what is missing.
    """
    configuration = kubernetes.client.Configuration()
    if server:
        configuration.host = server
        source = f"--kube-server {server}"
    elif kubeconfig:
        source = _load_kubeconfig(kubeconfig, configuration)
    else:
        try:
            kubernetes.config.load_incluster_config(client_configuration=configuration)
            source = "in-cluster ServiceAccount"
        except kubernetes.config.ConfigException as e:
            default = os.path.expanduser(kubernetes.config.KUBE_CONFIG_DEFAULT_LOCATION)
            if not os.path.exists(default):
                raise KubeConfigError(
                    f"no Kubernetes configuration: not in a cluster ({_one_line(str(e))}) and {default} "
                    "does not exist; set KUBECONFIG or --kubeconfig to a kubeconfig file"
                ) from None
            source = _load_kubeconfig(default, configuration)
    if retries is not None:
        configuration.retries = retries
    return Connection(kubernetes.client.ApiClient(configuration), source, configuration.host)


def _load_kubeconfig(path: str, configuration: kubernetes.client.Configuration) -> str:
    files = [p for p in path.split(os.pathsep) if p]
    if not any(os.path.isfile(p) for p in files):
        listed = ", ".join(files) or repr(path)
        raise KubeConfigError(f"kubeconfig {listed} does not exist (from --kubeconfig or KUBECONFIG)")
    try:
        kubernetes.config.load_kube_config(config_file=path, client_configuration=configuration)
        _, active = kubernetes.config.list_kube_config_contexts(config_file=path)
    except yaml.YAMLError as e:
        raise KubeConfigError(f"kubeconfig {path} is not valid YAML: {_one_line(str(e))}") from None
    except Exception as e:  # noqa: BLE001 - ConfigException, exec plugins, unreadable files: one line each
        raise KubeConfigError(f"kubeconfig {path} is not usable: {_one_line(str(e) or type(e).__name__)}") from None
    return f"kubeconfig {path} (context {active.get('name', '?')})"


def load_api_client(*, server: str | None = None, kubeconfig: str | None = None) -> kubernetes.client.ApiClient:
    return connect(server=server, kubeconfig=kubeconfig).client


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

    async def replace_status(self, namespace: str, name: str, status: Mapping[str, Any], *, plural: str = PLURAL) -> Stored:
        """Make ``.status`` exactly ``status`` through the status subresource (spec is never
        touched), whatever it held before — a status someone else rewrote included.

        A JSON patch ``add /status`` replaces the whole status in one step, so no stale field of
        an earlier or foreign write survives, and the operator needs no copy of what is stored
        to compute a diff from.
        """

        def call() -> Any:
            return self._api.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, plural, name, [{"op": "add", "path": "/status", "value": dict(status)}],
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

    async def stored(self, namespace: str, name: str) -> bool:
        """Whether a GpuVm of that name is stored (a claim may be announced before its GpuVm).
        A list narrowed to the name, not a GET: the shipped role grants GpuVms list and watch,
        and get only to HA replicas."""

        def call() -> Any:
            return self._api.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, limit=1,
                                                           field_selector=f"metadata.name={name}", _request_timeout=30)

        body = await self._call(call)
        return bool(body.get("items"))

    async def in_thread(self, call: Callable[[], T]) -> T:
        """A blocking read of this client's (an owner Pod's phase) in the writer's thread pool."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    @property
    def api_client(self) -> kubernetes.client.ApiClient:
        return self._api_client

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._api_client.close()


def _status_message(body: Any) -> str:
    try:
        return str(json.loads(body).get("message", body))
    except (TypeError, ValueError, AttributeError):
        return str(body)[:300]


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\")]+)")


def _network_reason(exc: BaseException) -> str:
    """urllib3's nested wrappers -> what went wrong on the wire, in a few words."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = getattr(current, "reason", None) or current.__cause__ or current.__context__
        if not isinstance(current, BaseException):
            current = None
    text = " ".join(str(e) for e in seen)
    if any("timed out" in str(e).lower() or isinstance(e, TimeoutError) for e in seen):
        return "no answer in time"
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        return "TLS certificate verify failed (the kubeconfig's certificate-authority-data does not match the server)"
    match = _ERRNO.search(text)
    if match:
        return match.group(1).strip().lower()
    return _one_line(str(seen[-1]) or type(seen[-1]).__name__, 200)


def call(fn: Callable[[], T], *, server: str) -> T:
    """Run one client request; every failure becomes a KubeCallError with one readable line."""
    try:
        return fn()
    except kubernetes.client.ApiException as e:
        raise KubeCallError(e.status, f"{e.status} {e.reason}: {_status_message(e.body)}") from None
    except Exception as e:  # noqa: BLE001 - urllib3 errors, timeouts, TLS
        raise KubeCallError(None, f"cannot reach the API server at {server}: {_network_reason(e)}") from None


def request(conn: Connection, method: Callable[..., Any], *args: Any, timeout: float, **kwargs: Any) -> Any:
    """One request through a generated API method, bounded by ``timeout``: its JSON body.
    The raw body, not the client's models: a CRD is compared with the shipped file as it is."""
    def send() -> Any:
        return json.loads(method(*args, _preload_content=False, _request_timeout=timeout, **kwargs).data or b"null")

    return call(send, server=conn.server)


def _absent_on_404(fn: Callable[[], T]) -> T | None:
    try:
        return fn()
    except KubeCallError as e:
        if e.status == 404:
            return None
        raise


def server_version(conn: Connection, *, timeout: float) -> str:
    """The API server's gitVersion, e.g. v1.36.0: the cheapest request every identity may make."""
    return request(conn, kubernetes.client.VersionApi(conn.client).get_code, timeout=timeout)["gitVersion"]


def served_resources(conn: Connection, group: str, version: str, *, timeout: float) -> set[str] | None:
    """Discovery: the resources served at group/version, or None when it is not served at all.
    Every authenticated identity may read discovery (system:discovery)."""
    api = kubernetes.client.CustomObjectsApi(conn.client)
    body = _absent_on_404(lambda: request(conn, api.get_api_resources, group, version, timeout=timeout))
    return None if body is None else {r["name"] for r in body.get("resources") or []}


def served_versions(conn: Connection, group: str, *, timeout: float) -> list[str]:
    """Discovery: the versions of ``group`` the API server serves (none when it serves no such group)."""
    body = request(conn, kubernetes.client.ApisApi(conn.client).get_api_versions, timeout=timeout)
    found = [g for g in body.get("groups") or [] if g.get("name") == group]
    return [v["version"] for v in found[0].get("versions") or []] if found else []


def read_crd(conn: Connection, name: str, *, timeout: float) -> dict[str, Any] | None:
    """The installed CustomResourceDefinition as the API server serves it, or None if absent."""
    api = kubernetes.client.ApiextensionsV1Api(conn.client)
    return _absent_on_404(lambda: request(conn, api.read_custom_resource_definition, name, timeout=timeout))


def access_allowed(conn: Connection, access: KubeAccess, namespace: str, *, timeout: float) -> bool:
    """A SelfSubjectAccessReview: may this identity make ``access`` in ``namespace`` ("" = all)?"""
    attributes = {"verb": access.verb, "group": access.group, "resource": access.resource}
    for key, value in (("subresource", access.subresource), ("name", access.name), ("namespace", namespace)):
        if value:
            attributes[key] = value
    body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attributes}}
    api = kubernetes.client.AuthorizationV1Api(conn.client)
    review = request(conn, api.create_self_subject_access_review, body, timeout=timeout)
    return bool((review.get("status") or {}).get("allowed"))


def whoami(conn: Connection, *, timeout: float) -> str | None:
    """The identity's user name (a SelfSubjectReview), or None where the server does not tell."""
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    api = kubernetes.client.AuthenticationV1Api(conn.client)
    try:
        review = request(conn, api.create_self_subject_review, body, timeout=timeout)
    except KubeCallError:
        return None
    return ((review.get("status") or {}).get("userInfo") or {}).get("username")


_MAX_PAGES = 1000  # 500 objects a page: half a million objects at most


def list_page(
    conn: Connection, group: str, version: str, plural: str, *,
    namespace: str | None, timeout: float, limit: int, continue_: str = "", label_selector: str = "",
    field_selector: str = "",
) -> dict[str, Any]:
    """One page of a custom resource's list in ``namespace`` (None: all); ``continue_`` is the
    previous page's ``metadata.continue`` (the generated client's keyword is ``_continue``)."""
    api = kubernetes.client.CustomObjectsApi(conn.client)
    options: dict[str, Any] = {"limit": limit}
    for key, value in (("label_selector", label_selector), ("field_selector", field_selector), ("_continue", continue_)):
        if value:
            options[key] = value
    if namespace is None:
        return request(conn, api.list_cluster_custom_object, group, version, plural, timeout=timeout, **options)
    return request(conn, api.list_namespaced_custom_object, group, version, namespace, plural, timeout=timeout, **options)


def count_objects(
    conn: Connection, group: str, version: str, plural: str, *, namespace: str | None, timeout: float,
) -> int | None:
    """How many objects of a custom resource ``namespace`` (None: all) holds, from a one-item page:
    the API server says how many more there are (``remainingItemCount``) for lists without
    selectors. None where it does not say."""
    page = list_page(conn, group, version, plural, namespace=namespace, timeout=timeout, limit=1)
    meta = page.get("metadata") or {}
    items = len(page.get("items") or [])
    if not meta.get("continue"):
        return items
    remaining = meta.get("remainingItemCount")
    return items + int(remaining) if isinstance(remaining, int) else None


def list_objects(
    conn: Connection, group: str, version: str, plural: str, *,
    namespace: str | None, timeout: float, label_selector: str = "", field_selector: str = "", limit: int = 500,
) -> list[dict[str, Any]]:
    """Every object of a custom resource in ``namespace`` (None: all), page by page, bounded."""
    items: list[dict[str, Any]] = []
    following = ""
    for _ in range(_MAX_PAGES):
        page = list_page(conn, group, version, plural, namespace=namespace, timeout=timeout, limit=limit,
                         continue_=following, label_selector=label_selector, field_selector=field_selector)
        items.extend(page.get("items") or [])
        following = (page.get("metadata") or {}).get("continue") or ""
        if not following:
            return items
    raise KubeCallError(None, f"more than {_MAX_PAGES} pages of {plural}; stopped there")


def list_namespaces(conn: Connection, *, timeout: float) -> list[str]:
    body = request(conn, kubernetes.client.CoreV1Api(conn.client).list_namespace, timeout=timeout)
    return [item["metadata"]["name"] for item in body.get("items") or []]
