"""The job's side of demand: claim a GpuVm, wait until its VM runs, do the work, let go.

``gpuvm-operator claim GPUVM -- COMMAND …`` (also ``kubectl gpuvm claim``) and the context
manager ``claim(...)`` replace the ``kubectl patch … desiredState`` + ``trap … EXIT`` pattern,
whose switch-off never runs when the job is OOM-killed, preempted or SIGKILLed. A GpuVmClaim
cannot be forgotten that way: it is owned by the job's Pod when the downward API names it
(POD_NAME, POD_UID; Kubernetes garbage collection deletes the claim with the Pod, and the
operator releases it as soon as the Pod has terminated), or else held by a lease this process
renews — if the process dies, the lease lapses and the claim stops counting. It is also deleted
on every way out of here that still runs code.

Only the `kubernetes` client is used (no kopf): this runs inside jobs, with the ``gpuvm-claimer``
role (gpuvmclaims create/get/list/watch/patch/delete, gpuvms get/list/watch) and nothing more.

Exit codes (sysexits.h and timeout(1)/shell conventions, so scripts can tell them apart):
COMMAND's own status (128+N if a signal N killed it); 2 usage; 66 no such GpuVm; 69 Kubernetes
API unreachable; 70 the claim was lost (expired, released or deleted) or the API answered
unexpectedly; 77 not allowed (RBAC); 78 no Kubernetes configuration; 124 not Ready before
--timeout; 126 COMMAND cannot be executed; 127 COMMAND not found; 128+N a signal N ended the
wait before COMMAND ran.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import kubernetes
import urllib3

from controller import __version__
from controller.cli import CliError
from controller.demand import CLAIM_KIND, CLAIM_PLURAL, ClaimPhase, ClaimReason
from controller.gpuvm import GROUP, PLURAL, VERSION, parse_duration
from controller.timestamps import format_time

EXIT_USAGE = 2
EXIT_NOT_FOUND = 66
EXIT_UNREACHABLE = 69
EXIT_LOST = 70
EXIT_NOT_ALLOWED = 77
EXIT_CONFIG = 78
EXIT_TIMEOUT = 124
EXIT_CANNOT_EXECUTE = 126
EXIT_COMMAND_NOT_FOUND = 127

USER_AGENT = f"gpuvm-claim/{__version__}"
DEFAULT_TIMEOUT = dt.timedelta(minutes=20)
DEFAULT_LEASE = dt.timedelta(minutes=2)
_WATCH_SECONDS = 30  # one watch request at most this long; the loop resumes from its resourceVersion
_REQUEST_TIMEOUT = (10, 30)  # connect, read (seconds) for every request that is not a watch
_SA_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


class ClaimError(CliError):
    """A failure of claiming, with its exit code; the message is one readable line."""

    exit_code_default = EXIT_LOST

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message, exit_code=exit_code if exit_code is not None else self.exit_code_default)


class GpuVmNotFound(ClaimError):
    exit_code_default = EXIT_NOT_FOUND


class Unreachable(ClaimError):
    exit_code_default = EXIT_UNREACHABLE


class NotAllowed(ClaimError):
    exit_code_default = EXIT_NOT_ALLOWED


class NoConfiguration(ClaimError):
    exit_code_default = EXIT_CONFIG


class TimedOut(ClaimError):
    exit_code_default = EXIT_TIMEOUT


class ClaimLost(ClaimError):
    exit_code_default = EXIT_LOST


class Interrupted(ClaimError):
    """A signal ended the wait before the work started (128 + the signal, like a shell)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name} before the VM was ready", exit_code=128 + signum)


# ----------------------------------------------------------------------------- talking to the API


def _api_error(e: Exception, *, doing: str, namespace: str) -> ClaimError:
    """One line for anything a request can end with: refused, missing, unreachable, other."""
    if isinstance(e, ClaimError):
        return e
    if isinstance(e, kubernetes.client.ApiException):
        detail = _status_message(e.body) or str(e.reason or "")
        if e.status == 403:
            return NotAllowed(
                f"not allowed to {doing}: {detail} (bind the gpuvm-claimer role to this identity in namespace "
                f"{namespace}, see docs/api.md)"
            )
        if e.status == 401:
            return NotAllowed(f"not authenticated to {doing}: {detail} (check the kubeconfig or ServiceAccount token)")
        return ClaimError(f"could not {doing}: {e.status} {detail}")
    if isinstance(e, (urllib3.exceptions.HTTPError, OSError)):
        reason = getattr(e, "reason", None) or e
        return Unreachable(f"cannot reach the Kubernetes API to {doing}: {reason}")
    return ClaimError(f"could not {doing}: {type(e).__name__}: {e}")


