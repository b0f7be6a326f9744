"""Measurements, each a small function over a running world: what the suite and the smoke test share.

Times are taken on one clock, CLOCK_MONOTONIC, which every process on the machine shares: the
simulator logs each request with its loop time (``loop.time()`` is ``time.monotonic()``), the
watcher stamps each event when it arrives, and a flip is stamped just before its PATCH is sent.
"""

from __future__ import annotations

import asyncio
import json
import math
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.clients import Key, Obj, Request, SimAdmin, converged, count_status, within
from bench.procs import Proc, Simulator, Usage, cpu_percent
from bench.world import World

START = "VirtualMachines.Start"
LIST_ALL = "VirtualMachines.ListAll"


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1): p99 of 200 samples is the 198th smallest."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


def summary_ms(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50_ms": 1000 * statistics.median(values),
        "p99_ms": 1000 * percentile(values, 0.99),
        "max_ms": 1000 * max(values),
        "min_ms": 1000 * min(values),
    }


def _status(obj: Obj) -> Mapping[str, Any]:
    return obj.get("status") or {}


def _last_action(obj: Obj) -> str | None:
    return (_status(obj).get("lastOperation") or {}).get("action")


async def find_requests(admin: SimAdmin, *, operation: str, vm: str | None, after: float, count: int = 1,
                        timeout: float = 10.0, limit: int = 500) -> list[Request]:
    """The first ``count`` logged requests of ``operation`` (on ``vm``) at or after ``after``."""
    deadline = time.monotonic() + timeout
    while True:
        found = [r for r in await admin.log(limit) if r.operation == operation and r.time >= after
                 and (vm is None or (r.vm or "").lower() == vm.lower())]
        if len(found) >= count:
            return found[:count]
        if time.monotonic() > deadline:
            raise TimeoutError(f"the simulator logged {len(found)} of {count} {operation} request(s) within {timeout:g} s")
        await asyncio.sleep(0.02)


def object_bytes(objects: Iterable[Obj]) -> dict[str, Any]:
    """Median JSON size of objects as the API serves them (compact), as ``kubectl get -o json
    --show-managed-fields`` prints them (indented by 4), and compact without metadata.managedFields."""
    full, indented, bare, managers = [], [], [], set()
    for obj in objects:
        meta = obj.get("metadata") or {}
        full.append(len(json.dumps(obj, separators=(",", ":"))))
        indented.append(len(json.dumps(obj, indent=4)))
        bare.append(len(json.dumps({**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}},
                                   separators=(",", ":"))))
        managers.update(e.get("manager", "") for e in meta.get("managedFields") or [])
    if not full:
        return {"n": 0}
    return {"n": len(full), "median_bytes": statistics.median(full), "median_bytes_indented": statistics.median(indented),
            "median_bytes_without_managed_fields": statistics.median(bare), "managers": sorted(managers)}


@dataclass
class FlipSample:
    reaction: float  # PATCH sent -> the simulator received the start request
    completion: float  # the simulated start ended -> the watch delivered status.powerState Running
    start_status: int  # the simulator's answer to the start request


async def flip_once(world: World, admin: SimAdmin, key: Key, vm: str, *, start_seconds: float,
                    timeout: float = 20.0) -> FlipSample:
    """Deallocated -> Running -> (time both) -> Deallocated again, settled, ready for the next flip.

    The simulator is not polled while the start is on its way: the operator writes
    ``lastOperation: Start`` only after Azure answered the request, so the watch says when the
    request is in the simulator's log, and one read of the log then gives its arrival time.
    """
    watcher = world.watcher
    requested = watcher.expect(key, lambda o: _last_action(o) == "Start" or _status(o).get("powerState") == "Running")
    running = watcher.expect(key, lambda o: _status(o).get("powerState") == "Running")
    t0 = time.monotonic()
    await world.api.patch_spec(key[0], key[1], {"desiredState": "Running"})
    await within(requested, timeout, f"{vm}: lastOperation Start")
    (request,) = await find_requests(admin, operation=START, vm=vm, after=t0, timeout=timeout)
    seen_running, _ = await within(running, timeout, f"{vm}: powerState Running")
    # The simulator's transition ends start_seconds after it accepted the request (its loop may
    # run the timer a little late, which this counts against the operator: conservative).
    sample = FlipSample(request.time - t0, seen_running - (request.time + start_seconds), request.status)
    back = watcher.expect(key, lambda o: converged(o, "Deallocated"))
    await world.api.patch_spec(key[0], key[1], {"desiredState": "Deallocated"})
    await within(back, timeout, f"{vm}: back to Deallocated")
    return sample


@dataclass
class Walk:
    start: float
    pages: int


