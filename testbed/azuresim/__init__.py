"""An Azure Compute (ARM) simulator that the unmodified Azure SDK talks to over HTTPS.

It serves virtual machines (get, instance view, list / list_all with statusOnly and paging),
their power operations as ARM long-running operations that take configurable time, the Tags
API, the list of subscriptions, the caller's permissions at a resource group, ARM's
authentication / RBAC / throttling answers, and injected faults; and it records what
it saw for tests and benchmarks. See ``server.py`` for the request pipeline, ``model.py`` for
the power state machine, ``faults.py`` for the fault spec syntax and ``vmfile.py`` for the YAML
format. Run it with ``gpuvm-operator azure-sim``.
"""

from .config import Permission, SimulatorConfig
from controller.static_token import AsyncStaticTokenCredential, StaticTokenCredential
from .faults import Fault, FaultKind, FaultSpecError
from .model import (
    OperationError,
    Origin,
    PowerAction,
    PowerState,
    SimVm,
    Timings,
    VmSnapshot,
)
from .recording import NO_RESPONSE, OperationRecord, Overlap, RequestRecord
from .server import AzureComputeSimulator
from .throttling import DEFAULT_LIMITS, BucketLimit, ThrottlingConfig
from .vmfile import VmFileError, load_vms_yaml, parse_vms
from .wire import ArmError, OpName

__all__ = [
    "ArmError",
    "AsyncStaticTokenCredential",
    "AzureComputeSimulator",
    "BucketLimit",
    "DEFAULT_LIMITS",
    "Fault",
    "FaultKind",
    "FaultSpecError",
    "NO_RESPONSE",
    "OperationRecord",
    "OpName",
    "OperationError",
    "Origin",
    "Overlap",
    "Permission",
    "PowerAction",
    "PowerState",
    "RequestRecord",
    "SimVm",
    "SimulatorConfig",
    "StaticTokenCredential",
    "ThrottlingConfig",
    "Timings",
    "VmFileError",
    "VmSnapshot",
    "load_vms_yaml",
    "parse_vms",
]