def _status_message(body: Any) -> str:
    try:
        return str(json.loads(body).get("message", ""))
    except (TypeError, ValueError, AttributeError):
        return str(body or "")[:300]


def _call(fn: Callable[[], Any], *, doing: str, namespace: str) -> Any:
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - every failure becomes one line with an exit code
        raise _api_error(e, doing=doing, namespace=namespace) from None


def load_client(*, kubeconfig: str | None = None) -> kubernetes.client.ApiClient:
    """In-cluster configuration in a Pod, else the kubeconfig (KUBECONFIG, ~/.kube/config)."""
    from controller.kube import KubeConfigError, connect

    try:
        api_client = connect(kubeconfig=kubeconfig or os.environ.get("KUBECONFIG") or None).client
    except (KubeConfigError, kubernetes.config.ConfigException, OSError) as e:
        reason = str(e) if str(e).startswith("no Kubernetes configuration") else f"no Kubernetes configuration: {e}"
        raise NoConfiguration(f"{reason}; in a Pod, run with a ServiceAccount bound to gpuvm-claimer") from None
    api_client.user_agent = USER_AGENT
    return api_client


def default_namespace(*, kubeconfig: str | None = None) -> str:
    """POD_NAMESPACE (downward API), the Pod's own namespace, the kubeconfig context's, else default."""
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    if os.environ.get("KUBERNETES_SERVICE_HOST") and os.path.exists(_SA_NAMESPACE):
        with open(_SA_NAMESPACE, encoding="utf-8") as f:
            return f.read().strip() or "default"
    try:
        _, active = kubernetes.config.list_kube_config_contexts(config_file=kubeconfig)
        return (active or {}).get("context", {}).get("namespace") or "default"
    except (kubernetes.config.ConfigException, OSError):
        return "default"


# ----------------------------------------------------------------------------- the claim object


@dataclass(frozen=True)
class OwnerPod:
    """The Pod this process runs in (downward API): the claim's owner."""

    name: str
    uid: str

    @classmethod
    def from_env(cls) -> OwnerPod | None:
        name, uid = os.environ.get("POD_NAME"), os.environ.get("POD_UID")
        return cls(name, uid) if name and uid else None


def claim_body(
    gpu_vm: str, *, owner: OwnerPod | None, lease: dt.timedelta | None, expires_at: dt.datetime | None, now: dt.datetime
) -> dict[str, Any]:
    """The GpuVmClaim to create. ``generateName``: many jobs may claim one GpuVm at once.

    No ``blockOwnerDeletion``: setting it needs update rights on the Pod's finalizers, which a job
    should not have; garbage collection deletes the claim with its Pod without it.
    """
    base = (owner.name if owner else gpu_vm)[:52]
    meta: dict[str, Any] = {"generateName": f"{base}-"}
    if owner:
        meta["ownerReferences"] = [{"apiVersion": "v1", "kind": "Pod", "name": owner.name, "uid": owner.uid}]
    meta["annotations"] = {"gpuvm.dev/claimed-by": f"{USER_AGENT} pid {os.getpid()} on {socket.gethostname()}"[:256]}
    spec: dict[str, Any] = {"gpuVm": gpu_vm}
    if lease is not None:
        spec["leaseDurationSeconds"] = max(1, int(lease.total_seconds()))
        spec["renewTime"] = format_time(now)
    if expires_at is not None:
        spec["expiresAt"] = format_time(expires_at)
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": CLAIM_KIND, "metadata": meta, "spec": spec}


