"""kopf wiring: thin handlers that hand GpuVm events to the engine, and ``gpuvm-operator run``.

Handlers do no reasoning of their own. A watch event updates what the engine knows of a GpuVm
and wakes it; the engine's one scheduler (controller/scheduler.py) runs every reconcile step;
the deletion handler holds the finalizer until the VM is as ``deletionPolicy`` wants.

Only the active replica may act. kopf decides which one that is (peering: the highest priority
wins) but tells nobody when it pauses or resumes a replica; what it does visibly is stop every
daemon on pause and start them again on resume. So with peering, the scheduler runs inside a
single ``@kopf.daemon`` on the peering object itself: kopf stops it within the same bound as any
daemon (``cancellation_backoff`` + ``cancellation_timeout``, 15 s) when a higher-priority peer
appears, and starts it again when this replica resumes (kopf then re-lists every GpuVm, which
wakes them; ones deleted during the pause are confirmed gone by the engine). kopf puts its
finalizer on that peering object, as on anything with a daemon. Standalone, the scheduler runs
from start-up to clean-up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import ctypes
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

import kopf
import kubernetes.client
from azure.core.credentials import AccessToken
from azure.identity import CredentialUnavailableError

from controller.azure_compute import AzureCompute, AzureFailureError
from controller.config import (
    ConfigError,
    OperatorConfig,
    add_run_arguments,
    config_from_args,
)
from controller.credentials import (
    CredentialConfigError,
    build_credential,
    precedence_warning,
)
from controller.demand import CLAIM_PLURAL
from controller.engine import Engine
from controller.gpuvm import GROUP, PLURAL, VERSION
from controller.kube import Connection, StatusWriter, count_objects, list_objects, load_api_client
from controller.metrics import Metrics
from controller.pods import PodPhases

log = logging.getLogger("gpuvm.operator")

FINALIZER = "gpuvm.dev/finalizer"
TRIM_EVERY = 30.0  # seconds between hand-backs of freed heap memory to the OS
WORKER_IDLE = 0.05  # seconds a kopf worker waits for its object's next event before it frees its slot


class _PerEventAtDebug(logging.Filter):
    """kopf logs "Handler '…' succeeded." at INFO after every handler call, so with handlers that
    only hand a watch event to the engine, every watch event was a line: three per GpuVm in a
    first adoption (30,000 for 10,000), more at every re-list of a busy cluster — and nothing in
    them a person acts on. The operator logs what changes something itself (power operations,
    failures, repairs, ownership tags). Those records of the event handlers are DEBUG now, shown
    with --verbose; the deletion handler's, and every failure, stay as kopf logs them."""

    PER_EVENT = ("seen' succeeded.", "claim_seen' succeeded.")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and record.getMessage().endswith(self.PER_EVENT):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


logging.getLogger("kopf.objects").addFilter(_PerEventAtDebug())


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none (musl, macOS)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


async def _trim_memory(every: float) -> None:
    """Hand freed heap memory back to the OS now and then.

    CPython frees objects into glibc's heap, which keeps the pages: after a thousand GpuVms were
    first read, or a burst, the resident size would stay at its peak for the pod's life.
    ``malloc_trim(0)`` also releases free pages inside the heap; with 1,000 settled GpuVms it took
    the operator from 169 to 148 MiB. ctypes releases the GIL for the call and it runs in a
    thread; the loop can only meet glibc's arena lock, held for well under a millisecond here.
    """
    trim = _malloc_trim()
    if trim is None:
        return
    while True:
        await asyncio.sleep(every)
        await asyncio.to_thread(trim, 0)


class _UnusableCredential:
    """Stands in for a credential that could not be built, so every VM reports why."""

    def __init__(self, message: str) -> None:
        self._message = message

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        raise CredentialUnavailableError(message=self._message)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> "_UnusableCredential":
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


class _Never:
    """A ``stopped`` flag that is never set: standalone, the scheduler runs until cancelled."""

    def __bool__(self) -> bool:
        return False

    async def wait(self) -> None:
        await asyncio.Event().wait()


