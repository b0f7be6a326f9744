"""`gpuvm-operator run` configuration: flags, environment, and one readable line for bad input."""

from __future__ import annotations

import pytest

from controller.cli import main
from controller.config import ConfigError, parse_config, parse_selector
from controller.credentials import CredentialMode
from controller.pacing import Kind, Rate

SUB = "3f2c1a7e-0d4b-4c52-9a51-6f0e1d2c3b4a"


def test_defaults() -> None:
    config = parse_config([], env={})
    assert config.azure.endpoint == "https://management.azure.com"
    assert config.azure.scope == "https://management.azure.com/.default"
    assert config.credential.mode is CredentialMode.AUTO
    assert config.clusterwide and not config.namespace_globs
    assert config.engine.guard.managed_tag == ("gpuvm-managed", "true")
    assert config.engine.timing.resync == 60 and config.azure.pacing.max_in_flight == 1000
    assert config.metrics_port is None and config.labels == ()


def test_environment_and_flags() -> None:
    env = {"GPUVM_CLOUD": "AzureUSGovernment", "AZURE_SUBSCRIPTION_ID": SUB.upper(), "GPUVM_NAMESPACES": "ml,research team-*",
           "GPUVM_MANAGED_TAG": "none", "GPUVM_RESYNC_SECONDS": "30", "GPUVM_CREDENTIAL": "workload-identity"}
    config = parse_config(["--resync-interval", "15", "--selector", "shard=a,gpu"], env=env)
    assert config.azure.endpoint == "https://management.usgovcloudapi.net"
    assert config.credential.authority_host == "https://login.microsoftonline.us"
    assert config.engine.default_subscription == SUB
    assert config.namespaces == ("ml", "research", "team-*") and config.namespace_globs
    assert config.engine.guard.managed_tag is None
    assert config.engine.timing.resync == 15  # the flag wins over the environment
    assert config.credential.mode is CredentialMode.WORKLOAD_IDENTITY
    assert config.labels == (("shard", "a"), ("gpu", None))


def test_exact_namespaces_need_no_scanning() -> None:
    config = parse_config(["--namespace", "ml,research", "--namespace", "ops"], env={})
    assert config.namespaces == ("ml", "research", "ops") and not config.namespace_globs
    assert parse_config(["--namespace", "team-*,!team-x"], env={}).namespaces == ("team-*,!team-x",)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--arm-endpoint", "http://127.0.0.1:8443"], "--arm-endpoint must be an https:// URL"),
        (["--ca-bundle", "/nope/ca.pem"], "--ca-bundle file does not exist: /nope/ca.pem"),
        (["--subscription-id", "prod"], "--subscription-id must be a subscription UUID"),
        (["--managed-tag", "gpuvm-managed"], "--managed-tag: expected NAME=VALUE or 'none'"),
        (["--resync-interval", "0"], "--resync-interval must be a positive number of seconds"),
        (["--max-operations", "0"], "--max-operations must be at least 1"),
        (["--selector", "shard="], "--selector: 'shard=' is not 'key=value'"),
        (["--simulator-token-file", "/nope/token"], "--simulator-token-file cannot be read"),
        (["--cluster-name", "x" * 300], "--cluster-name is an Azure tag value: at most 256 characters"),
        (["--azure-budget", "writes=1/1"], "--azure-budget: 'writes=1/1' is not KIND=BURST/PER_SECOND with KIND one of read, list, poll, write"),
        (["--azure-budget", "write=400"], "--azure-budget: 'write=400' is not KIND=BURST/PER_SECOND"),
        (["--azure-budget", "write=0/10"], "--azure-budget: 'write=0/10' needs a burst of at least 1 and a positive rate"),
        (["--connect-timeout", "0"], "--connect-timeout must be a positive number of seconds, got 0.0"),
        (["--liveness", "0.0.0.0:8080"], "--liveness must be an http:// URL such as http://0.0.0.0:8080/healthz"),
        (["--liveness", "http://0.0.0.0:http/healthz"], "--liveness must be an http:// URL"),
        (["--metrics-port", "70000"], "--metrics-port must be a TCP port, got 70000"),
    ],
)
def test_bad_values_are_refused_with_the_flag_named(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("*", r"\*")):
        parse_config(argv, env={})


def test_the_cli_prints_one_line_and_exits_2(capsys) -> None:
    assert main(["run", "--arm-endpoint", "http://x"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "gpuvm-operator run: error: --arm-endpoint must be an https:// URL (bearer tokens are never sent in clear text), got http://x"


def test_explicit_budgets_replace_the_share_for_their_kind() -> None:
    config = parse_config(["--azure-budget", "write=400/20", "--azure-budget", "POLL=50/5"], env={})
    pacing = config.azure.pacing
    assert pacing.rate(Kind.WRITE) == Rate(400, 20) and pacing.rate(Kind.POLL) == Rate(50, 5)
    assert pacing.rate(Kind.READ) == Rate(200, 20)  # the others keep 80 % of Azure's
    from_env = parse_config([], env={"GPUVM_AZURE_BUDGET": "write=1000/100 list=10/1"}).azure.pacing
    assert from_env.rate(Kind.WRITE) == Rate(1000, 100) and from_env.rate(Kind.LIST) == Rate(10, 1)
    assert parse_config(["--azure-budget", "write=9/9"], env={"GPUVM_AZURE_BUDGET": "write=1/1"}).azure.pacing.rate(Kind.WRITE) == Rate(9, 9)


def test_selector_syntax() -> None:
    assert parse_selector(" shard = a , team ") == (("shard", "a"), ("team", None))
    assert parse_selector("") == ()
    with pytest.raises(ConfigError):
        parse_selector("bad key=x")


def test_run_does_not_load_the_simulator_or_the_emulator() -> None:
    """A long-lived operator pod carries only what `run` needs (a fresh interpreter: imports stick)."""
    import subprocess
    import sys

    probe = ("import sys, controller.cli as c\n"
             "try:\n    c.main(['run', '--help'])\nexcept SystemExit:\n    pass\n"
             "print(sorted(m for m in sys.modules if m.startswith(('testbed.azuresim', 'testbed.kubeemu', 'testbed.demo'))))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
    assert "azure-sim" in subprocess.run([sys.executable, "-m", "controller", "--help"], capture_output=True,
                                         text=True, timeout=60).stdout


def test_numbers_from_the_environment_are_checked_like_flags() -> None:
    """A bad number in a ConfigMap is a usage error naming flag and variable, not a ValueError."""
    import argparse

    with pytest.raises(argparse.ArgumentError, match="'soon' is not a number \\(given by the flag or by GPUVM_CONNECT_TIMEOUT_SECONDS\\)"):
        parse_config([], env={"GPUVM_CONNECT_TIMEOUT_SECONDS": "soon"})
    config = parse_config([], env={"GPUVM_CONNECT_TIMEOUT_SECONDS": "7.5", "GPUVM_PRIORITY": "3", "GPUVM_METRICS_PORT": "0"})
    assert (config.connect_timeout, config.priority, config.metrics_port) == (7.5, 3, None)
    assert parse_config(["--metrics-port", "9090"], env={"GPUVM_METRICS_PORT": "0"}).metrics_port == 9090
    assert parse_config([], env={}).connect_timeout == 30
