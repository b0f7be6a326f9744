"""Configuration of ``gpuvm-operator run``: flags, each with an environment variable.

Environment variables exist because Deployments configure containers that way (a ConfigMap via
``envFrom``); flags win over them. Every value is checked at start-up and a bad one stops the
operator with one readable line instead of a traceback deep in a handler.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from controller.azure_compute import PUBLIC_ARM, AzureSettings
from controller.credentials import CredentialMode, CredentialSettings
from controller.decide import Timing
from controller.engine import EngineSettings
from controller.gpuvm import SUBSCRIPTION_PATTERN
from controller.guard import DEFAULT_MANAGED_TAG, GuardSettings, parse_tag_setting
from controller.pacing import Kind, PacingSettings, Rate

# Azure clouds: ARM endpoint and Entra ID authority host.
CLOUDS: Mapping[str, tuple[str, str]] = {
    "AzureCloud": (PUBLIC_ARM, "https://login.microsoftonline.com"),
    "AzureUSGovernment": ("https://management.usgovcloudapi.net", "https://login.microsoftonline.us"),
    "AzureChinaCloud": ("https://management.chinacloudapi.cn", "https://login.chinacloudapi.cn"),
}


class ConfigError(ValueError):
    """A configuration value the operator cannot start with; the message says which and why."""


@dataclass(frozen=True)
class OperatorConfig:
    azure: AzureSettings = AzureSettings()
    credential: CredentialSettings = CredentialSettings()
    engine: EngineSettings = EngineSettings()
    namespaces: tuple[str, ...] = ()  # empty: all namespaces
    liveness: str | None = None
    kube_server: str | None = None  # an emulator (plain http); otherwise in-cluster or kubeconfig
    kubeconfig: str | None = None
    peering: str | None = None  # None: standalone (one replica)
    priority: int = 0
    status_workers: int = 4
    event_workers: int = 64  # GpuVms (and claims) whose watch events kopf handles at once, at most
    metrics_port: int | None = None
    connect_timeout: float = 30.0  # start-up's wait for the API server; each network step of `check`
    labels: tuple[tuple[str, str | None], ...] = ()  # shard by label: (key, value), value None = present
    log_format: str = "text"

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces

    @property
    def namespace_globs(self) -> bool:
        """Patterns such as ``team-*`` or ``team-*,!team-x`` (kopf's syntax) rather than names."""
        return any(_is_pattern(ns) for ns in self.namespaces)


def _is_pattern(text: str) -> bool:
    return any(c in text for c in "*?[!")


def namespace_entries(values: Sequence[str]) -> tuple[str, ...]:
    """Names stay names ('ml,research' is two of them); kopf patterns stay whole."""
    out: list[str] = []
    for value in values:
        for entry in value.split():
            out.extend([entry] if _is_pattern(entry) else [n for n in entry.split(",") if n])
    return tuple(out)


def _env(env: Mapping[str, str], *names: str) -> str | None:
    return next((env[n] for n in names if env.get(n)), None)


def _number(kind: type[int] | type[float], env_name: str) -> Callable[[str], int | float]:
    """argparse's ``type`` for a number that may come from the flag or from ``env_name``: a bad
    value is one usage error naming both, never a ValueError from building the parser."""

    def parse(text: str) -> int | float:
        try:
            return kind(text)
        except ValueError:
            what = "a whole number" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"{text!r} is not {what} (given by the flag or by {env_name})") from None

    parse.__name__ = kind.__name__
    return parse