@dataclass(frozen=True)
class ClaimView:
    """What this process knows of its claim: the operator's verdict (None fields: not yet written)."""

    phase: str | None = None
    ready: bool = False
    reason: str | None = None
    message: str | None = None
    deleted: bool = False

    @classmethod
    def of(cls, obj: Any) -> ClaimView:
        status = obj.get("status") if isinstance(obj, dict) and isinstance(obj.get("status"), dict) else {}
        conditions = status.get("conditions") if isinstance(status.get("conditions"), list) else []
        ready = next((c for c in conditions if isinstance(c, dict) and c.get("type") == "Ready"), {})
        return cls(
            phase=status.get("phase") if isinstance(status.get("phase"), str) else None,
            ready=ready.get("status") == "True",
            reason=ready.get("reason") if isinstance(ready.get("reason"), str) else None,
            message=ready.get("message") if isinstance(ready.get("message"), str) else None,
        )

    @property
    def lost(self) -> bool:
        return self.deleted or self.phase in (ClaimPhase.RELEASED.value, ClaimPhase.EXPIRED.value)

    def describe(self) -> str:
        if self.deleted:
            return "the claim was deleted"
        if self.reason is None:
            return "waiting for the operator to bind the claim"
        return f"{self.reason}: {self.message}" if self.message else self.reason


class Progress:
    """One line per change of the claim's Ready reason/message; on a terminal, a spinner and the
    time waited at the end of the current line (never when output goes to a log)."""

    _SPIN = "|/-\\"

    def __init__(self, stream: TextIO | None, prefix: str, *, tty: bool | None = None) -> None:
        self._stream = stream
        self._prefix = prefix
        self._tty = bool(stream is not None and (stream.isatty() if tty is None else tty))
        self._lock = threading.Lock()
        self._text: str | None = None
        self._spin = 0
        self._since = time.monotonic()

    @property
    def spinning(self) -> bool:
        return self._tty

    def update(self, text: str) -> None:
        with self._lock:
            if text == self._text or self._stream is None:
                return
            if self._tty and self._text is not None:
                self._stream.write(f"\r\033[K{self._prefix}{self._text}\n")
            self._text = text
            if self._tty:
                self._draw()
            else:
                self._stream.write(f"{self._prefix}{text}\n")
            self._stream.flush()

    def tick(self) -> None:
        with self._lock:
            if self._tty and self._text is not None and self._stream is not None:
                self._spin += 1
                self._draw()
                self._stream.flush()

    def finish(self) -> None:
        """The wait is over: settle the spinner's line; later changes come as plain lines."""
        with self._lock:
            if self._tty and self._text is not None and self._stream is not None:
                self._stream.write(f"\r\033[K{self._prefix}{self._text}\n")
                self._stream.flush()
            self._tty = False

    def _draw(self) -> None:
        assert self._stream is not None
        waited = int(time.monotonic() - self._since)
        self._stream.write(f"\r\033[K{self._prefix}{self._text} {self._SPIN[self._spin % 4]} {waited // 60}m{waited % 60:02d}s")


