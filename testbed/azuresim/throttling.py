"""Azure's request throttling: ARM's per-subscription buckets and Compute's per-VM/per-subscription ones.

Both layers are token buckets that refill continuously (Azure refills Compute's once a minute;
continuous refill at the same average rate is close enough for a client and needs no timers).
Buckets are created lazily per (policy, scope) and refilled on use, so a check costs O(1)
whatever the number of requests served.

Layers, in the order a request meets them:

* ARM, per subscription (and principal): ``SubscriptionReads`` 250 tokens, 25/s refill for GETs;
  ``SubscriptionWrites`` 200 tokens, 10/s for everything else. Refusal: 429
  ``SubscriptionRequestsThrottled`` (ARM's current code).
* Compute, per VM and per subscription, after the request reached the provider:
  ``UpdateVM`` (start, restart, powerOff) and ``DeleteVM`` (deallocate) 12 tokens, 4/min per VM
  and 1,500, 500/min per subscription; ``LowCostGet`` (get, instanceView) 36, 12/min per VM and
  24,000, 8,000/min per subscription; ``HighCostGet`` (list, listAll) 900, 300/min per
  subscription; ``GetOperation`` (operation status) 15,000, 5,000/min per subscription.
  Refusal: 429 whose top-level code is ``OperationNotAllowed`` with a ``TooManyRequests``
  detail naming the policy, as Compute answers (so clients must branch on 429, not on the code).

Every answer carries ``x-ms-ratelimit-remaining-subscription-reads|writes`` and, for Compute
calls, ``x-ms-ratelimit-remaining-resource: Microsoft.Compute/<Policy>;<n>,…``. Subscription-level
capacities beyond the per-minute rates in Azure's docs (3x the rate) are an assumption.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from .wire import ArmError, OpName


@dataclass(frozen=True)
class BucketLimit:
    capacity: float
    per_second: float

    def __post_init__(self) -> None:
        if self.capacity < 1 or self.per_second <= 0:
            raise ValueError(f"a bucket needs capacity >= 1 and a positive refill rate, not {self}")


DEFAULT_LIMITS: Mapping[str, BucketLimit] = {
    "SubscriptionReads": BucketLimit(250, 25),
    "SubscriptionWrites": BucketLimit(200, 10),
    "UpdateVMResource": BucketLimit(12, 4 / 60),
    "UpdateVMSubscription": BucketLimit(1500, 500 / 60),
    "DeleteVMResource": BucketLimit(12, 4 / 60),
    "DeleteVMSubscription": BucketLimit(1500, 500 / 60),
    "LowCostGetResource": BucketLimit(36, 12 / 60),
    "LowCostGetSubscription": BucketLimit(24000, 8000 / 60),
    "HighCostGetSubscription": BucketLimit(900, 300 / 60),
    "GetOperationSubscription": BucketLimit(15000, 5000 / 60),
}

# Compute policies per operation: (policy family, per-VM bucket too?)
_COMPUTE_POLICIES: Mapping[OpName, tuple[str, bool]] = {
    OpName.GET: ("LowCostGet", True),
    OpName.INSTANCE_VIEW: ("LowCostGet", True),
    OpName.LIST: ("HighCostGet", False),
    OpName.LIST_ALL: ("HighCostGet", False),
    OpName.START: ("UpdateVM", True),
    OpName.RESTART: ("UpdateVM", True),
    OpName.POWER_OFF: ("UpdateVM", True),
    OpName.DEALLOCATE: ("DeleteVM", True),
    OpName.OPERATION_STATUS: ("GetOperation", False),
    OpName.OPERATION_RESULT: ("GetOperation", False),
}


@dataclass(frozen=True)
class ThrottlingConfig:
    """On by default with Azure's numbers; ``scale`` multiplies every capacity and rate, ``limits`` overrides policies.

    ``limits`` keys are the names in :data:`DEFAULT_LIMITS`; an override is taken as is (not scaled).
    """

    enabled: bool = True
    scale: float = 1.0
    limits: Mapping[str, BucketLimit] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.scale <= 0:
            raise ValueError("throttling scale must be > 0")
        unknown = set(self.limits) - set(DEFAULT_LIMITS)
        if unknown:
            raise ValueError(f"unknown throttling policies {sorted(unknown)} (known: {', '.join(DEFAULT_LIMITS)})")

    def limit(self, policy: str) -> BucketLimit:
        if policy in self.limits:
            return self.limits[policy]
        base = DEFAULT_LIMITS[policy]
        return BucketLimit(max(1.0, base.capacity * self.scale), base.per_second * self.scale)


class TokenBucket:
    __slots__ = ("capacity", "rate", "tokens", "stamp")

    def __init__(self, limit: BucketLimit, now: float) -> None:
        self.capacity = limit.capacity
        self.rate = limit.per_second
        self.tokens = limit.capacity
        self.stamp = now

    def refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now

    def wait_time(self) -> float:
        """Seconds until one token is available (after :meth:`refill`)."""
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate


def format_retry_after(seconds: float) -> str:
    """Whole seconds as Azure sends them; below one second keep the fraction (tests run scaled-down buckets)."""
    return str(math.ceil(seconds)) if seconds >= 1 else f"{max(seconds, 0.001):.3f}"


class Throttler:
    """Holds every bucket; :meth:`arm` and :meth:`compute` either return headers to add or raise a 429."""

    def __init__(self, config: ThrottlingConfig) -> None:
        self.config = config
        self._buckets: dict[tuple[str, object], TokenBucket] = {}

    def reset(self) -> None:
        self._buckets.clear()

    def _bucket(self, policy: str, scope: object, now: float) -> TokenBucket:
        key = (policy, scope)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.config.limit(policy), now)
        else:
            bucket.refill(now)
        return bucket

    def arm(self, *, write: bool, subscription: str, principal: str, now: float) -> dict[str, str]:
        if not self.config.enabled:
            return {}
        kind = "writes" if write else "reads"
        bucket = self._bucket("SubscriptionWrites" if write else "SubscriptionReads", (subscription.lower(), principal), now)
        if bucket.tokens < 1:
            wait = format_retry_after(bucket.wait_time())
            raise ArmError(
                429,
                "SubscriptionRequestsThrottled",
                f"Number of '{'write' if write else 'read'}' requests for subscription '{subscription}' actor "
                f"'{principal}' exceeded. Please try again after '{wait}' seconds after additional tokens are "
                "available. Refer to https://aka.ms/arm-throttling",
                headers={"Retry-After": wait, f"x-ms-ratelimit-remaining-subscription-{kind}": "0"},
            )
        bucket.tokens -= 1
        return {f"x-ms-ratelimit-remaining-subscription-{kind}": str(int(bucket.tokens))}

    def compute(self, op: OpName, *, subscription: str, vm: object | None, now: float, wall: datetime) -> dict[str, str]:
        if not self.config.enabled or op not in _COMPUTE_POLICIES:
            return {}
        family, per_vm = _COMPUTE_POLICIES[op]
        checks = [(f"{family}Subscription", subscription.lower())]
        if per_vm and vm is not None:
            checks.insert(0, (f"{family}Resource", vm))
        buckets = [(policy, self._bucket(policy, scope, now)) for policy, scope in checks]
        empty = [(policy, b) for policy, b in buckets if b.tokens < 1]
        if empty:
            policy, bucket = empty[0]
            wait_s = bucket.wait_time()
            limit = self.config.limit(policy)
            detail = {
                "operationGroup": policy,
                "startTime": wall.isoformat(),
                "endTime": (wall + timedelta(seconds=60)).isoformat(),
                "allowedRequestCount": int(limit.capacity),
                "measuredRequestCount": int(limit.capacity) + 1,
            }
            raise ArmError(
                429,
                "OperationNotAllowed",
                "The server rejected the request because too many requests have been received for this subscription.",
                details=[{"code": "TooManyRequests", "target": policy, "message": json.dumps(detail)}],
                headers={"Retry-After": format_retry_after(wait_s), "x-ms-ratelimit-remaining-resource": _remaining(buckets)},
            )
        for _, bucket in buckets:
            bucket.tokens -= 1
        return {"x-ms-ratelimit-remaining-resource": _remaining(buckets)}


def _remaining(buckets: list[tuple[str, TokenBucket]]) -> str:
    return ",".join(f"Microsoft.Compute/{policy};{max(0, int(b.tokens))}" for policy, b in buckets)
