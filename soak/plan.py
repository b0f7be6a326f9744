"""The soak's plan: the simulated VMs, the GpuVms naming them, the intents and the disruptions —
all drawn from one seed, without I/O, so a seed names one run and ``--only-vm`` replays a part.

Intents are what users, jobs and Azure do to a GpuVm and its VM, each at a planned moment (seconds
from the start of the intent phase, ``rate`` per second): desiredState flips (some as flip-flops
within a second), driftPolicy switches, deletions with either deletionPolicy and re-creation,
moving a GpuVm to another VM, out-of-band power changes, the VM deleted in Azure and restored,
opt-in tags removed and restored, Spot evictions, claims (plain, leased, expiring, owned by a Pod
with or without the claimant label) created and deleted, owner Pods finishing, leases renewed,
schedules set and removed, stopMode and idleTimeout changes. Follow-ups (a restore, a
re-creation, the second half of a flip-flop) are planned with the intent that needs them and
take their own place in the count. Every intent belongs to one GpuVm (``key``) and is applied in
order with the other intents of that GpuVm.

Disruptions are global: SIGKILLs (one while operations are in flight), a SIGTERM, a credential
expiry, the HA phase (two replicas, the active one killed, then restarted), at seeded moments
within fixed stretches of the run.

The generator keeps its own picture of the world as planned (which GpuVms exist, which VM each
names, which claims and Pods exist) so every intent is valid when planned. The driver applies
them as the world really is (a deletion may take longer than planned: that GpuVm's later
intents wait for it).
"""

from __future__ import annotations

import datetime as dt
import enum
import heapq
import itertools
import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

Key = tuple[str, str]  # a GpuVm: (namespace, name)

MANAGED = {"gpuvm-managed": "true"}
SUBSCRIPTION = "00000000-0000-0000-0000-0000005a0a00"
DESIRED = ("Running", "Deallocated", "Auto")
IDLE_TIMEOUTS = ("3s", "5s", "8s", "12s", "20s")


class IntentKind(str, enum.Enum):
    DESIRED = "desiredState"
    DRIFT_POLICY = "driftPolicy"
    DELETE = "delete"
    RECREATE = "recreate"
    RETARGET = "retarget"  # spec.vm edited to another VM
    OOB = "out-of-band"  # a power change in Azure by someone else
    VM_DELETE = "vm-delete"
    VM_RESTORE = "vm-restore"
    TAGS_REMOVE = "tags-remove"
    TAGS_RESTORE = "tags-restore"
    EVICT = "evict"
    CLAIM_CREATE = "claim-create"
    CLAIM_DELETE = "claim-delete"
    POD_FINISH = "pod-finish"
    LEASE_RENEW = "lease-renew"
    SCHEDULE = "schedule"
    STOP_MODE = "stopMode"
    IDLE_TIMEOUT = "idleTimeout"


class DisruptionKind(str, enum.Enum):
    KILL = "sigkill"
    KILL_IN_FLIGHT = "sigkill-in-flight"  # waits (bounded) until operations are in flight
    TERM_TO_HA = "sigterm-to-ha"  # SIGTERM the standalone operator, start two peered replicas
    HA_KILL_ACTIVE = "ha-sigkill-active"  # SIGKILL the active replica; restarted once the other took over
    TOKEN_EXPIRY = "credential-expiry"