class _Keeper(threading.Thread):
    """Follows the claim (watch) and renews its lease, from creation until the claim is let go.

    One thread does both so the number of requests stays bounded: a list, then watch requests
    that last until the next renewal is due (at most 30 s) and resume from the last
    resourceVersion; a 410 or a broken stream is repaired with a list again.
    """

    def __init__(self, *, api: kubernetes.client.CustomObjectsApi, namespace: str, name: str,
                 lease: dt.timedelta | None, progress: Progress) -> None:
        super().__init__(name=f"gpuvm-claim-{name}", daemon=True)
        self._api = api
        self.namespace, self.claim_name = namespace, name
        self._rv: str | None = None  # list, then watch from the list's resourceVersion
        self._lease = lease
        self._progress = progress
        self._stop_flag = threading.Event()
        self.changed = threading.Condition()
        self.view = ClaimView()
        self.error: ClaimError | None = None
        self._next_renew = time.monotonic() + self._renew_every if lease else None

    @property
    def _renew_every(self) -> float:
        assert self._lease is not None
        return max(0.5, self._lease.total_seconds() / 3)

    def stop(self) -> None:
        self._stop_flag.set()

    def run(self) -> None:
        failures = 0
        while not self._stop_flag.is_set():
            try:
                self._renew_if_due()
                self._follow()
                failures = 0
            except Exception as e:  # noqa: BLE001 - reported, then retried at a bounded pace
                failures += 1
                if self._stop_flag.is_set():
                    return
                error = _api_error(e, doing=f"follow claim {self.claim_name}", namespace=self.namespace)
                self._progress.update(f"warning: {error}")
                self._set(error=error)
                # a blip must not end the lease while the work runs: keep trying
                self._stop_flag.wait(min(5.0, 0.5 * 2 ** min(failures, 4)))

    def _renew_if_due(self) -> None:
        if self._next_renew is None or time.monotonic() < self._next_renew:
            return
        patch = {"spec": {"renewTime": format_time(dt.datetime.now(dt.timezone.utc))}}
        try:
            obj = self._api.patch_namespaced_custom_object(
                GROUP, VERSION, self.namespace, CLAIM_PLURAL, self.claim_name, patch, _request_timeout=_REQUEST_TIMEOUT
            )
        except kubernetes.client.ApiException as e:
            if e.status == 404:
                self._set(view=ClaimView(deleted=True))
                self._stop_flag.set()
                return
            raise _api_error(e, doing=f"renew the lease of claim {self.claim_name}", namespace=self.namespace) from None
        except Exception as e:  # noqa: BLE001
            raise _api_error(e, doing=f"renew the lease of claim {self.claim_name}", namespace=self.namespace) from None
        self._next_renew = time.monotonic() + self._renew_every
        self._rv = obj["metadata"].get("resourceVersion", self._rv)
        self._set(view=ClaimView.of(obj), error=None)

    def refresh(self) -> ClaimView:
        """The claim as the API has it now (for the last word on a timeout); the cached view if that fails."""
        try:
            obj = self._api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, CLAIM_PLURAL, self.claim_name,
                                                         _request_timeout=_REQUEST_TIMEOUT)
        except kubernetes.client.ApiException as e:
            return ClaimView(deleted=True) if e.status == 404 else self.view
        except Exception:  # noqa: BLE001 - the cached view is still an answer
            return self.view
        return ClaimView.of(obj)

    def _relist(self) -> None:
        items = _call(
            lambda: self._api.list_namespaced_custom_object(
                GROUP, VERSION, self.namespace, CLAIM_PLURAL, field_selector=f"metadata.name={self.claim_name}",
                _request_timeout=_REQUEST_TIMEOUT,
            ),
            doing=f"list claim {self.claim_name}", namespace=self.namespace,
        )
        self._rv = items["metadata"].get("resourceVersion")
        found = items.get("items") or []
        self._set(view=ClaimView.of(found[0]) if found else ClaimView(deleted=True), error=None)
        if not found:
            self._stop_flag.set()

    def _follow(self) -> None:
        if self._rv is None:
            self._relist()
            if self._stop_flag.is_set():
                return
        seconds = _WATCH_SECONDS
        if self._next_renew is not None:
            seconds = max(1, min(seconds, int(self._next_renew - time.monotonic()) + 1))
        watch = kubernetes.watch.Watch()
        try:
            for event in watch.stream(
                self._api.list_namespaced_custom_object, GROUP, VERSION, self.namespace, CLAIM_PLURAL,
                field_selector=f"metadata.name={self.claim_name}", resource_version=self._rv,
                timeout_seconds=seconds, _request_timeout=(_REQUEST_TIMEOUT[0], seconds + 10),
            ):
                obj = event.get("raw_object") or {}
                if event.get("type") == "BOOKMARK":
                    self._rv = obj.get("metadata", {}).get("resourceVersion", self._rv)
                    continue
                self._rv = obj.get("metadata", {}).get("resourceVersion", self._rv)
                if event.get("type") == "DELETED":
                    self._set(view=ClaimView(deleted=True), error=None)
                    self._stop_flag.set()
                else:
                    self._set(view=ClaimView.of(obj), error=None)
                if self._stop_flag.is_set() or (self._next_renew is not None and time.monotonic() >= self._next_renew):
                    watch.stop()
        except kubernetes.client.ApiException as e:
            if e.status == 410:  # too old: start again from a fresh list
                self._rv = None
                return
            raise _api_error(e, doing=f"watch claim {self.claim_name}", namespace=self.namespace) from None
        except Exception as e:  # noqa: BLE001 - a broken stream: report, then resume from a list
            if self._stop_flag.is_set():
                return
            self._rv = None
            raise _api_error(e, doing=f"watch claim {self.claim_name}", namespace=self.namespace) from None

    def _set(self, *, view: ClaimView | None = None, error: ClaimError | None | type[Ellipsis] = ...) -> None:
        with self.changed:
            if view is not None:
                self.view = view
                # nothing new to say before the operator writes a status; nothing once we let go
                if (view.reason is not None or view.deleted) and not self._stop_flag.is_set():
                    self._progress.update(view.describe())
            if error is not ...:
                self.error = error  # type: ignore[assignment]
            self.changed.notify_all()


