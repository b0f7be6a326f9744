"""Why a GpuVm is not Ready: the reasons users see, and failures already translated for them.

Kept apart from the Azure adapter so the pure core can speak about failures without importing
the SDK; the adapter is still the only place that turns SDK errors into these.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


@dataclass(frozen=True)
class SpecError:
    """A spec the operator cannot act on (reason InvalidSpec); ``field`` uses the apiserver's dotted path style."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class Reason(str, enum.Enum):
    """``Ready`` condition reasons: stable, CamelCase, one per thing a user would do differently."""

    RECONCILED = "Reconciled"
    STARTING = "Starting"
    DEALLOCATING = "Deallocating"
    WAITING_FOR_TRANSITION = "WaitingForTransition"
    DRIFTED = "Drifted"
    ALLOCATION_FAILED = "AllocationFailed"
    QUOTA_EXCEEDED = "QuotaExceeded"
    SPOT_PRICE_ABOVE_MAX = "SpotPriceAboveMax"  # a Spot VM's max price is below the current Spot price
    HIBERNATION_NOT_SUPPORTED = "HibernationNotSupported"  # Azure refused to hibernate: deallocate instead
    THROTTLED = "Throttled"
    VM_NOT_FOUND = "VmNotFound"
    AUTHENTICATION_FAILED = "AuthenticationFailed"
    AUTHORIZATION_FAILED = "AuthorizationFailed"
    NOT_MANAGED = "NotManaged"
    NAMESPACE_NOT_ALLOWED = "NamespaceNotAllowed"
    DUPLICATE_VM = "DuplicateVm"
    INVALID_SPEC = "InvalidSpec"
    AZURE_ERROR = "AzureError"


@dataclass(frozen=True)
class Failure:
    """An Azure (or credential) failure as users should see it — already translated.

    ``code`` is Azure's ``error.code`` where there was one; ``message`` is actionable and never
    carries a traceback or a secret; ``retry_after`` is what Azure asked for (429), if anything.
    """

    reason: Reason
    code: str
    message: str
    retry_after: float | None = None


# Start failures that may pass with time: retried under the capacity back-off.
CAPACITY_REASONS = frozenset({Reason.ALLOCATION_FAILED, Reason.QUOTA_EXCEEDED, Reason.SPOT_PRICE_ABOVE_MAX})

# Azure's codes for "no capacity for this size here, now" (a failed start operation).
# SkuNotAvailable is what a Spot VM meets when there is no Spot capacity; the Overconstrained
# resume code is a hibernated VM's (hibernate-resume-troubleshooting).
RESUME_CODE = "OverconstrainedResumeFromHibernatedStateAllocationRequest"
ALLOCATION_CODES = frozenset(
    {
        "AllocationFailed",
        "ZonalAllocationFailed",
        "OverconstrainedAllocationRequest",
        "OverconstrainedZonalAllocationRequest",
        "SkuNotAvailable",
        RESUME_CODE,
    }
)
# Quota answers come as OperationNotAllowed with a message about cores quota.
QUOTA_CODES = frozenset({"OperationNotAllowed", "QuotaExceeded"})
# A Spot VM's start when the Spot price is above the VM's max price (error-codes-spot).
SPOT_PRICE_CODES = frozenset({"SpotPriceGreaterThanProvidedMaxPrice"})


def capacity_reason(code: str) -> Reason:
    """The reason for a start failure already known to be about capacity, price or quota."""
    if code in SPOT_PRICE_CODES:
        return Reason.SPOT_PRICE_ABOVE_MAX
    return Reason.QUOTA_EXCEEDED if code in QUOTA_CODES else Reason.ALLOCATION_FAILED