@dataclass(frozen=True)
class Intent:
    index: int
    at: float  # planned seconds from the start of the intent phase
    kind: IntentKind
    key: Key  # the GpuVm it is about (its intents are applied in order)
    params: Mapping[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        shown = " ".join(f"{k}={v}" for k, v in self.params.items() if k != "spec")
        return f"#{self.index} t+{self.at:.1f}s {self.kind.value} {self.key[0]}/{self.key[1]} {shown}".rstrip()


@dataclass(frozen=True)
class Disruption:
    at: float
    kind: DisruptionKind


@dataclass(frozen=True)
class SimVm:
    """One VM in the simulator's file."""

    name: str
    resource_group: str
    power: str  # running | deallocated
    hibernation: bool = False
    spot: bool = False
    start: float = 2.0  # transition seconds
    deallocate: float = 2.0


@dataclass(frozen=True)
class GpuVm:
    key: Key
    vm: str  # the name of the VM it names first
    spec: Mapping[str, Any]


@dataclass(frozen=True)
class SoakConfig:
    seed: int = 1
    gpuvms: int = 200
    namespaces: int = 4
    intents: int = 10_000
    rate: float = 18.0  # planned intents per second
    kills: int = 3  # SIGKILLs of the standalone operator (one of them while operations are in flight)
    sigterm_and_ha: bool = True  # the SIGTERM, then the HA phase with two replicas
    credential_expiry: bool = True
    azure_fault_p: float = 0.1  # share of Azure requests faulted (kind=chaos)
    kube_faults: bool = True
    rss_after: int = 1_000  # RSS is compared after this many intents and at the end
    settle: float = 240.0  # bound on convergence once faults are off and time-based demand is quiet
    only_vm: str | None = None  # "namespace/name": replay only that GpuVm's intents (with every disruption)

    @property
    def spares(self) -> int:
        return max(4, self.gpuvms // 10)

    @property
    def duration(self) -> float:
        return self.intents / self.rate


@dataclass(frozen=True)
class Plan:
    config: SoakConfig
    vms: tuple[SimVm, ...]
    gpuvms: tuple[GpuVm, ...]
    intents: tuple[Intent, ...]
    disruptions: tuple[Disruption, ...]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for i in self.intents:
            name = i.kind.value
            if i.kind is IntentKind.DESIRED and i.params.get("flipflop"):
                name = "desiredState (flip-flop half)"
            elif i.kind is IntentKind.DELETE:
                name = f"delete (deletionPolicy {i.params['deletionPolicy']})"
            elif i.kind is IntentKind.CLAIM_CREATE:
                name = f"claim-create ({i.params['variant']})"
            out[name] = out.get(name, 0) + 1
        return dict(sorted(out.items()))

    def only(self, gpuvm: str) -> Plan:
        """The plan reduced to one GpuVm's intents (``namespace/name``) and those of every GpuVm
        that named one of its VMs at some time (and so on): a VM it moved to was freed by another
        GpuVm's move, which must happen in the replay too, or the two would name one VM
        (DuplicateVm) where the full run had them apart. Every disruption is kept."""
        namespace, _, name = gpuvm.partition("/")
        wanted = (namespace, name)
        if not any(g.key == wanted for g in self.gpuvms) and not any(i.key == wanted for i in self.intents):
            raise ValueError(f"no GpuVm {gpuvm} in this plan")
        named: dict[Key, set[str]] = {g.key: {g.vm} for g in self.gpuvms}
        for i in self.intents:
            vm = i.params.get("vm") if i.kind is IntentKind.RETARGET else (i.params.get("spec") or {}).get("vm")
            if vm:
                named.setdefault(i.key, set()).add(vm)
        keys, vms = {wanted}, set(named.get(wanted, ()))
        while True:
            more = {k for k, v in named.items() if k not in keys and v & vms}
            if not more:
                break
            keys |= more
            for k in more:
                vms |= named[k]
        return replace(self, intents=tuple(i for i in self.intents if i.key in keys))


def namespaces(n: int) -> list[str]:
    return [f"team-{chr(ord('a') + i)}" for i in range(n)]


def world(config: SoakConfig, rng: random.Random) -> tuple[tuple[SimVm, ...], tuple[GpuVm, ...]]:
    """The VMs (one per GpuVm, plus spares to move GpuVms to) and the GpuVms' first specs."""
    spaces = namespaces(config.namespaces)
    vms: list[SimVm] = []
    gpuvms: list[GpuVm] = []
    for i in range(config.gpuvms + config.spares):
        spare = i >= config.gpuvms
        ns = spaces[i % len(spaces)]
        spot = i % 11 == 3
        vms.append(SimVm(
            name=f"spare-{i - config.gpuvms:03d}" if spare else f"gpu-{i:04d}",
            resource_group=f"rg-{ns}",
            power=rng.choice(("running", "deallocated")),
            hibernation=i % 7 == 2 and not spot,
            spot=spot,
            start=round(rng.uniform(1.0, 4.0), 1),
            deallocate=round(rng.uniform(1.0, 3.0), 1),
        ))
        if not spare:
            gpuvms.append(GpuVm((ns, f"gv-{i:03d}"), vms[-1].name, _first_spec(rng, vms[-1])))
    return tuple(vms), tuple(gpuvms)


def _first_spec(rng: random.Random, vm: SimVm) -> dict[str, Any]:
    return {
        "vm": vm.name,  # the driver writes the resource id
        "desiredState": rng.choices(DESIRED, (4, 4, 3))[0],
        "driftPolicy": rng.choices(("Enforce", "Report"), (7, 3))[0],
        "deletionPolicy": rng.choice(("Retain", "Deallocate")),
        "stopMode": rng.choices(("Deallocate", "Hibernate"), (4, 1))[0],
        "idleTimeout": rng.choice(IDLE_TIMEOUTS),
    }


# Primary intents and their weights (follow-ups are planned by the intents that need them).
_WEIGHTS: dict[str, int] = {
    "desired": 26, "flipflop": 7, "driftPolicy": 5, "delete": 3, "retarget": 3, "oob": 8, "vm-delete": 2,
    "tags-remove": 3, "evict": 3, "claim-create": 12, "claim-delete": 7, "pod-finish": 4, "lease-renew": 4,
    "schedule": 5, "stopMode": 3, "idleTimeout": 2,
}


_WITH_FOLLOW_UPS = frozenset({"flipflop", "delete", "vm-delete", "tags-remove"})


@dataclass
class _Planned:
    """The generator's own picture of the world, as planned."""

    specs: dict[Key, dict[str, Any]]  # existing GpuVms
    absent: set[Key]  # deleted, re-creation planned
    owner: dict[str, Key | None]  # VM -> the GpuVm naming it (None: a spare)
    vms: dict[str, SimVm]
    deleted_vms: set[str] = field(default_factory=set)
    untagged_vms: set[str] = field(default_factory=set)
    claims: dict[str, tuple[Key, str]] = field(default_factory=dict)  # claim -> (GpuVm, variant)
    running_pods: dict[str, str] = field(default_factory=dict)  # pod -> its claim
    flipping: dict[Key, int] = field(default_factory=dict)  # GpuVm -> second halves of flip-flops to come


def generate(config: SoakConfig) -> Plan:
    rng = random.Random(config.seed)
    vms, gpuvms = world(config, rng)
    planned = _Planned(
        specs={g.key: dict(g.spec) for g in gpuvms}, absent=set(),
        owner={**{v.name: None for v in vms}, **{g.vm: g.key for g in gpuvms}}, vms={v.name: v for v in vms},
    )
    intents: list[Intent] = []
    follow_ups: list[tuple[float, int, IntentKind, Key, dict[str, Any]]] = []
    seq = itertools.count()
    step = 1.0 / config.rate
    now = 0.0

    def later(delay: float, kind: IntentKind, key: Key, params: dict[str, Any]) -> None:
        heapq.heappush(follow_ups, (now + delay, next(seq), kind, key, params))
        if kind is IntentKind.DESIRED:
            planned.flipping[key] = planned.flipping.get(key, 0) + 1

    while len(intents) < config.intents:
        due = follow_ups[0][0] if follow_ups else None
        only_follow_ups = config.intents - len(intents) <= len(follow_ups)
        if due is not None and (due <= now + step or only_follow_ups):
            at, _, kind, key, params = heapq.heappop(follow_ups)
            now = max(now, at)
            if kind is IntentKind.DESIRED:
                planned.flipping[key] -= 1
            intents.append(_apply(planned, Intent(len(intents), round(now, 3), kind, key, params)))
            continue
        now += step
        # A primary that plans a follow-up needs a place for it within the count.
        room = config.intents - len(intents) - 1 - len(follow_ups) > 0
        kind, key, params = _primary(rng, planned, later if room else None, config.duration - now)
        intents.append(_apply(planned, Intent(len(intents), round(now, 3), kind, key, params)))
    return Plan(config, vms, gpuvms, tuple(intents), _disruptions(config, rng))


def _primary(rng: random.Random, p: _Planned, later: Any, remaining: float) -> tuple[IntentKind, Key, dict[str, Any]]:
    """One primary intent that is valid in the planned world (a fallback flip otherwise)."""
    names = list(_WEIGHTS)
    weights = [_WEIGHTS[n] for n in names]
    existing = sorted(p.specs)
    for _ in range(20):
        choice = rng.choices(names, weights)[0]
        key = rng.choice(existing)
        spec = p.specs[key]
        vm = spec["vm"]
        made = _make(choice, rng, p, key, spec, vm, later, remaining)
        if made is not None:
            return made
    key = rng.choice(existing)
    return IntentKind.DESIRED, key, {"desiredState": _other(rng, p.specs[key]["desiredState"])}


def _other(rng: random.Random, current: str) -> str:
    return rng.choices([d for d in DESIRED if d != current], [3 if d == "Auto" else 4 for d in DESIRED if d != current])[0]


def _make(choice: str, rng: random.Random, p: _Planned, key: Key, spec: Mapping[str, Any], vm: str,
          later: Any, remaining: float) -> tuple[IntentKind, Key, dict[str, Any]] | None:
    in_azure = vm not in p.deleted_vms
    if later is None and choice in _WITH_FOLLOW_UPS:
        return None
    if choice == "desired":
        return IntentKind.DESIRED, key, {"desiredState": _other(rng, spec["desiredState"])}
    if choice == "flipflop":
        first = _other(rng, spec["desiredState"])
        later(rng.uniform(0.1, 0.9), IntentKind.DESIRED, key, {"desiredState": spec["desiredState"], "flipflop": True})
        return IntentKind.DESIRED, key, {"desiredState": first, "flipflop": True}
    if choice == "driftPolicy":
        return IntentKind.DRIFT_POLICY, key, {"driftPolicy": "Report" if spec["driftPolicy"] == "Enforce" else "Enforce"}
    if choice == "delete":
        if len(p.specs) < 2 or p.flipping.get(key):  # the flip-flop's second half needs the GpuVm
            return None
        policy = rng.choice(("Retain", "Deallocate"))
        recreated = {**spec, "desiredState": rng.choices(DESIRED, (4, 4, 3))[0], "deletionPolicy": rng.choice(("Retain", "Deallocate"))}
        recreated.pop("schedule", None)
        later(rng.uniform(4.0, 15.0), IntentKind.RECREATE, key, {"spec": recreated})
        return IntentKind.DELETE, key, {"deletionPolicy": policy}
    if choice == "retarget":
        free = sorted(v for v, owner in p.owner.items() if owner is None and v not in p.deleted_vms and v not in p.untagged_vms)
        if not free:
            return None
        return IntentKind.RETARGET, key, {"vm": rng.choice(free), "from": vm}
    if choice == "oob":
        return (IntentKind.OOB, key, {"vm": vm, "action": rng.choice(("start", "deallocate"))}) if in_azure else None
    if choice == "vm-delete":
        if not in_azure or vm in p.untagged_vms:  # its tags' restore must find it
            return None
        # Back as it would come back (from its disk): in a settled state, whatever it was doing.
        later(rng.uniform(5.0, 25.0), IntentKind.VM_RESTORE, key, {"vm": vm, "power": rng.choice(("running", "deallocated"))})
        return IntentKind.VM_DELETE, key, {"vm": vm}
    if choice == "tags-remove":
        if not in_azure or vm in p.untagged_vms:
            return None
        later(rng.uniform(8.0, 30.0), IntentKind.TAGS_RESTORE, key, {"vm": vm})
        return IntentKind.TAGS_REMOVE, key, {"vm": vm}
    if choice == "evict":
        spots = sorted(k for k, s in p.specs.items() if p.vms[s["vm"]].spot and s["vm"] not in p.deleted_vms)
        if not spots:
            return None
        key = rng.choice(spots)
        return IntentKind.EVICT, key, {"vm": p.specs[key]["vm"]}
    if choice == "claim-create":
        autos = [k for k, s in p.specs.items() if s["desiredState"] == "Auto"]
        if autos and rng.random() < 0.75:
            key = rng.choice(sorted(autos))
        variant = rng.choices(("plain", "lease", "expires", "pod", "pod-unlabelled"), (30, 25, 15, 20, 10))[0]
        params: dict[str, Any] = {"variant": variant}
        if variant == "lease":
            params["lease"] = rng.randint(8, 30)
        elif variant == "expires":
            params["expires_in"] = rng.randint(10, 60)
        return IntentKind.CLAIM_CREATE, key, params  # names are given by _apply
    if choice == "claim-delete":
        mine = sorted(c for c, (k, _) in p.claims.items() if k == key) or sorted(p.claims)
        if not mine:
            return None
        claim = rng.choice(mine)
        return IntentKind.CLAIM_DELETE, p.claims[claim][0], {"claim": claim}
    if choice == "pod-finish":
        if not p.running_pods:
            return None
        pod = rng.choice(sorted(p.running_pods))
        claim = p.running_pods[pod]
        return IntentKind.POD_FINISH, p.claims[claim][0], {"pod": pod, "claim": claim,
                                                            "phase": rng.choice(("Succeeded", "Failed"))}
    if choice == "lease-renew":
        leases = sorted(c for c, (_, variant) in p.claims.items() if variant == "lease")
        if not leases:
            return None
        claim = rng.choice(leases)
        return IntentKind.LEASE_RENEW, p.claims[claim][0], {"claim": claim}
    if choice == "schedule":
        if spec.get("schedule") is not None and rng.random() < 0.4:
            return IntentKind.SCHEDULE, key, {"window": None}
        minutes = rng.randint(1, 3)
        window = rng.choices(("now", "soon", "other-day", "all-day"), (4, 3, 2, 1))[0]
        if window in ("now", "soon") and remaining < 60 * (minutes + 3):
            # Its edges would come after the last intent: the settle would wait for them.
            window = rng.choice(("other-day", "all-day"))
        return IntentKind.SCHEDULE, key, {"window": window, "minutes": minutes}
    if choice == "stopMode":
        return IntentKind.STOP_MODE, key, {"stopMode": "Hibernate" if spec["stopMode"] == "Deallocate" else "Deallocate"}
    if choice == "idleTimeout":
        return IntentKind.IDLE_TIMEOUT, key, {"idleTimeout": rng.choice([t for t in IDLE_TIMEOUTS if t != spec["idleTimeout"]])}
    raise AssertionError(choice)


def _apply(p: _Planned, intent: Intent) -> Intent:
    """The planned world after ``intent`` (names of new claims and Pods are given here)."""
    kind, key, params = intent.kind, intent.key, dict(intent.params)
    spec = p.specs.get(key)
    if kind is IntentKind.DESIRED and spec is not None:
        spec["desiredState"] = params["desiredState"]
    elif kind is IntentKind.DRIFT_POLICY and spec is not None:
        spec["driftPolicy"] = params["driftPolicy"]
    elif kind is IntentKind.DELETE:
        p.specs.pop(key, None)
        p.absent.add(key)
    elif kind is IntentKind.RECREATE:
        p.specs[key] = dict(params["spec"])
        p.absent.discard(key)
    elif kind is IntentKind.RETARGET and spec is not None:
        p.owner[spec["vm"]] = None
        p.owner[params["vm"]] = key
        spec["vm"] = params["vm"]
    elif kind is IntentKind.VM_DELETE:
        p.deleted_vms.add(params["vm"])
    elif kind is IntentKind.VM_RESTORE:
        p.deleted_vms.discard(params["vm"])
    elif kind is IntentKind.TAGS_REMOVE:
        p.untagged_vms.add(params["vm"])
    elif kind is IntentKind.TAGS_RESTORE:
        p.untagged_vms.discard(params["vm"])
    elif kind is IntentKind.CLAIM_CREATE:
        params["claim"] = f"c{intent.index:05d}"
        if params["variant"].startswith("pod"):
            params["pod"] = f"p{intent.index:05d}"
            p.running_pods[params["pod"]] = params["claim"]
        p.claims[params["claim"]] = (key, params["variant"])
    elif kind is IntentKind.CLAIM_DELETE:
        p.claims.pop(params["claim"], None)
        for pod, claim in list(p.running_pods.items()):
            if claim == params["claim"]:
                del p.running_pods[pod]
    elif kind is IntentKind.POD_FINISH:
        p.running_pods.pop(params["pod"], None)
    elif kind is IntentKind.SCHEDULE and spec is not None:
        if params["window"] is None:
            spec.pop("schedule", None)
        else:
            spec["schedule"] = params
    elif kind is IntentKind.STOP_MODE and spec is not None:
        spec["stopMode"] = params["stopMode"]
    elif kind is IntentKind.IDLE_TIMEOUT and spec is not None:
        spec["idleTimeout"] = params["idleTimeout"]
    return replace(intent, params=params)


def _disruptions(config: SoakConfig, rng: random.Random) -> tuple[Disruption, ...]:
    """Seeded moments within fixed stretches of the run (fractions of the planned duration), so
    that the last operator process lives long enough to compare its memory early and late."""
    d = config.duration
    out: list[Disruption] = []
    kill_stretches = [(0.10, 0.22), (0.25, 0.37), (0.40, 0.50)][: max(0, config.kills)]
    in_flight = rng.randrange(len(kill_stretches)) if kill_stretches else -1
    for i, (a, b) in enumerate(kill_stretches):
        kind = DisruptionKind.KILL_IN_FLIGHT if i == in_flight else DisruptionKind.KILL
        out.append(Disruption(round(d * rng.uniform(a, b), 2), kind))
    if config.credential_expiry:
        out.append(Disruption(round(d * rng.uniform(0.30, 0.45), 2), DisruptionKind.TOKEN_EXPIRY))
    if config.sigterm_and_ha:
        out.append(Disruption(round(d * rng.uniform(0.52, 0.56), 2), DisruptionKind.TERM_TO_HA))
        out.append(Disruption(round(d * rng.uniform(0.60, 0.64), 2), DisruptionKind.HA_KILL_ACTIVE))
    return tuple(sorted(out, key=lambda x: x.at))


DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def resolve_window(kind: str, minutes: int, now: dt.datetime) -> tuple[dict[str, Any], tuple[int, int, int]]:
    """A planned window made concrete at the moment it is written (UTC, minute-granular wall
    clock): the CRD's ``spec.schedule`` and the window as (weekday bitmask, start, end) minutes.

    ``now``: opened a minute ago, closes ``minutes`` after the current minute; ``soon``: opens in
    two minutes, for ``minutes``; ``other-day``: three days from today, 10:00-11:00 (closed during
    the run); ``all-day``: every day, 00:00-24:00 (always open)."""
    current = now.hour * 60 + now.minute
    if kind == "all-day":
        days, start, end = "Mon-Sun", 0, 24 * 60
    elif kind == "other-day":
        day = (now.weekday() + 3) % 7
        days, start, end = DAY_NAMES[day], 10 * 60, 11 * 60
    else:
        days = "Mon-Sun"
        start = current - 1 if kind == "now" else current + 2
        end = start + (1 + minutes if kind == "now" else minutes)
        start, end = start % (24 * 60), end % (24 * 60)
        if end == 0:
            end = 24 * 60
    mask = 0b1111111 if days == "Mon-Sun" else 1 << DAY_NAMES.index(days)
    text = {"days": days, "start": f"{start // 60:02d}:{start % 60:02d}",
            "end": "24:00" if end == 24 * 60 else f"{end // 60:02d}:{end % 60:02d}"}
    return {"timeZone": "UTC", "windows": [text]}, (mask, start, end)