def walks_of(requests: Iterable[Request], subscription: str, *, gap: float = 1.0) -> list[Walk]:
    """Bulk walks of one subscription: runs of ``list_all`` pages closer than ``gap`` seconds."""
    walks: list[Walk] = []
    last = -math.inf
    for r in sorted((r for r in requests if r.operation == LIST_ALL and r.subscription == subscription.lower()), key=lambda r: r.time):
        if r.time - last > gap:
            walks.append(Walk(r.time, 0))
        walks[-1].pages += 1
        last = r.time
    return walks


@dataclass
class Intervals:
    subscription: str
    gpuvms: int
    page_size: int
    walks: int
    counts: list[int]  # Azure requests of the subscription in each complete observation interval
    by_operation: dict[str, int]  # over those intervals
    throttled: int  # 429s of the subscription over the whole window
    bound: int  # ceil(N / page size) + 2


def interval_counts(requests: Sequence[Request], *, subscription: str, gpuvms: int, page_size: int,
                    since: float, until: float, resync: float, gap: float | None = None) -> Intervals:
    """Requests per observation interval (from one walk's first page to the next one's) in [since, until].

    Pages closer together than ``gap`` (default: a third of ``resync``, at most 1 s) belong to one
    walk. A walk of 100 pages on a busy machine can pause longer than 1 s between two pages; where
    only resync walks run, a third of the interval tells walks apart without splitting one."""
    sub = subscription.lower()
    mine = [r for r in requests if r.subscription == sub and since <= r.time <= until]
    starts = [w.start for w in walks_of(mine, sub, gap=min(1.0, resync / 3) if gap is None else gap)]
    counts, by_op = [], {}
    for a, b in zip(starts, starts[1:]):
        inside = [r for r in mine if a <= r.time < b]
        counts.append(len(inside))
        for r in inside:
            by_op[r.operation] = by_op.get(r.operation, 0) + 1
    return Intervals(sub, gpuvms, page_size, len(starts), counts, by_op,
                     sum(1 for r in mine if r.status == 429), math.ceil(gpuvms / page_size) + 2)


@dataclass
class CpuWindow:
    """CPU share and memory of each process over one stretch of wall time."""

    seconds: float
    cpu_percent: dict[str, float] = field(default_factory=dict)  # mean over the stretch
    peak_percent: dict[str, float] = field(default_factory=dict)  # busiest one-second sample
    rss_mib: dict[str, float] = field(default_factory=dict)  # at the end


class CpuMeter:
    """Reads /proc for each process at the start and the end, and samples every second for the peak.

    Must be created inside a running event loop (the sampler is a task of it)."""

    def __init__(self, procs: Sequence[Proc], *, period: float = 1.0) -> None:
        self.procs = [p for p in procs if p.alive()]
        self.before: dict[str, Usage] = {p.name: p.usage() for p in self.procs}
        self.began = time.monotonic()
        self.peak: dict[str, float] = {}
        self._task = asyncio.get_running_loop().create_task(self._sample(period))

    async def _sample(self, period: float) -> None:
        last = dict(self.before)
        while True:
            await asyncio.sleep(period)
            for p in self.procs:
                try:
                    now = p.usage()
                except OSError:
                    continue
                self.peak[p.name] = max(self.peak.get(p.name, 0.0), cpu_percent(last[p.name], now))
                last[p.name] = now

    def read(self) -> CpuWindow:
        self._task.cancel()
        window = CpuWindow(time.monotonic() - self.began)
        for p in self.procs:
            if not p.alive():
                continue
            after = p.usage()
            window.cpu_percent[p.name] = cpu_percent(self.before[p.name], after)
            window.peak_percent[p.name] = self.peak.get(p.name, window.cpu_percent[p.name])
            window.rss_mib[p.name] = after.rss_mib
        return window


@dataclass
class BurstResult:
    gpuvms: int
    patch_seconds: float  # the bench's own PATCHes of all GpuVms took this long
    sends_seconds: float | None  # first PATCH -> last start request answered 202
    first_send: float | None
    all_ready_seconds: float | None  # first PATCH -> the watch saw the last GpuVm Ready + Running
    start_requests: int
    accepted: int  # 202s
    throttled: int  # 429s on any request during the burst
    throttled_by_operation: dict[str, int]
    conflicts: int  # 409s on any request
    overlaps: int
    completion: dict[str, float]  # the simulated start ended -> status Running, per GpuVm
    cpu: CpuWindow | None = None