@dataclass(frozen=True)
class HeldClaim:
    """The claim while it is held: its name, and what the operator says of it now."""

    namespace: str
    name: str
    gpu_vm: str
    _keeper: _Keeper

    @property
    def view(self) -> ClaimView:
        return self._keeper.view

    @property
    def ready(self) -> bool:
        return self._keeper.view.ready


def _format_duration(delta: dt.timedelta) -> str:
    seconds = int(delta.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return "".join(f"{v}{u}" for v, u in ((hours, "h"), (minutes, "m"), (secs, "s")) if v) or "0s"


_FROM_ENV: Any = object()
_STDERR: Any = object()


@contextlib.contextmanager
def claim(
    gpu_vm: str,
    *,
    namespace: str | None = None,
    timeout: dt.timedelta = DEFAULT_TIMEOUT,
    lease: dt.timedelta | None = None,
    expires_at: dt.datetime | None = None,
    owner: OwnerPod | None = _FROM_ENV,
    api_client: kubernetes.client.ApiClient | None = None,
    kubeconfig: str | None = None,
    progress: TextIO | None = _STDERR,
    while_waiting: Callable[[], None] | None = None,
) -> Iterator[HeldClaim]:
    """Hold a GpuVmClaim on ``gpu_vm`` for the ``with`` block; enter once its VM is running.

    ``owner`` defaults to the Pod named by POD_NAME/POD_UID; without one the claim is held by a
    lease (``lease``, default 2 min, renewed every third of it), which is also used when given
    explicitly. ``progress`` gets one line per change of the claim's Ready reason (default
    stderr; None for silence). Raises a ClaimError subclass (GpuVmNotFound, NotAllowed,
    Unreachable, TimedOut, ClaimLost ...) with ``exit_code`` and a one-line message. The claim is
    deleted when the block ends, however it ends. ``while_waiting`` is called a few times a second
    while the VM starts; what it raises ends the wait (the CLI's signal check).
    """
    if owner is _FROM_ENV:
        owner = OwnerPod.from_env()
    if lease is None and owner is None:
        lease = DEFAULT_LEASE
    own_client = api_client is None
    api_client = api_client or load_client(kubeconfig=kubeconfig)
    ns = namespace or default_namespace(kubeconfig=kubeconfig)
    api = kubernetes.client.CustomObjectsApi(api_client)
    stream = sys.stderr if progress is _STDERR else progress
    printer = Progress(stream, f"gpuvm-claim {gpu_vm}: ")
    keeper: _Keeper | None = None
    name: str | None = None
    try:
        try:
            api.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, gpu_vm, _request_timeout=_REQUEST_TIMEOUT)
        except kubernetes.client.ApiException as e:
            if e.status == 404:
                raise GpuVmNotFound(f"no GpuVm {gpu_vm} in namespace {ns} (kubectl get gpuvms -n {ns} lists them)") from None
            raise _api_error(e, doing=f"read GpuVm {gpu_vm}", namespace=ns) from None
        except Exception as e:  # noqa: BLE001
            raise _api_error(e, doing=f"read GpuVm {gpu_vm}", namespace=ns) from None
        body = claim_body(gpu_vm, owner=owner, lease=lease, expires_at=expires_at, now=dt.datetime.now(dt.timezone.utc))
        created = _call(lambda: api.create_namespaced_custom_object(GROUP, VERSION, ns, CLAIM_PLURAL, body,
                                                                    _request_timeout=_REQUEST_TIMEOUT),
                        doing=f"create a GpuVmClaim for {gpu_vm}", namespace=ns)
        name = created["metadata"]["name"]
        held_by = f"owned by Pod {owner.name}" if owner else ""
        if lease is not None:
            held_by += (" and " if held_by else "") + f"a lease of {_format_duration(lease)}"
        printer.update(f"claim {ns}/{name} created ({held_by}); waiting for the operator to bind it")
        keeper = _Keeper(api=api, namespace=ns, name=name, lease=lease, progress=printer)
        keeper.start()
        _wait_ready(keeper, deadline=time.monotonic() + timeout.total_seconds(), timeout=timeout, gpu_vm=gpu_vm,
                    namespace=ns, printer=printer, tick=while_waiting)
        printer.finish()
        yield HeldClaim(ns, name, gpu_vm, keeper)
    finally:
        printer.finish()
        if keeper is not None:
            keeper.stop()
        if name is not None:
            _delete(api, ns, name, stream=stream)
        if own_client:
            api_client.close()