def add_run_arguments(parser: argparse.ArgumentParser, env: Mapping[str, str] | None = None) -> None:
    env = os.environ if env is None else env
    azure = parser.add_argument_group("Azure")
    azure.add_argument("--cloud", choices=sorted(CLOUDS), default=_env(env, "GPUVM_CLOUD") or "AzureCloud",
                       help="Azure cloud: sets the ARM endpoint and sign-in authority (env GPUVM_CLOUD)")
    azure.add_argument("--arm-endpoint", default=_env(env, "GPUVM_ARM_ENDPOINT"),
                       help="ARM endpoint, e.g. the simulator's https://127.0.0.1:PORT (env GPUVM_ARM_ENDPOINT)")
    azure.add_argument("--credential-scope", default=_env(env, "GPUVM_CREDENTIAL_SCOPE"),
                       help="token scope; default <ARM endpoint>/.default (env GPUVM_CREDENTIAL_SCOPE)")
    azure.add_argument("--ca-bundle", default=_env(env, "GPUVM_CA_BUNDLE"),
                       help="PEM file of CAs to trust for ARM, e.g. the simulator's CA (env GPUVM_CA_BUNDLE)")
    azure.add_argument("--credential", choices=[m.value for m in CredentialMode],
                       default=_env(env, "GPUVM_CREDENTIAL") or CredentialMode.AUTO.value,
                       help="identity: auto = DefaultAzureCredential (env GPUVM_CREDENTIAL)")
    azure.add_argument("--simulator-token-file", default=_env(env, "GPUVM_SIMULATOR_TOKEN_FILE"),
                       help="file with the simulator's bearer token, for --credential simulator-token")
    azure.add_argument("--subscription-id", default=_env(env, "GPUVM_SUBSCRIPTION_ID", "AZURE_SUBSCRIPTION_ID"),
                       help="default subscription for GpuVms that give resourceGroup+name (env AZURE_SUBSCRIPTION_ID)")
    azure.add_argument("--managed-tag", default=_env(env, "GPUVM_MANAGED_TAG") or "=".join(DEFAULT_MANAGED_TAG),
                       help="opt-in tag a VM must carry, NAME=VALUE, or 'none' to disable the guard (env GPUVM_MANAGED_TAG)")
    azure.add_argument("--cluster-name", default=_env(env, "GPUVM_CLUSTER_NAME"),
                       help="claim driven VMs with the tag gpuvm-owner=NAME and refuse VMs other clusters claimed "
                            "(env GPUVM_CLUSTER_NAME); default: no claims")
    timing = parser.add_argument_group("timing")
    timing.add_argument("--resync-interval", type=_number(float, "GPUVM_RESYNC_SECONDS"),
                        default=_env(env, "GPUVM_RESYNC_SECONDS") or "60",
                        help="seconds between re-observations of settled VMs, to notice drift (env GPUVM_RESYNC_SECONDS)")
    timing.add_argument("--transition-poll", type=_number(float, "GPUVM_TRANSITION_POLL_SECONDS"),
                        default=_env(env, "GPUVM_TRANSITION_POLL_SECONDS") or "10",
                        help="seconds between looks at a VM Azure is transitioning (env GPUVM_TRANSITION_POLL_SECONDS)")
    timing.add_argument("--tag-refresh-interval", type=_number(float, "GPUVM_TAG_REFRESH_SECONDS"),
                        default=_env(env, "GPUVM_TAG_REFRESH_SECONDS") or "300",
                        help="seconds between bulk reads of the VMs' tags (the consent); a power operation on a VM "
                             "whose tags are older than three times this reads them first (env GPUVM_TAG_REFRESH_SECONDS)")
    timing.add_argument("--operation-poll", type=_number(float, "GPUVM_OPERATION_POLL_SECONDS"),
                        default=_env(env, "GPUVM_OPERATION_POLL_SECONDS") or "10",
                        help="seconds between polls of a running operation unless Azure says otherwise")
    timing.add_argument("--capacity-backoff", type=_number(float, "GPUVM_CAPACITY_BACKOFF_SECONDS"),
                        default=_env(env, "GPUVM_CAPACITY_BACKOFF_SECONDS") or "60",
                        help="first back-off after a capacity failure; doubles up to --capacity-backoff-max")
    timing.add_argument("--capacity-backoff-max", type=_number(float, "GPUVM_CAPACITY_BACKOFF_MAX_SECONDS"),
                        default=_env(env, "GPUVM_CAPACITY_BACKOFF_MAX_SECONDS") or "1800")
    timing.add_argument("--error-retry", type=_number(float, "GPUVM_ERROR_RETRY_SECONDS"),
                        default=_env(env, "GPUVM_ERROR_RETRY_SECONDS") or "30",
                        help="seconds before retrying after a 5xx or timeout")
    timing.add_argument("--deallocation-warning", type=_number(float, "GPUVM_DEALLOCATION_WARNING_SECONDS"),
                        default=_env(env, "GPUVM_DEALLOCATION_WARNING_SECONDS") or "300",
                        help="desiredState Auto: seconds before a VM is switched off for lack of demand that a "
                             "DeallocationScheduled Event warns of it (env GPUVM_DEALLOCATION_WARNING_SECONDS)")
    timing.add_argument("--denied-retry", type=_number(float, "GPUVM_DENIED_RETRY_SECONDS"),
                        default=_env(env, "GPUVM_DENIED_RETRY_SECONDS") or "300",
                        help="seconds before looking again after 401/403/404 or a refusal")
    kube = parser.add_argument_group("Kubernetes")
    kube.add_argument("--namespace", action="append", default=None,
                      help="watch only these namespaces: names ('ml,research') or kopf patterns ('team-*,!team-x'); "
                           "repeatable (env GPUVM_NAMESPACES, space-separated); default all")
    kube.add_argument("--all-namespaces", action="store_true", help="watch every namespace (the default)")
    kube.add_argument("--liveness", default=_env(env, "GPUVM_LIVENESS"),
                      help="liveness endpoint, e.g. http://0.0.0.0:8080/healthz (env GPUVM_LIVENESS)")
    kube.add_argument("--kubeconfig", default=_env(env, "KUBECONFIG"), help="kubeconfig outside a cluster")
    kube.add_argument("--kube-server", default=_env(env, "GPUVM_KUBE_SERVER"),
                      help="plain-http API server URL (the emulator); overrides in-cluster config and kubeconfig")
    kube.add_argument("--connect-timeout", type=_number(float, "GPUVM_CONNECT_TIMEOUT_SECONDS"),
                      default=_env(env, "GPUVM_CONNECT_TIMEOUT_SECONDS") or "30",
                      help="seconds start-up waits for the API server before it gives up, and the bound of each network "
                           "step of `check` (env GPUVM_CONNECT_TIMEOUT_SECONDS)")
    kube.add_argument("--peering", default=_env(env, "GPUVM_PEERING"),
                      help="kopf peering name for HA (several replicas, one active); default standalone")
    kube.add_argument("--priority", type=_number(int, "GPUVM_PRIORITY"), default=_env(env, "GPUVM_PRIORITY") or "0",
                      help="this replica's peering priority (the highest active one works)")
    kube.add_argument("--resume-confirm", type=_number(float, "GPUVM_RESUME_CONFIRM_SECONDS"),
                      default=_env(env, "GPUVM_RESUME_CONFIRM_SECONDS") or "30",
                      help="with --peering: seconds after this replica resumes before GpuVms not listed again are "
                           "checked with a GET (deleted during the pause) (env GPUVM_RESUME_CONFIRM_SECONDS)")
    kube.add_argument("--selector", default=_env(env, "GPUVM_SELECTOR"),
                      help="only GpuVms with these labels, e.g. 'shard=a' or 'team=ml,gpu' (env GPUVM_SELECTOR): "
                           "several operators can share a cluster with disjoint selectors")
    scale = parser.add_argument_group("scale")
    scale.add_argument("--max-operations", type=_number(int, "GPUVM_MAX_OPERATIONS"),
                       default=_env(env, "GPUVM_MAX_OPERATIONS") or "1000",
                       help="power operations in flight per subscription at most (env GPUVM_MAX_OPERATIONS)")
    scale.add_argument("--azure-budget-share", type=_number(float, "GPUVM_AZURE_BUDGET_SHARE"),
                       default=_env(env, "GPUVM_AZURE_BUDGET_SHARE") or "0.8",
                       help="share of Azure's documented request budget per subscription this operator keeps to; "
                            "0 disables pacing (env GPUVM_AZURE_BUDGET_SHARE)")
    scale.add_argument("--azure-budget", action="append", metavar="KIND=BURST/PER_SECOND",
                       help="an explicit budget for one kind of request (read, list, poll, write) instead of the share of "
                            "Azure's, e.g. 'write=400/20' where a subscription's limits are known to differ; repeatable "
                            "(env GPUVM_AZURE_BUDGET, space-separated)")
    scale.add_argument("--event-workers", type=_number(int, "GPUVM_EVENT_WORKERS"),
                       default=_env(env, "GPUVM_EVENT_WORKERS") or "64",
                       help="objects whose watch events are handled at once, at most: bounds the memory and the "
                            "API requests of a first adoption or a re-list (env GPUVM_EVENT_WORKERS; docs/install.md)")
    scale.add_argument("--metrics-port", type=_number(int, "GPUVM_METRICS_PORT"),
                       default=_env(env, "GPUVM_METRICS_PORT"),
                       help="serve Prometheus metrics on this port (env GPUVM_METRICS_PORT); default (or 0) off")
    scale.add_argument("--log-format", choices=["text", "json"], default=_env(env, "GPUVM_LOG_FORMAT") or "text",
                       help="log lines as text or as JSON objects (env GPUVM_LOG_FORMAT)")