async def burst(world: World, admin: SimAdmin, keys: Sequence[Key], vms: Sequence[str], *, start_seconds: float,
                procs: Sequence[Proc], sends_timeout: float, ready_timeout: float | None) -> BurstResult:
    """Flip every GpuVm of ``keys`` to Running at once; time the sends and (optionally) readiness."""
    counters0, overlaps0 = await admin.counters(), await admin.overlaps()
    meter = CpuMeter(procs)
    ready = world.tracker(keys, "Running")
    try:
        t0, patched = await world.flip(keys, "Running")
        deadline = t0 + sends_timeout
        while True:
            counters = await admin.counters()
            accepted = counters.get((START, 202), 0) - counters0.get((START, 202), 0)
            if accepted >= len(keys) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.25)
        all_ready = None
        if ready_timeout is not None:
            try:
                all_ready = await world.watcher.wait(lambda: len(ready.now) == len(keys), max(0.0, t0 + ready_timeout - time.monotonic()),
                                                     f"{len(keys)} GpuVms Ready and Running")
            except TimeoutError:
                all_ready = None
        cpu = meter.read()
        counters = await admin.counters()
        delta = {k: n - counters0.get(k, 0) for k, n in counters.items() if n - counters0.get(k, 0)}
        log = await admin.log(1_000_000)
        starts = sorted((r for r in log if r.operation == START and r.time >= t0), key=lambda r: r.time)
        accepted_starts = [r for r in starts if r.status == 202]
        by_vm = {r.vm.lower(): r.time for r in accepted_starts if r.vm}
        completion = []
        for key, vm in zip(keys, vms):
            seen = ready.first.get(key)
            sent = by_vm.get(vm.lower())
            if seen is not None and sent is not None:
                completion.append(seen - (sent + start_seconds))
        throttled_by_op: dict[str, int] = {}
        for (op, status), n in delta.items():
            if status == 429:
                throttled_by_op[op] = throttled_by_op.get(op, 0) + n
        return BurstResult(
            gpuvms=len(keys),
            patch_seconds=patched - t0,
            sends_seconds=(accepted_starts[-1].time - t0) if len(accepted_starts) >= len(keys) else None,
            first_send=(accepted_starts[0].time - t0) if accepted_starts else None,
            all_ready_seconds=(all_ready - t0) if all_ready is not None else None,
            start_requests=len(starts),
            accepted=len(accepted_starts),
            throttled=count_status(delta, 429),
            throttled_by_operation=throttled_by_op,
            conflicts=count_status(delta, 409),
            overlaps=await admin.overlaps() - overlaps0,
            completion=summary_ms(completion),
            cpu=cpu,
        )
    finally:
        world.watcher.untrack(ready)


def run_script_baseline(sim: Simulator, *, subscription: str, resource_group: str, vms: Sequence[str],
                        timeout: float = 60.0, total_timeout: float = 600.0) -> tuple[list[str], subprocess.Popen[str]]:
    """Start the baseline script as a process of its own; returns (argv, process)."""
    argv = [sys.executable, "-m", "bench.script_baseline", "--endpoint", sim.endpoint, "--ca-file", str(sim.ca_file),
            "--token-file", str(sim.token_file), "--subscription", subscription, "--resource-group", resource_group,
            "--timeout", str(timeout), *vms]
    return argv, subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


async def finish_script(process: subprocess.Popen[str], *, timeout: float) -> dict[str, Any]:
    """Wait (bounded) for the baseline script; its JSON result, with its CPU use."""
    deadline = time.monotonic() + timeout
    while process.poll() is None:
        if time.monotonic() > deadline:
            process.kill()
            process.wait(5)
            raise TimeoutError(f"the baseline script did not finish within {timeout:g} s")
        await asyncio.sleep(0.2)
    out, err = process.communicate(timeout=10)
    if not out.strip():
        raise RuntimeError(f"the baseline script failed ({process.returncode}): {err[-2000:]}")
    return json.loads(out)


# ---- peak memory ------------------------------------------------------------------------------

SAMPLE = 0.25  # seconds between RSS samples: issue 23 asks for at least every 0.5 s


def hwm_mib(proc: Proc) -> float:
    """The kernel's peak resident size of the process (VmHWM): no sampling can miss it."""
    with open(f"/proc/{proc.pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


class PeakSampler:
    """RSS of one process every ``SAMPLE`` seconds, for the peak and its time."""

    def __init__(self, proc: Proc) -> None:
        self.proc = proc
        self.began = time.monotonic()
        self.peak = 0.0
        self.peak_at = 0.0
        self.samples = 0
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                rss = self.proc.usage().rss_mib
            except OSError:
                return
            self.samples += 1
            if rss > self.peak:
                self.peak, self.peak_at = rss, time.monotonic() - self.began
            await asyncio.sleep(SAMPLE)

    def stop(self) -> dict[str, float]:
        self._task.cancel()
        return {"peak_rss_mib": round(self.peak, 1), "peak_at_seconds": round(self.peak_at, 1), "samples": self.samples}


def log_volume(proc: Proc, since: tuple[int, int] = (0, 0)) -> tuple[int, int]:
    """(lines, bytes) of the process's log so far, less ``since``."""
    stats = proc.log_stats()
    return stats.get("lines", 0) - since[0], stats.get("bytes", 0) - since[1]
