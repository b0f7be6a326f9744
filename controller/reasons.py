"""Why a GpuVm is not Ready: the reasons users see, and failures already translated for them.

Kept apart from the Azure adapter so the pure core can speak about failures without importing
the SDK; the adapter is still the only place that turns SDK errors into these.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Reason(str, enum.Enum):
    """``Ready`` condition reasons: stable, CamelCase, one per thing a user would do differently."""

    RECONCILED = "Reconciled"
    STARTING = "Starting"
    DEALLOCATING = "Deallocating"
    WAITING_FOR_TRANSITION = "WaitingForTransition"
    DRIFTED = "Drifted"
    ALLOCATION_FAILED = "AllocationFailed"
    QUOTA_EXCEEDED = "QuotaExceeded"
    THROTTLED = "Throttled"
    VM_NOT_FOUND = "VmNotFound"
    AUTHENTICATION_FAILED = "AuthenticationFailed"
    AUTHORIZATION_FAILED = "AuthorizationFailed"
    NOT_MANAGED = "NotManaged"
    NAMESPACE_NOT_ALLOWED = "NamespaceNotAllowed"
    DUPLICATE_VM = "DuplicateVm"
    INVALID_SPEC = "InvalidSpec"
    AZURE_ERROR = "AzureError"


CAPACITY_REASONS = frozenset({Reason.ALLOCATION_FAILED, Reason.QUOTA_EXCEEDED})



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


CAPACITY_REASONS = frozenset({Reason.ALLOCATION_FAILED, Reason.QUOTA_EXCEEDED})

# Azure's codes for "no capacity for this size here, now" (a failed start operation).
ALLOCATION_CODES = frozenset(
    {
        "AllocationFailed",
        "ZonalAllocationFailed",
        "OverconstrainedAllocationRequest",
        "OverconstrainedZonalAllocationRequest",
        "SkuNotAvailable",
    }
)
# Quota answers come as OperationNotAllowed with a message about cores quota.
QUOTA_CODES = frozenset({"OperationNotAllowed", "QuotaExceeded"})


def capacity_reason(code: str) -> Reason:
    """The reason for a start failure already known to be about capacity or quota."""
    return Reason.QUOTA_EXCEEDED if code in QUOTA_CODES else Reason.ALLOCATION_FAILED
