"""The Azure side's consent: a VM's tags say whether, and from where, it may be driven.

A Kubernetes tenant who can create a GpuVm must not be able to power off an arbitrary VM of the
subscription. The operator therefore only acts on VMs that carry the opt-in tag it is configured
with, and — if the VM says so — only for GpuVms in the namespaces the VM names. Pure functions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from controller.reasons import Failure, Reason

DEFAULT_MANAGED_TAG = ("gpuvm-managed", "true")
NAMESPACES_TAG = "gpuvm-namespaces"
OWNER_TAG = "gpuvm-owner"


@dataclass(frozen=True)
class GuardSettings:
    managed_tag: tuple[str, str] | None = DEFAULT_MANAGED_TAG  # None: explicitly disabled
    namespaces_tag: str = NAMESPACES_TAG
    # With a cluster name, the operator claims each VM it drives with the tag OWNER_TAG=<name>,
    # so that operators in other clusters leave it alone (no cross-cluster tug of war).
    cluster_name: str | None = None
    owner_tag: str = OWNER_TAG


def parse_tag_setting(value: str) -> tuple[str, str] | None:
    """``name=value`` -> (name, value); ``none`` (or ``off``/``disabled``) disables the guard."""
    text = value.strip()
    if text.lower() in ("none", "off", "disabled"):
        return None
    name, sep, wanted = text.partition("=")
    if not sep or not name.strip() or not wanted.strip():
        raise ValueError(f"expected NAME=VALUE or 'none', got {value!r}")
    return name.strip(), wanted.strip()


def tag_value(tags: Mapping[str, str], name: str) -> str | None:
    """Azure tag names are case-insensitive."""
    lowered = name.lower()
    return next((v for k, v in tags.items() if k.lower() == lowered), None)


def check(tags: Mapping[str, str], *, namespace: str, settings: GuardSettings) -> Failure | None:
    """None when the VM consents to being driven from ``namespace``; otherwise why not."""
    if settings.managed_tag is not None:
        name, wanted = settings.managed_tag
        actual = tag_value(tags, name)
        if actual is None or actual.strip().lower() != wanted.lower():
            seen = "it has no such tag" if actual is None else f'it has {name}="{actual}"'
            return Failure(
                Reason.NOT_MANAGED,
                "NotManaged",
                f'the VM does not opt in to this operator: add the Azure tag {name}="{wanted}" to it ({seen})',
            )
    allowed = tag_value(tags, settings.namespaces_tag)
    if allowed is not None:
        names = {n.strip() for n in allowed.split(",") if n.strip()}
        if "*" not in names and namespace not in names:
            return Failure(
                Reason.NAMESPACE_NOT_ALLOWED,
                "NamespaceNotAllowed",
                f'the VM\'s tag {settings.namespaces_tag}="{allowed}" does not include namespace "{namespace}"; '
                f"add it there, or drive the VM from an allowed namespace",
            )
    owner = owner_of(tags, settings)
    if settings.cluster_name and owner and owner != settings.cluster_name:
        return Failure(
            Reason.DUPLICATE_VM,
            "OwnedByOtherCluster",
            f'the VM is claimed by cluster "{owner}" (tag {settings.owner_tag}); only that cluster\'s operator drives it. '
            f"Delete the GpuVm there, or remove the tag if that cluster no longer uses the VM",
        )
    return None


def owner_of(tags: Mapping[str, str], settings: GuardSettings) -> str | None:
    """The cluster that claimed the VM, if any."""
    return tag_value(tags, settings.owner_tag)


def needs_claim(tags: Mapping[str, str], settings: GuardSettings) -> bool:
    """True when this operator should write its claim tag before driving the VM."""
    return bool(settings.cluster_name) and owner_of(tags, settings) is None
