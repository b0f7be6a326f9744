"""Fault injection on the Kubernetes side: what a real API server does to clients on a bad day.

Seeded and scriptable like the Azure simulator's faults (testbed/azuresim/faults.py), so a chaos
run misbehaves the same way every time. A spec string (CLI ``--fault``, ``POST /_emu/faults``,
``KubeEmulator.add_fault``) is whitespace-separated ``key=value`` pairs::

    kind=watch-cut resource=gpuvms every=2            # every watch of gpuvms is cut 2 s after it opened
    kind=watch-cut resource=gpuvms p=0.1 seed=7       # or, before an event is sent, with probability 0.1
    kind=watch-gone resource=gpuvms times=3           # a watch resuming from a resourceVersion: 410 Expired
    kind=conflict resource=gpuvms/status times=2      # writes (update, patch) answer 409 Conflict
    kind=http status=500 resource=gpuvms/status p=0.2 seed=3
    kind=http status=503 verb=list,watch times=1

Keys: ``kind`` (watch-cut | watch-gone | conflict | http), ``resource`` (glob over ``plural`` or
``plural/subresource``; ``gpuvms`` does not match ``gpuvms/status``), ``group``, ``namespace``,
``name`` (globs), ``verb`` (comma list of create, update, patch, delete, deletecollection, get,
list, watch; conflict defaults to update,patch), ``status`` (http: 4xx/5xx, default 500),
``retry-after`` (seconds, sent with 429/503), ``every`` (watch-cut: seconds), ``end`` (watch-cut:
``abort`` the connection, the default, or ``clean``: end the stream as a server timeout does),
``times`` (how many times it fires; default unlimited), ``p`` (probability 0..1), ``seed``.

A cut watch loses nothing on the server's side: the events not sent are in the watch history, and a
client resuming from the last resourceVersion it saw gets them (unless a watch-gone fault says 410).
"""

from __future__ import annotations

import enum
import fnmatch
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from testbed.faultspec import Armed, FaultSpecError, Firing, number, parse_pairs

from . import errors as E

VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection", "get", "list", "watch"})
_HTTP_REASONS = {
    400: ("BadRequest", "the server rejected our request for an unknown reason"),
    403: ("Forbidden", "forbidden: injected by kubeemu"),
    404: ("NotFound", "the server could not find the requested resource"),
    408: ("Timeout", "the server was unable to return a response in the time allotted, but may still be processing the request"),
    429: ("TooManyRequests", "the server has received too many requests and has asked us to try again later"),
    500: ("InternalError", "Internal error occurred: injected by kubeemu"),
    503: ("ServiceUnavailable", "the server is currently unable to handle the request"),
    504: ("Timeout", "the server was unable to return a response in the time allotted, but may still be processing the request"),
}


class FaultKind(str, enum.Enum):
    WATCH_CUT = "watch-cut"
    WATCH_GONE = "watch-gone"
    CONFLICT = "conflict"
    HTTP = "http"


@dataclass(frozen=True)
class Fault(Firing):
    kind: FaultKind
    resource: str = "*"
    group: str | None = None
    namespace: str | None = None
    name: str | None = None
    verbs: frozenset[str] = frozenset()
    status: int = 500
    retry_after: float | None = None
    every: float | None = None
    abort: bool = True

    def __post_init__(self) -> None:
        kind = FaultKind(self.kind)
        object.__setattr__(self, "kind", kind)
        verbs = frozenset(self.verbs)
        if kind in (FaultKind.WATCH_CUT, FaultKind.WATCH_GONE):
            if verbs - {"watch"}:
                raise FaultSpecError(f"a {kind.value} fault applies to watches only")
            verbs = frozenset({"watch"})
        elif kind is FaultKind.CONFLICT and not verbs:
            verbs = frozenset({"update", "patch"})
        unknown = verbs - VERBS
        if unknown:
            raise FaultSpecError(f"unknown verb(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(VERBS))})")
        object.__setattr__(self, "verbs", verbs)
        self.check_firing()
        if kind is FaultKind.HTTP and not 400 <= self.status <= 599:
            raise FaultSpecError(f"status must be an HTTP error status (400-599), not {self.status}")
        if kind is FaultKind.WATCH_CUT and self.every is not None and self.every <= 0:
            raise FaultSpecError("every must be > 0 seconds")
        if self.every is not None and kind is not FaultKind.WATCH_CUT:
            raise FaultSpecError("every= applies to watch-cut faults only")

    def matches(self, verb: str, group: str, resource: str, namespace: str, name: str) -> bool:
        """``resource`` is ``plural`` or ``plural/subresource``."""
        if self.verbs and verb not in self.verbs:
            return False
        for pattern, value in ((self.resource, resource), (self.group, group), (self.namespace, namespace), (self.name, name)):
            if pattern is not None and not fnmatch.fnmatchcase(value, pattern):
                return False
        return True

    @classmethod
    def parse(cls, spec: str) -> Fault:
        values = parse_pairs(spec, {"kind", "resource", "group", "namespace", "name", "verb", "status", "retry-after",
                                    "every", "end", "times", "p", "seed"})
        if "kind" not in values:
            raise FaultSpecError(f"kind= is required ({', '.join(k.value for k in FaultKind)})")
        try:
            kind = FaultKind(values["kind"].lower())
        except ValueError:
            raise FaultSpecError(f"unknown kind {values['kind']!r} (known: {', '.join(k.value for k in FaultKind)})") from None

        end = values.get("end", "abort")
        if end not in ("abort", "clean"):
            raise FaultSpecError(f"end must be abort or clean, not {end!r}")
        return cls(
            kind=kind,
            resource=values.get("resource", "*"),
            group=values.get("group"),
            namespace=values.get("namespace"),
            name=values.get("name"),
            verbs=frozenset(v.strip().lower() for v in values.get("verb", "").split(",") if v.strip()),
            status=number(values, "status", int) or 500,  # type: ignore[arg-type]
            retry_after=number(values, "retry-after"),  # type: ignore[arg-type]
            every=number(values, "every"),  # type: ignore[arg-type]
            abort=end == "abort",
            times=number(values, "times", int),  # type: ignore[arg-type]
            probability=1.0 if "p" not in values else number(values, "p"),  # type: ignore[arg-type]
            seed=number(values, "seed", int),  # type: ignore[arg-type]
            spec=spec,
        )

    def error(self, target: E.Target, name: str) -> E.ApiError:
        """The answer a conflict or http fault gives instead of serving the request."""
        if self.kind is FaultKind.CONFLICT:
            return E.conflict(target, name, E.MODIFIED)
        reason, message = _HTTP_REASONS.get(self.status, ("", f"injected by kubeemu: HTTP {self.status}"))
        if self.retry_after is None:
            return E.ApiError(self.status, reason, message)
        seconds = max(1, round(self.retry_after))
        return E.ApiError(self.status, reason, message, {"retryAfterSeconds": seconds}, headers={"Retry-After": str(seconds)})


