"""Load the simulator's VMs from YAML.

Format (see ``deploy/examples/azure-sim-vms.yaml``)::

    defaults:                       # optional; every key a VM may have except name/count
      subscription_id: 00000000-0000-0000-0000-000000000001
      resource_group: gpu-rg
      location: eastus
      size: Standard_NC24ads_A100_v4
      timings: {start: 60}          # per-VM overrides of the simulator's timings (seconds)
    vms:
      - name: gpu-a100-1            # required
        power_state: deallocated    # running | stopped | deallocated (default deallocated)
        tags: {team: vision}
      - name: gpu-nv-1
        resource_group: other-rg
        size: Standard_NV36ads_A10_v5
        hibernation_enabled: true
      - name: spot-a100-1
        priority: Spot              # Regular | Spot; a Spot VM can be evicted (POST /_sim/…/evict)
        eviction_policy: Deallocate # Spot only; the default and the only policy simulated
        max_price: -1               # Spot only: -1 (never evicted for price) or a price > 0 USD/h
      - name: "bench-{i:04d}"       # with count: N, expands to N VMs; {i} runs 1..N
        count: 1000

VM keys: ``name``, ``count``, ``subscription_id``, ``resource_group``, ``location``, ``size``,
``power_state``, ``tags`` (map of string to string, ARM tag rules), ``hibernation_enabled``,
``priority``, ``eviction_policy``, ``max_price`` (Azure's Spot rules: a Spot VM cannot enable
hibernation), ``vm_id`` (UUID), ``time_created`` (ISO 8601), ``timings`` (keys start, deallocate,
power_off, restart, hibernate). Names are unique per resource group, case-insensitively, as in
ARM. Every error names the file and the item (``vms[2].power_state: …``).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from .model import TIMING_NAMES, PowerState, SimVm, vm_key
from .wire import ArmError, check_tag_count, validate_tags


class VmFileError(ValueError):
    """A VM file that cannot be used; the message is one readable line."""


_VM_KEYS = frozenset({
    "name", "count", "subscription_id", "resource_group", "location", "size", "power_state", "tags",
    "hibernation_enabled", "vm_id", "time_created", "timings", "priority", "eviction_policy", "max_price",
})
_STEADY = ("running", "stopped", "deallocated")


def load_vms_yaml(path: str | Path) -> list[SimVm]:
    """Read and validate a VM file; raises :class:`VmFileError` with a one-line message."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise VmFileError(f"{path}: no such file") from None
    except OSError as e:
        raise VmFileError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise VmFileError(f"{path}: not valid YAML{where}: {problem}") from None
    try:
        return parse_vms(document)
    except VmFileError as e:
        raise VmFileError(f"{path}: {e}") from None


def parse_vms(document: Any) -> list[SimVm]:
    """Validate an already-parsed document (a mapping with ``vms`` and optional ``defaults``)."""
    if not isinstance(document, Mapping):
        raise VmFileError("the file must be a mapping with a 'vms' list (and optional 'defaults')")
    unknown = set(document) - {"vms", "defaults"}
    if unknown:
        raise VmFileError(f"unknown top-level key(s) {', '.join(sorted(map(str, unknown)))} (expected 'vms', 'defaults')")
    defaults = document.get("defaults") or {}
    if not isinstance(defaults, Mapping):
        raise VmFileError("defaults: must be a mapping")
    bad = set(defaults) - (_VM_KEYS - {"name", "count"})
    if bad:
        raise VmFileError(f"defaults: unknown key(s) {', '.join(sorted(map(str, bad)))}")
    items = document.get("vms")
    if not isinstance(items, list) or not items:
        raise VmFileError("vms: must be a non-empty list of VMs")
    vms: list[SimVm] = []
    seen: dict[tuple[str, str, str], str] = {}
    for index, item in enumerate(items):
        where = f"vms[{index}]"
        if not isinstance(item, Mapping):
            raise VmFileError(f"{where}: must be a mapping with at least 'name'")
        unknown = set(item) - _VM_KEYS
        if unknown:
            raise VmFileError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))} (known: {', '.join(sorted(_VM_KEYS))})")
        merged = {**defaults, **item}
        if isinstance(defaults.get("tags"), Mapping) and isinstance(item.get("tags"), Mapping):
            merged["tags"] = {**defaults["tags"], **item["tags"]}
        count = merged.pop("count", None)
        if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 1):
            raise VmFileError(f"{where}.count: must be a whole number >= 1, not {count!r}")
        name = merged.get("name")
        if not isinstance(name, str) or not name.strip():
            raise VmFileError(f"{where}.name: required, a non-empty string")
        names = [name] if count is None else [_expand(name, i, where) for i in range(1, count + 1)]
        for vm_name in names:
            vm = _one_vm({**merged, "name": vm_name}, where)
            key = vm_key(vm.subscription_id, vm.resource_group, vm.name)
            if key in seen:
                raise VmFileError(f"{where}: VM '{vm.name}' in resource group '{vm.resource_group}' is defined twice (also {seen[key]}; names are case-insensitive)")
            seen[key] = where
            vms.append(vm)
    return vms


