"""No credential, token or secret value is ever logged, or written to status or events."""

from __future__ import annotations

import json
import logging

import pytest

from testbed.azuresim import SimulatorConfig
from tests.integration.conftest import FAST, Azure, Cluster, replace_flag, vm_id

TOKEN = "tok-4f1c9e-NEVER-LOGGED-8b2d"
CLIENT_SECRET = "sec-77aa31-NEVER-LOGGED-c0de"
MARKERS = (TOKEN, CLIENT_SECRET, "NEVER-LOGGED")


@pytest.fixture
def azure_config() -> SimulatorConfig:
    return SimulatorConfig(timings=FAST, retry_after=0.05, token=TOKEN)


HTTP_LOG = ("azure.core.pipeline.policies.http_logging_policy",)
OPERATOR_LOGS = ("controller.", "gpuvm.")  # the operator's own loggers


def logged_by(records: list[logging.LogRecord], loggers: tuple[str, ...], *words: str) -> bool:
    """A record of one of ``loggers`` (a name or a prefix) says all of ``words``. A check of what
    the capture holds that almost any line meets (a word like "gpuvm") would still pass with the
    operator's own logs, or the SDK's request logging, gone somewhere the capture does not see."""
    return any(r.name.startswith(loggers) and all(w in r.getMessage() for w in words) for r in records)


def everything_written(cluster: Cluster, names: list[str]) -> str:
    objects = [cluster.get(n) for n in names]
    events = [e for n in names for e in cluster.events(n)]
    return json.dumps(objects) + json.dumps(events)


def test_tokens_and_secrets_stay_out_of_logs_status_and_events(
    cluster: Cluster, azure: Azure, start_operator, operator_flags, caplog, monkeypatch
) -> None:
    caplog.set_level(logging.DEBUG)  # everything, the Azure SDK's HTTP logging included ...
    caplog.set_level(logging.DEBUG, logger="azure")  # ... even if something before set its loggers' own levels
    # 1. A working bearer token, through every kind of call and failure.
    first = start_operator(["--cluster-name", "aks-test"])
    azure.fault("op=start vm=vm-3 error=AllocationFailed times=1")
    # 1 + 3 retries of azure-core: all four attempts fail, so the operator sees (and reports) the 500.
    azure.fault("kind=http op=deallocate vm=vm-running status=500 error=InternalServerError times=4")
    cluster.create("ok", {"vm": {"resourceId": vm_id("vm-1")}, "desiredState": "Running"})
    cluster.create("capacity", {"vm": {"resourceId": vm_id("vm-3")}, "desiredState": "Running"})
    cluster.create("flaky", {"vm": {"resourceId": vm_id("vm-running")}, "desiredState": "Deallocated"})
    cluster.create("ghost", {"vm": {"resourceGroup": "rg-gpu", "name": "vm-404"}, "desiredState": "Running"})
    for name in ("ok", "capacity", "flaky"):
        cluster.wait_reason(name, "Reconciled")
    cluster.wait_reason("ghost", "VmNotFound")
    # Events arrive after the status they go with: wait for those carrying Azure's failure texts.
    cluster.wait_events("ok", "StartRequested", "Started")
    cluster.wait_events("capacity", "StartFailed", "Started")
    cluster.wait_events("flaky", "DeallocateFailed", "Deallocated")
    first.stop()
    # 2. A service principal whose secret Entra ID refuses (the sign-in goes to a closed port on
    #    loopback: the secret is offered, nothing answers) and a wrong bearer token.
    monkeypatch.setenv("AZURE_TENANT_ID", "00000000-0000-0000-0000-00000000beef")
    monkeypatch.setenv("AZURE_CLIENT_ID", "00000000-0000-0000-0000-00000000cafe")
    monkeypatch.setenv("AZURE_CLIENT_SECRET", CLIENT_SECRET)
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", "https://127.0.0.1:9")
    start_operator(flags=replace_flag(operator_flags, "--credential", "environment"))
    cluster.create("sp", {"vm": {"resourceId": vm_id("vm-4")}, "desiredState": "Running"})
    cluster.wait_reason("sp", "AuthenticationFailed", timeout=60)
    logged = caplog.text
    # The capture saw each path a secret could leak by, or "not logged" below would prove nothing:
    assert logged_by(caplog.records, HTTP_LOG, "'Authorization': 'REDACTED'"), \
        "the Azure SDK's HTTP logging, headers included, of requests that carried the token"
    for name, code in (("capacity", "AllocationFailed"), ("flaky", "InternalServerError")):
        assert logged_by(caplog.records, OPERATOR_LOGS, name, code), f"the operator's own log of {name}'s {code}"
    assert logged_by(caplog.records, OPERATOR_LOGS, "'environment'"), "the operator's log of the refused sign-in"
    assert logged_by(caplog.records, ("azure.identity",), "ClientSecretCredential"), \
        "the SDK's log of the sign-in that offered the client secret"
    written = everything_written(cluster, ["ok", "capacity", "flaky", "ghost", "sp"])
    for marker in MARKERS:
        assert marker not in logged
        assert marker not in written
