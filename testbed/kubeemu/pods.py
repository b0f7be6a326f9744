"""core/v1 Pods: the registry strategy's defaults, initial status and the validation clients meet.

Pods are served so that owners of custom resources can be Pods (a job's claim is deleted with its
Pod by the garbage collector) and so that an operator can read a Pod's phase. There is no kubelet
and no scheduler: a Pod stays ``Pending`` until a client writes its status, and a deleted Pod
goes at once (as an unscheduled one does), whatever its grace period.

Defaults follow ``pkg/apis/core/v1/defaults.go`` (``SetDefaults_PodSpec``, ``SetDefaults_Container``),
the initial status ``pkg/registry/core/pod/strategy.go`` (``PrepareForCreate``: phase Pending,
QoS class), the messages ``pkg/apis/core/validation/validation.go``.
"""

from __future__ import annotations

import re
from typing import Any

from .errors import FieldError, duplicate, forbidden, invalid, not_supported, required
from .metadata import LABEL_MSG

_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
RESTART_POLICIES = ["Always", "OnFailure", "Never"]
PHASES = ["Pending", "Running", "Succeeded", "Failed", "Unknown"]
FIELD_SELECTORS = frozenset({
    "spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName", "spec.hostNetwork",
    "status.phase", "status.podIP", "status.nominatedNodeName"})
_MUTABLE_MESSAGE = (
    "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,"
    "`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),"
    "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)")


def _default_container(c: dict[str, Any]) -> None:
    image = c.get("image") or ""
    tag = image.rsplit("/", 1)[-1]
    if "imagePullPolicy" not in c and image:
        c["imagePullPolicy"] = "Always" if ("@" not in tag and (":" not in tag or tag.endswith(":latest"))) else "IfNotPresent"
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    c.setdefault("resources", {})


def default(obj: dict[str, Any]) -> None:
    """What decoding a Pod defaults (so the creator owns these fields, as on a cluster)."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("enableServiceLinks", True)
    for key in ("containers", "initContainers"):
        for c in spec.get(key) or []:
            if isinstance(c, dict):
                _default_container(c)


def qos_class(spec: dict[str, Any]) -> str:
    """BestEffort without requests or limits, Guaranteed when every container's cpu and memory limits equal requests."""
    containers = [c for c in (spec.get("containers") or []) + (spec.get("initContainers") or []) if isinstance(c, dict)]
    resources = [c.get("resources") or {} for c in containers]
    if not any((r.get("requests") or r.get("limits")) for r in resources):
        return "BestEffort"
    for r in resources:
        limits, requests = r.get("limits") or {}, r.get("requests") or {}
        for name in ("cpu", "memory"):
            if name not in limits or requests.get(name, limits[name]) != limits[name]:
                return "Burstable"
    return "Guaranteed"


def initial_status(obj: dict[str, Any]) -> dict[str, Any]:
    """PrepareForCreate: whatever status the client sent is replaced."""
    return {"phase": "Pending", "qosClass": qos_class(obj.get("spec") or {})}


def problems(obj: dict[str, Any], old: dict[str, Any] | None, *, subresource: str) -> list[FieldError]:
    """ValidatePodCreate / ValidatePodUpdate / ValidatePodStatusUpdate, the common cases."""
    spec = obj.get("spec")
    if subresource == "status":
        phase = (obj.get("status") or {}).get("phase")
        return [] if phase in (None, *PHASES) else [not_supported("status.phase", phase, PHASES)]
    if not isinstance(spec, dict):
        return [required("spec", "")]
    errs: list[FieldError] = []
    containers = spec.get("containers")
    if not containers:
        errs.append(required("spec.containers", ""))
    seen: set[str] = set()
    for key in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(key) or []):
            path = f"spec.{key}[{i}]"
            if not isinstance(c, dict):
                errs.append(invalid(path, c, "must be an object"))
                continue
            name = c.get("name")
            if not name:
                errs.append(required(f"{path}.name", ""))
            elif not isinstance(name, str) or len(name) > 63 or not _LABEL_RE.match(name):
                errs.append(invalid(f"{path}.name", name, LABEL_MSG))
            elif name in seen:
                errs.append(duplicate(f"{path}.name", name))
            else:
                seen.add(name)
            if not c.get("image") and old is None:
                errs.append(required(f"{path}.image", ""))
    if spec.get("restartPolicy") not in RESTART_POLICIES:
        errs.append(not_supported("spec.restartPolicy", spec.get("restartPolicy"), RESTART_POLICIES))
    if old is not None and _immutable(spec) != _immutable(old.get("spec") or {}):
        errs.append(forbidden("spec", _MUTABLE_MESSAGE))
    return errs


def _immutable(spec: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in spec.items() if k not in ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds")}
    for key in ("containers", "initContainers"):
        if isinstance(out.get(key), list):
            out[key] = [{k: v for k, v in c.items() if k != "image"} if isinstance(c, dict) else c for c in out[key]]
    return out