def parse_selector(text: str | None) -> tuple[tuple[str, str | None], ...]:
    """'shard=a,gpu' -> (('shard', 'a'), ('gpu', None)): equality and existence, as kopf filters."""
    if not text or not text.strip():
        return ()
    out: list[tuple[str, str | None]] = []
    for term in text.split(","):
        key, sep, value = term.strip().partition("=")
        key, value = key.strip(), value.strip()
        if not key or (sep and not value) or not re.fullmatch(r"([a-z0-9.-]+/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?", key):
            raise ConfigError(f"--selector: {term.strip()!r} is not 'key=value' or 'key' with a Kubernetes label key")
        out.append((key, value if sep else None))
    return tuple(out)


def parse_budgets(entries: Sequence[str]) -> tuple[tuple[Kind, Rate], ...]:
    """['write=400/20'] -> ((Kind.WRITE, Rate(400, 20)),); the last entry for a kind wins."""
    out: dict[Kind, Rate] = {}
    for entry in entries:
        name, _, rate = entry.strip().partition("=")
        burst, _, per_second = rate.partition("/")
        try:
            kind, budget = Kind(name.strip().lower()), Rate(float(burst), float(per_second))
        except ValueError:
            raise ConfigError(f"--azure-budget: {entry.strip()!r} is not KIND=BURST/PER_SECOND with KIND one of "
                              f"{', '.join(k.value for k in Kind)}") from None
        if not (budget.burst >= 1 and budget.per_second > 0):
            raise ConfigError(f"--azure-budget: {entry.strip()!r} needs a burst of at least 1 and a positive rate")
        out[kind] = budget
    return tuple(out.items())