def _wait_ready(keeper: _Keeper, *, deadline: float, timeout: dt.timedelta, gpu_vm: str, namespace: str,
                printer: Progress, tick: Callable[[], None] | None) -> None:
    with keeper.changed:
        while True:
            view, error = keeper.view, keeper.error
            if view.ready:
                return
            if view.reason == ClaimReason.GPUVM_NOT_FOUND.value:
                raise GpuVmNotFound(f"no GpuVm {gpu_vm} in namespace {namespace} (it was deleted?): {view.message}")
            if view.lost:
                raise ClaimLost(f"the claim ended before the VM was ready: {view.describe()}")
            if error is not None and isinstance(error, (NotAllowed, GpuVmNotFound)):
                raise error
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if error is not None:
                    raise error
                view = keeper.refresh()
                if view.ready:
                    return
                raise TimedOut(f"GpuVm {gpu_vm} not ready within {_format_duration(timeout)}; last: {view.describe()}")
            keeper.changed.wait(min(remaining, 0.1 if printer.spinning else 0.25))
            if tick is not None:
                tick()
            printer.tick()


def _delete(api: kubernetes.client.CustomObjectsApi, namespace: str, name: str, *, stream: TextIO | None) -> None:
    try:
        api.delete_namespaced_custom_object(GROUP, VERSION, namespace, CLAIM_PLURAL, name, _request_timeout=_REQUEST_TIMEOUT)
    except kubernetes.client.ApiException as e:
        if e.status == 404:
            return
        _warn(stream, f"could not delete claim {namespace}/{name}: {_api_error(e, doing='delete it', namespace=namespace)}")
    except Exception as e:  # noqa: BLE001 - the way out must not fail; the lease or owner ends the claim
        _warn(stream, f"could not delete claim {namespace}/{name}: {_api_error(e, doing='delete it', namespace=namespace)}; "
                      "it stops counting when its lease lapses or its Pod ends")


def _warn(stream: TextIO | None, line: str) -> None:
    if stream is not None:
        stream.write(f"gpuvm-claim: warning: {line}\n")
        stream.flush()


# ----------------------------------------------------------------------------- the command line


def _duration(value: str) -> dt.timedelta:
    parsed = parse_duration(value)
    if parsed is None:
        raise argparse.ArgumentTypeError(f"{value!r} is not a duration like 20m, 90s or 1h30m")
    return parsed