def _expand(template: str, i: int, where: str) -> str:
    try:
        name = template.format(i=i)
    except (KeyError, IndexError, ValueError) as e:
        raise VmFileError(f"{where}.name: with count, the name is a template using {{i}}: {e}") from None
    if name == template:
        raise VmFileError(f"{where}.name: with count, the name must contain {{i}} (e.g. 'gpu-{{i:03d}}')")
    return name


def _one_vm(fields: Mapping[str, Any], where: str) -> SimVm:
    def text(key: str, *, required: bool = False) -> str | None:
        value = fields.get(key)
        if value is None:
            if required:
                raise VmFileError(f"{where}.{key}: required (set it on the VM or under defaults)")
            return None
        if not isinstance(value, str) or not value.strip():
            raise VmFileError(f"{where}.{key}: must be a non-empty string, not {value!r}")
        return value

    subscription = text("subscription_id", required=True)
    resource_group = text("resource_group", required=True)
    power = fields.get("power_state", "deallocated")
    if not isinstance(power, str) or power.lower() not in _STEADY:
        raise VmFileError(f"{where}.power_state: {power!r} is not one of {', '.join(_STEADY)}")
    tags = fields.get("tags") or {}
    if not isinstance(tags, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
        raise VmFileError(f"{where}.tags: must be a mapping of strings to strings (quote numbers and booleans)")
    try:
        validate_tags(tags)
        check_tag_count(tags)
    except ArmError as e:
        raise VmFileError(f"{where}.tags: {e.code}: {e.message}") from None
    hibernation = fields.get("hibernation_enabled", False)
    if not isinstance(hibernation, bool):
        raise VmFileError(f"{where}.hibernation_enabled: must be true or false, not {hibernation!r}")
    vm_id = text("vm_id")
    if vm_id is not None:
        try:
            uuid.UUID(vm_id)
        except ValueError:
            raise VmFileError(f"{where}.vm_id: {vm_id!r} is not a UUID") from None
    created = fields.get("time_created")
    if isinstance(created, datetime):  # YAML turns unquoted timestamps into datetimes
        created = created.isoformat()
    if created is not None:
        try:
            datetime.fromisoformat(str(created).replace("Z", "+00:00"))
        except ValueError:
            raise VmFileError(f"{where}.time_created: {created!r} is not an ISO 8601 timestamp") from None
    timings = fields.get("timings") or {}
    if not isinstance(timings, Mapping):
        raise VmFileError(f"{where}.timings: must be a mapping of {', '.join(TIMING_NAMES)} to seconds")
    for key, value in timings.items():
        if key not in TIMING_NAMES:
            raise VmFileError(f"{where}.timings.{key}: unknown (known: {', '.join(TIMING_NAMES)})")
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise VmFileError(f"{where}.timings.{key}: must be a number of seconds >= 0, not {value!r}")
    max_price = fields.get("max_price")
    if max_price is not None and (isinstance(max_price, bool) or not isinstance(max_price, (int, float))):
        raise VmFileError(f"{where}.max_price: must be a number (-1, or a price > 0 in USD per hour), not {max_price!r}")
    try:
        return SimVm(
            subscription_id=subscription,  # type: ignore[arg-type]
            resource_group=resource_group,  # type: ignore[arg-type]
            name=fields["name"],
            location=text("location") or "eastus",
            size=text("size") or "Standard_NC24ads_A100_v4",
            power_state=PowerState(power.lower()),
            tags=dict(tags),
            hibernation_enabled=hibernation,
            vm_id=vm_id,
            time_created=None if created is None else str(created),
            timings={k: float(v) for k, v in timings.items()},
            priority=text("priority"),
            eviction_policy=text("eviction_policy"),
            max_price=max_price,
        )
    except ValueError as e:  # Azure's creation rules for Spot VMs
        raise VmFileError(f"{where}: {e}") from None