def _check_positive(name: str, value: float) -> float:
    if not value > 0:
        raise ConfigError(f"{name} must be a positive number of seconds, got {value}")
    return value


def config_from_args(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> OperatorConfig:
    env = os.environ if env is None else env
    endpoint_default, authority = CLOUDS[args.cloud]
    endpoint = (args.arm_endpoint or endpoint_default).rstrip("/")
    if not endpoint.startswith("https://"):
        raise ConfigError(f"--arm-endpoint must be an https:// URL (bearer tokens are never sent in clear text), got {endpoint}")
    if args.ca_bundle and not os.path.isfile(args.ca_bundle):
        raise ConfigError(f"--ca-bundle file does not exist: {args.ca_bundle}")
    subscription = args.subscription_id
    if subscription and not re.fullmatch(SUBSCRIPTION_PATTERN, subscription):
        raise ConfigError(f"--subscription-id must be a subscription UUID, got {subscription!r}")
    try:
        managed_tag = parse_tag_setting(args.managed_tag)
    except ValueError as e:
        raise ConfigError(f"--managed-tag: {e}") from None
    cluster_name = (args.cluster_name or "").strip() or None
    if cluster_name and len(cluster_name) > 256:
        raise ConfigError(f"--cluster-name is an Azure tag value: at most 256 characters, got {len(cluster_name)}")
    if args.max_operations < 1:
        raise ConfigError(f"--max-operations must be at least 1, got {args.max_operations}")
    max_operations = args.max_operations
    if args.event_workers < 1:
        raise ConfigError(f"--event-workers must be at least 1, got {args.event_workers}")
    budgets = parse_budgets(args.azure_budget or (env.get("GPUVM_AZURE_BUDGET") or "").split())
    metrics_port = args.metrics_port or None  # 0: off, as unset
    if metrics_port is not None and not 0 < metrics_port < 65536:
        raise ConfigError(f"--metrics-port must be a TCP port, got {metrics_port}")
    if args.liveness:
        try:
            liveness = urlsplit(args.liveness)
            liveness.port  # noqa: B018 - raises ValueError on a port that is not one
        except ValueError:
            liveness = None
        if liveness is None or liveness.scheme != "http" or not liveness.hostname:
            raise ConfigError(f"--liveness must be an http:// URL such as http://0.0.0.0:8080/healthz, got {args.liveness}")
    mode = CredentialMode(args.credential)
    token = None
    if args.simulator_token_file:
        try:
            with open(args.simulator_token_file, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as e:
            raise ConfigError(f"--simulator-token-file cannot be read: {e.strerror}: {args.simulator_token_file}") from None
    namespaces = namespace_entries(args.namespace or ())
    if not namespaces and not args.all_namespaces and env.get("GPUVM_NAMESPACES"):
        namespaces = namespace_entries([env["GPUVM_NAMESPACES"]])
    timing = Timing(
        resync=_check_positive("--resync-interval", args.resync_interval),
        transition_poll=_check_positive("--transition-poll", args.transition_poll),
        capacity_backoff_base=_check_positive("--capacity-backoff", args.capacity_backoff),
        capacity_backoff_max=_check_positive("--capacity-backoff-max", args.capacity_backoff_max),
        error_retry=_check_positive("--error-retry", args.error_retry),
        denied_retry=_check_positive("--denied-retry", args.denied_retry),
    )
    return OperatorConfig(
        azure=AzureSettings(
            endpoint=endpoint,
            credential_scope=args.credential_scope,
            ca_bundle=args.ca_bundle,
            credential_mode=mode,
            polling_interval=_check_positive("--operation-poll", args.operation_poll),
            pacing=PacingSettings(share=args.azure_budget_share, max_in_flight=max_operations, rates=budgets),
        ),
        credential=CredentialSettings(
            mode=mode,
            authority_host=authority if args.cloud != "AzureCloud" else None,
            simulator_token=token,
            simulator_token_file=args.simulator_token_file,
        ),
        engine=EngineSettings(
            timing=timing,
            guard=GuardSettings(managed_tag=managed_tag, cluster_name=cluster_name),
            default_subscription=subscription.lower() if subscription else None,
            tag_walk=_check_positive("--tag-refresh-interval", args.tag_refresh_interval),
            resume_confirm=_check_positive("--resume-confirm", args.resume_confirm),
            deallocation_warning=_check_positive("--deallocation-warning", args.deallocation_warning),
            all_claims=not parse_selector(args.selector),
        ),
        namespaces=namespaces,
        liveness=args.liveness,
        kube_server=args.kube_server,
        kubeconfig=args.kubeconfig,
        peering=args.peering,
        priority=args.priority,
        metrics_port=metrics_port,
        event_workers=args.event_workers,
        connect_timeout=_check_positive("--connect-timeout", args.connect_timeout),
        labels=parse_selector(args.selector),
        log_format=args.log_format,
    )


def parse_config(argv: Sequence[str], env: Mapping[str, str] | None = None) -> OperatorConfig:
    """For tests and the demo: the same parsing as the CLI, from a list of flags."""
    parser = argparse.ArgumentParser(prog="gpuvm-operator run", exit_on_error=False)
    add_run_arguments(parser, env)
    return config_from_args(parser.parse_args(list(argv)), env)
