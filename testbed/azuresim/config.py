"""How a simulator is set up: one frozen value, built by tests, the CLI or the demo."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from .faults import Fault
from .model import Timings
from .throttling import ThrottlingConfig


@dataclass(frozen=True)
class Permission:
    """One role assignment of a restricted token, as Azure's permissions API returns it.

    An action is granted when it matches one of ``actions`` and none of ``not_actions`` (glob
    patterns, case-insensitive): Contributor is ``Permission(("*",), ("Microsoft.Authorization/*/Write", ...))``.
    A token's grants are the union of its permissions, as Azure's effective permissions are.
    """

    actions: tuple[str, ...]
    not_actions: tuple[str, ...] = ()


@dataclass(frozen=True)
class SimulatorConfig:
    """Settings of one :class:`~testbed.azuresim.server.AzureComputeSimulator`.

    ``token`` is the bearer token with every permission (random when None).
    ``restricted_tokens`` maps further tokens to the RBAC actions they hold (glob patterns such
    as ``Microsoft.Compute/virtualMachines/*``), or to :class:`Permission` values (one per role
    assignment, with notActions), so least-privilege setups can be tried: any other action
    answers 403 ``AuthorizationFailed`` naming it. The permissions API answers with them.
    ``retry_after`` is the ``Retry-After`` (seconds, fractions allowed) on running operations;
    the initial 202 carries it rounded up to whole seconds, because azure-mgmt-compute parses that
    header as an integer and a fraction makes ``begin_*`` raise.
    ``page_size`` is how many VMs one ``list``/``list_all`` page holds before ``nextLink``.
    """

    host: str = "127.0.0.1"
    port: int = 0
    token: str | None = None
    restricted_tokens: Mapping[str, Collection[str] | Sequence[Permission]] = field(default_factory=dict)
    timings: Timings = field(default_factory=Timings)
    retry_after: float = 10.0
    page_size: int = 1000
    throttling: ThrottlingConfig = field(default_factory=ThrottlingConfig)
    faults: tuple[Fault, ...] = ()
    log_size: int = 10_000
    operations_kept: int = 10_000
    ca_file: str | None = None

    def __post_init__(self) -> None:
        if self.page_size < 1:
            raise ValueError("page_size must be >= 1")
        if self.retry_after < 0:
            raise ValueError("retry_after must be >= 0")
        if self.log_size < 1 or self.operations_kept < 1:
            raise ValueError("log_size and operations_kept must be >= 1")
        if self.token is not None and self.token in self.restricted_tokens:
            raise ValueError("the full-access token cannot also be a restricted token")