class Operator:
    """What one running operator owns: built at kopf's start-up, closed at its clean-up."""

    def __init__(self, config: OperatorConfig) -> None:
        self.config = config
        self._engine: Engine | None = None
        self._writer: StatusWriter | None = None
        self._credential_check: asyncio.Task[None] | None = None
        self._trimmer: asyncio.Task[None] | None = None
        self._runner: asyncio.Task[None] | None = None
        self._pods: PodPhases | None = None
        self.credential_state = "unchecked"
        self._event_context: contextvars.Context | None = None
        self.metrics = Metrics()
        self.metrics.watch(lambda: self._engine.samples() if self._engine else iter(()))

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise RuntimeError("the operator has not started")
        return self._engine

    async def start(self) -> None:
        """Build the clients and the engine. Fatal problems raise kopf.PermanentError: kopf then
        stops with that message instead of retrying a start that cannot succeed."""
        config = self.config
        if config.metrics_port and not self.metrics.serving:
            try:
                self.metrics.serve(config.metrics_port)
            except OSError as e:
                raise kopf.PermanentError(f"cannot serve metrics on port {config.metrics_port}: {e.strerror}") from None
        warning = precedence_warning(config.credential.mode)
        if warning:
            log.warning("Azure credential: %s", warning)
        try:
            credential: Any = build_credential(config.credential)
        except CredentialConfigError as e:
            credential = _UnusableCredential(str(e))
        azure = AzureCompute(credential, config.azure, metrics=self.metrics)
        self._writer = StatusWriter(
            load_api_client(server=config.kube_server, kubeconfig=config.kubeconfig), workers=config.status_workers
        )
        self._engine = Engine(azure=azure, status=self._writer, settings=config.engine, emit=self.post_event, metrics=self.metrics)
        writer, engine = self._writer, self._engine
        served = () if config.clusterwide or config.namespace_globs else tuple(config.namespaces)
        pods = self._pods = PodPhases(writer.api_client, on_change=engine.pod_changed, namespaces=served)
        conn = Connection(writer.api_client, "the operator's client", config.kube_server or "the API server")

        def list_claims() -> list[dict[str, Any]]:
            return [claim for ns in served or (None,)
                    for claim in list_objects(conn, GROUP, VERSION, CLAIM_PLURAL, namespace=ns, timeout=30)]

        if not config.namespace_globs:  # the claims kopf delivers: all, or those of the named namespaces
            engine.list_claims = lambda: writer.in_thread(list_claims)

        def count_gpuvms() -> int | None:
            counts = [count_objects(conn, GROUP, VERSION, PLURAL, namespace=ns, timeout=30) for ns in served or (None,)]
            return None if None in counts else sum(c for c in counts if c is not None)

        if not config.namespace_globs and not config.labels:  # a count the API server can give for what kopf lists
            engine.fleet.expected = lambda: writer.in_thread(count_gpuvms)
        engine.fleet.announced = lambda: len(engine.tracked)
        engine.book.watched = pods.phases
        engine.read_pod = lambda ns, name, uid: writer.in_thread(lambda: pods.read(ns, name, uid))
        pods.start()
        if config.peering is None:
            self._runner = asyncio.create_task(self._engine.run(_Never()), name="standalone")
        self._credential_check = asyncio.create_task(self._check_credential(azure))
        self._trimmer = asyncio.create_task(_trim_memory(TRIM_EVERY), name="malloc_trim")

    def handled(self) -> None:
        """Called from inside a kopf handler: keep that context for posting Events.

        kopf.event finds kopf's event queue through context variables that kopf sets only while
        it processes an object; the engine's scheduler and operation tasks run outside any
        handler, so they post through a copy of a handler's context.
        """
        if self._event_context is None:
            self._event_context = contextvars.copy_context()

    def post_event(self, ref: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        if self._event_context is None:
            log.debug("event %s %s not posted: no GpuVm handled yet", type_, reason)
            return
        self._event_context.run(kopf.event, dict(ref), type=type_, reason=reason, message=message)

    async def _check_credential(self, azure: AzureCompute) -> None:
        """One token at start-up, one clear log line: ready, or exactly what is missing."""
        mode = self.config.credential.mode.value
        try:
            expires = await azure.check_credential()
        except AzureFailureError as e:
            self.credential_state = e.failure.code
            log.error("Azure credential '%s' is not usable: %s", mode, e.failure.message)
            return
        self.credential_state = "ok"
        log.info(
            "Azure credential '%s' ready: token for %s valid until %s",
            mode,
            self.config.azure.scope,
            expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
        )

    async def stop(self) -> None:
        for task in (self._credential_check, self._trimmer, self._runner):
            if task is not None:
                task.cancel()
        if self._pods is not None:
            self._pods.stop()
        if self._runner is not None:
            await asyncio.gather(self._runner, return_exceptions=True)
        if self._engine is not None:
            await self._engine.close()
            await self._engine.azure.close()
        if self._writer is not None:
            self._writer.close()
        self.metrics.close()

    def health(self) -> dict[str, Any]:
        engine = self._engine
        return {
            "credential": self.credential_state,
            "active": bool(engine and engine.active),
            "gpuvms": len(engine.tracked) if engine else 0,
            "operationsInFlight": sum(1 for s in engine.vms.values() if s.in_flight) if engine else 0,
        }


def _connection_info(c: kubernetes.client.Configuration, *, trust_env: bool) -> kopf.ConnectionInfo:
    """kopf's credentials from a loaded client configuration, read as kopf.login_via_client reads
    the default one (its public result type; the bearer token under BearerToken since client 36)."""
    header = c.get_api_key_with_prefix("BearerToken") or c.get_api_key_with_prefix("authorization")
    scheme, _, token = (header or "").rpartition(" ")
    return kopf.ConnectionInfo(
        server=c.host, ca_path=c.ssl_ca_cert, insecure=not c.verify_ssl, username=c.username or None,
        password=c.password or None, scheme=scheme or None, token=token or None, certificate_path=c.cert_file,
        private_key_path=c.key_file, trust_env=trust_env,
    )


def apply_settings(settings: kopf.OperatorSettings, config: OperatorConfig) -> None:
    """kopf's settings for this operator (a function of its own so tests can check them)."""
    # Progress and diff-base in annotations: a structural schema would prune status.kopf.
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage()
    # Without the spec: nothing here uses kopf's diffs (every step reads the spec afresh), and
    # a copy of a 1 MB spec in an annotation breaks the apiserver's 256 KiB annotation limit.
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(ignored_fields=["spec"])
    # kopf would post an Event for each INFO line of its own; ours are posted explicitly.
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300  # every watch request ends; kopf re-lists/resumes
    settings.watching.client_timeout = 330
    settings.peering.priority = config.priority
    # No CRD/namespace scanning unless namespace globs need it (to learn which namespaces
    # match): discovery finds GpuVms, and it saves cluster-wide list/watch on namespaces.
    settings.scanning.disabled = not config.namespace_globs
    # Memory bounded by design (docs/install.md, "Memory and sizing"): kopf starts a worker per
    # object with queued events and, by default, any number at once; a real API server hands
    # over a whole list and the events of the operator's own writes as fast as they are made,
    # so every GpuVm's handling, its requests and their TLS connections were in flight at once
    # (2.7 GiB for 10,000). At most `event_workers` objects are handled at once, and a worker
    # leaves as soon as its object has nothing queued instead of lingering 5 s in its slot.
    settings.queueing.worker_limit = config.event_workers
    settings.queueing.idle_timeout = WORKER_IDLE


def build_registry(op: Operator) -> kopf.OperatorRegistry:
    """A fresh registry per operator instance (tests and the demo run several in one process)."""
    registry = kopf.OperatorRegistry()
    config = op.config
    # Sharding: several operators can share a cluster with disjoint label selectors; one that
    # does not match a GpuVm never sees it (no daemon, no finalizer, no status writes).
    labels: dict[str, Any] = {key: (kopf.PRESENT if value is None else value) for key, value in config.labels}
    gpuvms = dict(registry=registry, labels=labels or None)

    @kopf.on.startup(registry=registry)
    async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        apply_settings(settings, config)
        await op.start()

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        await op.stop()

    @kopf.on.login(registry=registry)
    def login(settings: kopf.OperatorSettings, **kwargs: Any) -> kopf.ConnectionInfo | None:
        if config.kube_server:
            return kopf.ConnectionInfo(server=config.kube_server, insecure=True)
        if config.kubeconfig:
            # kopf.login_via_client reads only the default kubeconfig (KUBECONFIG as it was when
            # the client library was imported, else ~/.kube/config): with --kubeconfig, kopf would
            # watch another cluster than the one the status writer writes to.
            client = load_api_client(kubeconfig=config.kubeconfig)
            return _connection_info(client.configuration, trust_env=settings.networking.trust_env)
        return kopf.login_via_client(settings=settings, **kwargs)

    @kopf.on.event(GROUP, VERSION, PLURAL, **gpuvms)
    async def seen(event: Mapping[str, Any], body: kopf.Body, **_: Any) -> None:
        # async on purpose: kopf runs sync handlers in threads, and the engine is loop-bound.
        op.handled()
        if event.get("type") == "DELETED":
            op.engine.gone(body.metadata.namespace or "", body.metadata.name or "")
        else:
            op.engine.seen(body)

    # Claims are not sharded by label: each operator answers the claims of the GpuVms it drives
    # (EngineSettings.all_claims). Namespaces are those the operator serves.
    @kopf.on.event(GROUP, VERSION, CLAIM_PLURAL, registry=registry)
    async def claim_seen(event: Mapping[str, Any], body: kopf.Body, **_: Any) -> None:
        op.handled()
        if event.get("type") == "DELETED":
            op.engine.claim_gone(body.metadata.namespace or "", body.metadata.name or "")
        else:
            op.engine.claim_seen(body)

    if config.peering is not None:
        # The active replica's scheduler (see the module docstring). On pause or shutdown kopf
        # sets `stopped`; the scheduler stops starting steps at once and running ones get
        # `cancellation_backoff` seconds to finish before they are cancelled.
        peerings = "clusterkopfpeerings" if config.clusterwide else "kopfpeerings"

        @kopf.daemon("kopf.dev", "v1", peerings, registry=registry, cancellation_backoff=10.0,
                     cancellation_timeout=5.0, field="metadata.name", value=config.peering)
        async def active_replica(stopped: kopf.DaemonStopped, **_: Any) -> None:
            await op.engine.run(stopped)

    @kopf.on.delete(GROUP, VERSION, PLURAL, **gpuvms)
    async def release(body: kopf.Body, **_: Any) -> None:
        if not await op.engine.finalize(body):
            raise kopf.TemporaryError("the VM is not yet as deletionPolicy wants; see the Ready condition", delay=1)

    @kopf.on.probe(id="operator", registry=registry)
    def probe(**_: Any) -> dict[str, Any]:
        return op.health()

    return registry


def run_operator(
    config: OperatorConfig,
    *,
    ready_flag: threading.Event | None = None,
    stop_flag: threading.Event | None = None,
) -> None:
    """Run until stopped (SIGINT/SIGTERM, or ``stop_flag``), in this thread's own event loop."""
    op = Operator(config)

    async def main() -> None:
        # kopf would wait for a threading.Event in an executor thread, which then keeps the
        # loop from ever closing if the operator stops on its own (a failed start-up). A daemon
        # thread relays the flag to an asyncio.Event instead.
        stop_event = asyncio.Event()
        if stop_flag is not None:
            loop = asyncio.get_running_loop()

            def relay() -> None:
                stop_flag.wait()
                with contextlib.suppress(RuntimeError):  # the loop may be gone already
                    loop.call_soon_threadsafe(stop_event.set)

            threading.Thread(target=relay, name="operator-stop-relay", daemon=True).start()
        await kopf.operator(
            registry=build_registry(op),
            standalone=config.peering is None,
            peering_name=config.peering,
            priority=config.priority,
            clusterwide=config.clusterwide,
            namespaces=list(config.namespaces),
            liveness_endpoint=config.liveness,
            ready_flag=ready_flag,
            stop_flag=stop_event if stop_flag is not None else None,
        )

    asyncio.run(main())


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run the operator against a cluster and Azure",
        description="Reconcile GpuVm resources: make each Azure VM's power state match spec.desiredState.",
    )
    add_run_arguments(parser)
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from controller.cli import CliError

    try:
        config = config_from_args(args)
    except ConfigError as e:
        raise CliError(str(e)) from None
    kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat.JSON if config.log_format == "json" else kopf.LogFormat.FULL)
    if not args.verbose:
        # azure-core logs every request and response in eight lines at INFO: at scale, that is
        # most of the log and a good part of the CPU. The operator logs what matters itself.
        logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)
        logging.getLogger("azure.identity").setLevel(logging.WARNING)
    from controller.check import preflight

    preflight(config)  # a start-up mistake ends here: one line, its own exit code (README)
    try:
        run_operator(config)
    except Exception as e:
        reason = startup_failure(e)
        if reason is None:
            raise
        raise CliError(reason, exit_code=1) from None
    return 0


def startup_failure(error: BaseException) -> str | None:
    """The one-line reason when ``error`` is kopf's wrapper of a start-up that cannot succeed."""
    cause = error.__cause__
    return f"start-up failed: {cause}" if isinstance(cause, kopf.PermanentError) else None
