"""What the two fault engines share (the Azure simulator's and the Kubernetes emulator's).

A fault is written as whitespace-separated ``key=value`` pairs, shell-quoted where a value has
spaces, and fires a limited number of ``times`` and/or with a seeded probability ``p``, so the same
specs misbehave the same way on every run. The kinds of fault and what they do stay in
``testbed/azuresim/faults.py`` and ``testbed/kubeemu/faults.py``.
"""

from __future__ import annotations

import random
import shlex
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")


class FaultSpecError(ValueError):
    """A fault spec that cannot be understood; the message says which part and why."""


@dataclass(frozen=True, kw_only=True)
class Firing:
    """When a fault fires, as every fault spec says it: ``times``, ``p`` (probability) and ``seed``."""

    times: int | None = None
    probability: float = 1.0
    seed: int | None = None
    spec: str = field(default="", compare=False)

    def check_firing(self) -> None:
        if not 0.0 <= self.probability <= 1.0:
            raise FaultSpecError(f"p must be between 0 and 1, not {self.probability}")
        if self.times is not None and self.times < 1:
            raise FaultSpecError(f"times must be >= 1, not {self.times}")


def parse_pairs(spec: str, known: Iterable[str]) -> dict[str, str]:
    """``key=value`` words of a spec; every key known and given once."""
    try:
        words = shlex.split(spec)
    except ValueError as e:
        raise FaultSpecError(f"cannot split {spec!r}: {e}") from None
    if not words:
        raise FaultSpecError("empty fault spec")
    values: dict[str, str] = {}
    for word in words:
        key, sep, value = word.partition("=")
        key = key.strip().lower()
        if not sep or not key:
            raise FaultSpecError(f"{word!r} is not key=value")
        if key in values:
            raise FaultSpecError(f"{key!r} given twice")
        values[key] = value
    unknown = set(values) - set(known)
    if unknown:
        raise FaultSpecError(f"unknown key(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(known))})")
    return values


def number(values: dict[str, str], key: str, convert: type = float) -> object:
    """The value of ``key`` as a number (None when absent)."""
    if key not in values:
        return None
    try:
        return convert(values[key])
    except ValueError:
        raise FaultSpecError(f"{key}={values[key]!r} is not a {'number' if convert is float else 'whole number'}") from None


class Trigger:
    """When a fault fires: at most ``times`` (None: always), each time with ``probability`` from its own seeded stream."""

    __slots__ = ("remaining", "rng", "probability", "fired")

    def __init__(self, *, times: int | None, probability: float, seed: int | None) -> None:
        self.remaining = times
        self.probability = probability
        self.rng = random.Random(seed) if probability < 1.0 else None
        self.fired = 0

    def fire(self) -> bool:
        """Decide (and count) whether the fault strikes this matching call."""
        if self.remaining is not None and self.remaining <= 0:
            return False
        if self.rng is not None and self.rng.random() >= self.probability:
            return False
        if self.remaining is not None:
            self.remaining -= 1
        self.fired += 1
        return True


class Armed:
    """A fault installed in a server: its id, the fault (with ``times``, ``probability``, ``seed``) and its trigger."""

    __slots__ = ("id", "fault", "trigger")

    def __init__(self, fault_id: int, fault: Firing) -> None:
        self.id = fault_id
        self.fault = fault
        self.trigger = Trigger(times=fault.times, probability=fault.probability, seed=fault.seed)

    def fire(self) -> bool:
        """Decide (and count) whether the fault strikes this matching call."""
        return self.trigger.fire()


def cli_faults(specs: Iterable[str], parse: Callable[[str], T]) -> list[T]:
    """``--fault`` flags parsed, or the CLI's one-line error naming the bad one."""
    from controller.cli import CliError

    out = []
    for spec in specs:
        try:
            out.append(parse(spec))
        except FaultSpecError as e:
            raise CliError(f"--fault {spec!r}: {e}") from None
    return out