EPILOG = """\
exit status: COMMAND's (128+N if signal N killed it); 2 usage; 66 no such GpuVm; 69 Kubernetes
API unreachable; 70 claim lost or unexpected API answer; 77 not allowed (RBAC: bind gpuvm-claimer);
78 no Kubernetes configuration; 124 VM not ready within --timeout; 126 COMMAND not executable;
127 COMMAND not found; 128+N interrupted by signal N before COMMAND ran.
"""


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "claim",
        usage="%(prog)s [-h] [-n NAMESPACE] [--timeout DURATION] [--lease DURATION] [--kubeconfig FILE] GPUVM -- COMMAND ...",
        help="hold a GpuVmClaim while COMMAND runs (starts the VM of a GpuVm in Auto, lets it go after)",
        description=(
            "Claim GPUVM, wait until its VM is running (progress on stderr), run COMMAND, forward "
            "SIGINT/SIGTERM/SIGHUP to it, delete the claim and exit with COMMAND's status. In a Pod with "
            "POD_NAME and POD_UID from the downward API the claim is owned by the Pod; otherwise it is held "
            "by a lease this process renews."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("gpuvm", metavar="GPUVM", help="the GpuVm to claim (in the namespace)")
    p.add_argument("-n", "--namespace", help="namespace (default: POD_NAMESPACE, the Pod's, the kubeconfig context's)")
    p.add_argument("--timeout", type=_duration, default=DEFAULT_TIMEOUT, metavar="DURATION",
                   help="how long to wait for the VM (default 20m)")
    p.add_argument("--lease", type=_duration, default=None, metavar="DURATION",
                   help="hold the claim by a lease renewed every third of it (default 2m when no Pod owns the claim)")
    p.add_argument("--kubeconfig", metavar="FILE", help="kubeconfig file (default: in-cluster, then KUBECONFIG, ~/.kube/config)")
    p.set_defaults(func=run_claim_command, parser=p, takes_trailing=True)


def run_claim_command(args: argparse.Namespace) -> int:
    command = args.trailing
    if not command:
        args.parser.error("give the COMMAND to run after --, e.g. claim a100 -- python train.py")
    if args.lease is not None and args.lease.total_seconds() < 1:
        args.parser.error("--lease must be at least 1s")
    with _Signals() as signals:
        with claim(args.gpuvm, namespace=args.namespace, timeout=args.timeout, lease=args.lease,
                   kubeconfig=args.kubeconfig, while_waiting=signals.check) as held:
            return _run(command, signals, held)


def _run(command: Sequence[str], signals: _Signals, held: HeldClaim) -> int:
    try:
        child = subprocess.Popen(list(command))
    except FileNotFoundError:
        raise ClaimError(f"{command[0]}: command not found", exit_code=EXIT_COMMAND_NOT_FOUND) from None
    except PermissionError:
        raise ClaimError(f"{command[0]}: cannot execute (permission denied)", exit_code=EXIT_CANNOT_EXECUTE) from None
    except OSError as e:
        raise ClaimError(f"{command[0]}: cannot execute: {e.strerror}", exit_code=EXIT_CANNOT_EXECUTE) from None
    signals.forward_to(child)
    code = child.wait()
    signals.forward_to(None)
    return 128 - code if code < 0 else code


class _Signals:
    """SIGINT/SIGTERM/SIGHUP: before COMMAND runs they end the wait (the claim is deleted, exit
    128+N); while it runs they are passed on to it, and its exit decides ours.

    The handler itself never raises: an exception thrown into whatever the main thread is doing
    (a request, the claim's deletion on the way out) could leave the claim behind. The wait loop
    looks at the pending signal four times a second instead. A SIGINT from the terminal already
    reaches COMMAND (same foreground process group), so it is not sent twice then.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self._child: subprocess.Popen[Any] | None = None
        self._pending: int | None = None
        self._saved: dict[int, Any] = {}

    def __enter__(self) -> _Signals:
        for sig in self.SIGNALS:
            self._saved[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)

    def forward_to(self, child: subprocess.Popen[Any] | None) -> None:
        self._child = child
        pending, self._pending = self._pending, None
        if child is not None and pending is not None:  # arrived between Ready and the start of COMMAND
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(pending)

    def check(self) -> None:
        if self._pending is not None:
            raise Interrupted(self._pending)

    def _handle(self, signum: int, frame: Any) -> None:
        child = self._child
        if child is None:
            self._pending = signum
            return
        if signum == signal.SIGINT and _terminal_sent_it():
            return
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)


def _terminal_sent_it() -> bool:
    """We are in the foreground process group of a terminal: Ctrl-C reached COMMAND too."""
    for fd in (0, 1, 2):
        try:
            if os.isatty(fd) and os.tcgetpgrp(fd) == os.getpgrp():
                return True
        except OSError:
            continue
    return False


def kubectl_plugin() -> int:
    """``kubectl gpuvm …``: kubectl runs ``kubectl-gpuvm`` from PATH (the plugin convention)."""
    from controller.cli import main

    return main(prog="kubectl gpuvm", commands={"claim": __name__, "check": "controller.check"})