class ArmedFault(Armed):
    """A fault installed in the emulator, as its listing shows it."""

    fault: Fault

    def as_dict(self) -> dict[str, object]:
        f = self.fault
        return {"id": self.id, "kind": f.kind.value, "resource": f.resource, "verbs": sorted(f.verbs), "times": f.times,
                "remaining": self.trigger.remaining, "fired": self.trigger.fired, "probability": f.probability, "spec": f.spec}


class FaultSet:
    """The installed faults, in the order they were added (the first one that fires wins)."""

    def __init__(self, faults: Iterable[Fault] = ()) -> None:
        self._faults: dict[int, ArmedFault] = {}
        self._next_id = 1
        self.version = 0  # changes whenever faults are added or removed: open watches re-read their lifetime
        self._fired: Counter[str] = Counter()  # by kind, kept when faults are removed
        for fault in faults:
            self.add(fault)

    def add(self, fault: Fault | str) -> int:
        armed = ArmedFault(self._next_id, Fault.parse(fault) if isinstance(fault, str) else fault)
        self._faults[armed.id] = armed
        self._next_id += 1
        self.version += 1
        return armed.id

    def remove(self, fault_id: int) -> bool:
        self.version += 1
        return self._faults.pop(fault_id, None) is not None

    def clear(self) -> None:
        self.version += 1
        self._faults.clear()

    def listing(self) -> list[dict[str, object]]:
        return [a.as_dict() for a in self._faults.values()]

    def counts(self) -> dict[str, int]:
        """How many times each kind of fault fired since the emulator started."""
        return dict(self._fired)

    def _fire(self, kind: FaultKind, verb: str, group: str, resource: str, namespace: str, name: str) -> Fault | None:
        for armed in self._faults.values():
            f = armed.fault
            if f.kind is kind and f.matches(verb, group, resource, namespace, name) and armed.fire():
                self._fired[kind.value] += 1
                return f
        return None

    def request(self, verb: str, group: str, resource: str, namespace: str, name: str) -> Fault | None:
        """The conflict or http fault that answers this request instead of the server, if any."""
        if not self._faults:
            return None
        return (self._fire(FaultKind.CONFLICT, verb, group, resource, namespace, name)
                or self._fire(FaultKind.HTTP, verb, group, resource, namespace, name))

    def watch_gone(self, group: str, resource: str, namespace: str) -> bool:
        return bool(self._faults) and self._fire(FaultKind.WATCH_GONE, "watch", group, resource, namespace, "") is not None

    def watch_lifetime(self, group: str, resource: str, namespace: str) -> tuple[float, bool] | None:
        """(seconds, abort) for the interval watch-cut fault of a watch open now (checked at open and when faults change).

        ``times`` and ``p`` decide here which streams will be cut; ``note_cut`` counts the cut when it
        happens (a stream the client closes first is not counted)."""
        for armed in self._faults.values():
            f = armed.fault
            if f.kind is FaultKind.WATCH_CUT and f.every is not None and f.matches("watch", group, resource, namespace, "") \
                    and armed.fire():
                return f.every, f.abort
        return None

    def note_cut(self) -> None:
        self._fired[FaultKind.WATCH_CUT.value] += 1

    def cut_before_event(self, group: str, resource: str, namespace: str) -> tuple[bool, bool]:
        """(cut?, abort?) for the next event of a watch: the per-event watch-cut faults."""
        for armed in self._faults.values():
            f = armed.fault
            if f.kind is FaultKind.WATCH_CUT and f.every is None and f.matches("watch", group, resource, namespace, "") \
                    and armed.fire():
                return True, f.abort
        return False, False

    def has_event_cuts(self) -> bool:
        return any(a.fault.kind is FaultKind.WATCH_CUT and a.fault.every is None for a in self._faults.values())
