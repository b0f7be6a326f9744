"""ARM and Compute throttling buckets, tuned small so the tests run in a fraction of a second."""

from __future__ import annotations

import json
import time

import pytest
from azure.core.exceptions import HttpResponseError

from testbed.azuresim import BucketLimit, OpName, ThrottlingConfig
from tests.testbed.azure_fixtures import (
    RG,
    azure_sim_factory,
    compute_client,
    fast_config,
    long_config,
    sim_of,
)

__all__ = ["azure_sim_factory"]

SLOW = 0.01  # tokens per second: effectively no refill during a test


def _throttled(**limits: BucketLimit) -> ThrottlingConfig:
    return ThrottlingConfig(limits=limits)


def _headers(client, call) -> dict:
    seen: dict = {}
    call(raw_response_hook=lambda r: seen.update(r.http_response.headers))
    return seen


def test_arm_read_bucket(azure_sim_factory) -> None:
    thread = azure_sim_factory(fast_config(throttling=_throttled(SubscriptionReads=BucketLimit(3, SLOW))))
    client = compute_client(thread, retry_total=0)
    remaining = [
        _headers(client, lambda **kw: client.virtual_machines.get(RG, "vm-1", **kw))["x-ms-ratelimit-remaining-subscription-reads"]
        for _ in range(3)
    ]
    assert remaining == ["2", "1", "0"]
    with pytest.raises(HttpResponseError) as e:
        client.virtual_machines.instance_view(RG, "vm-2")
    assert e.value.status_code == 429 and e.value.error.code == "SubscriptionRequestsThrottled"
    assert "Number of 'read' requests for subscription" in e.value.error.message
    assert float(e.value.response.headers["Retry-After"]) > 1
    client.virtual_machines.begin_start(RG, "vm-1", polling=False)  # writes have their own bucket


def test_arm_write_bucket(azure_sim_factory) -> None:
    thread = azure_sim_factory(fast_config(throttling=_throttled(SubscriptionWrites=BucketLimit(1, SLOW))))
    client = compute_client(thread, retry_total=0)
    headers = _headers(client, lambda **kw: client.virtual_machines.begin_start(RG, "vm-1", polling=False, **kw))
    assert headers["x-ms-ratelimit-remaining-subscription-writes"] == "0"
    with pytest.raises(HttpResponseError) as e:
        client.virtual_machines.begin_start(RG, "vm-3", polling=False)
    assert e.value.status_code == 429 and "Number of 'write' requests" in e.value.error.message
    client.virtual_machines.get(RG, "vm-3")  # reads are unaffected


def test_compute_per_vm_update_bucket_and_error_shape(azure_sim_factory) -> None:
    thread = azure_sim_factory(fast_config(throttling=_throttled(UpdateVMResource=BucketLimit(2, SLOW))))
    client = compute_client(thread, retry_total=0)
    client.virtual_machines.begin_start(RG, "vm-2", polling=False)  # running: accepted, completes at once
    headers = _headers(client, lambda **kw: client.virtual_machines.begin_start(RG, "vm-2", polling=False, **kw))
    assert "Microsoft.Compute/UpdateVMResource;0" in headers["x-ms-ratelimit-remaining-resource"]
    with pytest.raises(HttpResponseError) as e:
        client.virtual_machines.begin_restart(RG, "vm-2")  # restart shares start's bucket
    assert e.value.status_code == 429
    assert e.value.error.code == "OperationNotAllowed"  # Compute's top-level code; the detail says TooManyRequests
    detail = e.value.error.details[0]
    assert (detail.code, detail.target) == ("TooManyRequests", "UpdateVMResource")
    assert json.loads(detail.message)["operationGroup"] == "UpdateVMResource"
    assert "Retry-After" in e.value.response.headers
    client.virtual_machines.begin_start(RG, "vm-3", polling=False)  # another VM has its own bucket
    client.virtual_machines.begin_deallocate(RG, "vm-2", polling=False)  # deallocate is another policy


def test_sdk_waits_for_retry_after_and_succeeds(azure_sim_factory) -> None:
    thread = azure_sim_factory(fast_config(throttling=_throttled(LowCostGetResource=BucketLimit(1, 4))))
    client = compute_client(thread)  # default retries: azure-core honours Retry-After
    client.virtual_machines.get(RG, "vm-1")
    began = time.monotonic()
    assert client.virtual_machines.get(RG, "vm-1").name == "vm-1"
    assert time.monotonic() - began >= 0.2
    counters = thread.run_sync(sim_of(thread).counters)
    assert counters[(OpName.GET.value, 429)] == 1 and counters[(OpName.GET.value, 200)] == 2


@pytest.mark.parametrize(
    ("policy", "op"),
    [
        ("HighCostGetSubscription", lambda c: list(c.virtual_machines.list_all(status_only="true"))),
        ("LowCostGetResource", lambda c: c.virtual_machines.instance_view(RG, "vm-1")),
        ("DeleteVMResource", lambda c: c.virtual_machines.begin_deallocate(RG, "vm-1", polling=False)),
    ],
)
def test_each_compute_policy(azure_sim_factory, policy: str, op) -> None:
    thread = azure_sim_factory(fast_config(throttling=_throttled(**{policy: BucketLimit(2, SLOW)})))
    client = compute_client(thread, retry_total=0)
    op(client)
    op(client)
    with pytest.raises(HttpResponseError) as e:
        op(client)
    assert e.value.status_code == 429 and e.value.error.details[0].target == policy


def test_operation_status_bucket(azure_sim_factory) -> None:
    thread = azure_sim_factory(long_config(throttling=_throttled(GetOperationSubscription=BucketLimit(2, SLOW))))
    client = compute_client(thread, retry_total=0)
    with pytest.raises(HttpResponseError) as e:
        client.virtual_machines.begin_start(RG, "vm-1").result()
    assert e.value.status_code == 429
    assert thread.run_sync(sim_of(thread).count, OpName.OPERATION_STATUS, 429) == 1


def test_scale_factor(azure_sim_factory) -> None:
    thread = azure_sim_factory(fast_config(throttling=ThrottlingConfig(scale=0.1)))  # per-VM gets: 3.6 tokens
    client = compute_client(thread, retry_total=0)
    for _ in range(3):
        client.virtual_machines.get(RG, "vm-1")
    with pytest.raises(HttpResponseError) as e:
        client.virtual_machines.get(RG, "vm-1")
    assert e.value.status_code == 429


def test_throttling_can_be_disabled(azure_sim_factory) -> None:
    tiny = {name: BucketLimit(1, SLOW) for name in ("SubscriptionReads", "LowCostGetResource")}
    thread = azure_sim_factory(fast_config(throttling=ThrottlingConfig(enabled=False, limits=tiny)))
    client = compute_client(thread, retry_total=0)
    for _ in range(5):
        headers = _headers(client, lambda **kw: client.virtual_machines.get(RG, "vm-1", **kw))
    assert "x-ms-ratelimit-remaining-subscription-reads" not in headers


def test_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown throttling policies"):
        ThrottlingConfig(limits={"Reads": BucketLimit(1, 1)})
