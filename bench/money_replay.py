"""The money benchmark's cross-check: one busy trace day, replayed in compressed real time through
the real ``gpuvm-operator run`` against the Kubernetes emulator and the Azure simulator.

Why. The 60-day figures (bench/money.py) come from the operator's decision code on a virtual
clock. This replay asks whether the whole operator — watches, claim binding, the engine's timers,
the Azure SDK polling a real HTTPS simulator — bills what that model says. Both sides get the same
job list; the difference in billed VM-hours is the report's figure (issue 11: target <= 5 %).

The day (the same every run): the calendar day of cluster ``CLUSTER`` (t = 0 of the trace is
00:00) with the most submissions, ties to the earliest; the jobs submitted that day, each
duration clipped so that the job ends by the day's end (the replay covers exactly that day).

Time is compressed by ``K``: a second of the replay is K seconds of the trace. The simulator's
start takes ``BOOT / K``, the GpuVms (desiredState Auto) have ``spec.idleTimeout`` = 10 min / K in
whole seconds (the CRD's granularity, hence K divides 600), and the operator polls a running
operation every ``POLL`` seconds (the simulator answers Retry-After 0, so the SDK uses the
operator's ``--operation-poll``). Azure's request budgets are per real second; compressing time
multiplies the request rate by K, so throttling is off on both sides (simulator
``--no-throttling``, operator ``--azure-budget-share=0``): at the real pace this day's requests
are far inside the budgets.

The driver plays the jobs: at each job's scaled submission it takes free VMs as the model does
(warm first: Running, then Starting, most recently released; the power state from the GpuVms'
status in the watch), creates one GpuVmClaim per VM, waits until every claim is Ready (the job
waits for the boot, as a job wrapper does), holds them for duration / K and deletes them. A job
that finds too few free VMs queues, first come first served, as in the model. At the end it waits
until every VM was switched off by the idle timeout.

Billed hours of the real side come from the simulator's own record (``GET /_sim/operations``): per
VM, from each start's begin to the next deallocation's begin (as the model bills: Starting and
Running billed, deallocation immediate), times K.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import os
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.clients import KubeApi, Watcher, ready_of, within
from bench.money import BOOT, TRACE, Job, Outcome, Policy, Simulation, load, peak_gpus
from bench.procs import Processes
from bench.world import Fleet, World, manifest_metadata, subscription_id
from controller.demand import CLAIM_PLURAL, ClaimReason

CLUSTER = "10"
DAY = 86400.0
K = 200  # 24 h in 7.2 min; the idle timeout 3 s, a boot 0.9 s
IDLE = dt.timedelta(minutes=10)
POLICY = Policy("claims, idleTimeout 10 min", "claims", idle=IDLE)
POLL = 0.1  # s, the operator's --operation-poll and --transition-poll (K x 0.1 s = 20 s of the trace)
DEALLOCATE = 0.1  # s, the simulator's deallocation (not billed on either side)
NAMESPACE = "money"
ORDER = {"Running": 0, "Starting": 1}


@dataclass(frozen=True)
class Day:
    cluster: str
    day: int  # days since the trace's t = 0
    jobs: tuple[Job, ...]  # submitted that day, ends clipped at the day's end

    @property
    def start(self) -> float:
        return min(j.submit for j in self.jobs)

    @property
    def end(self) -> float:
        return max(j.submit + j.duration for j in self.jobs)


def busiest_day(jobs: Iterable[Job], *, cluster: str = CLUSTER) -> Day:
    """The day with the most submissions (ties: the earliest), durations clipped at its end."""
    per_day: dict[int, list[Job]] = {}
    for j in jobs:
        per_day.setdefault(int(j.submit // DAY), []).append(j)
    if not per_day:
        raise ValueError(f"cluster {cluster}: no jobs")
    day = min(per_day, key=lambda d: (-len(per_day[d]), d))
    end = (day + 1) * DAY
    clipped = sorted((Job(j.id, j.submit, min(j.duration, end - j.submit), j.gpus) for j in per_day[day]),
                     key=lambda j: (j.submit, j.id))
    return Day(cluster, day, tuple(clipped))


def model(day: Day) -> Outcome:
    """The virtual-clock side: bench/money.py's Simulation on the same jobs, claims + 10 min."""
    return Simulation(day.jobs, POLICY, cluster=day.cluster).run()


def idle_timeout(k: int) -> str:
    """spec.idleTimeout for the compressed clock, refused when K does not give whole seconds."""
    seconds = IDLE.total_seconds() / k
    if seconds != int(seconds) or seconds < 1:
        raise ValueError(f"K={k}: the idle timeout {IDLE.total_seconds():g} s / K must be a whole number of seconds >= 1")
    return f"{int(seconds)}s"


# ----------------------------------------------------------------------------- billing from the simulator


@dataclass(frozen=True)
class Billing:
    seconds: float  # real seconds billed, summed over VMs
    starts: int
    deallocations: int
    vms_started: frozenset[str]
    still_on: frozenset[str]  # VMs with a start not followed by a deallocation (billed until ``now``)


def billing(operations: Iterable[Mapping[str, Any]], *, now: float) -> Billing:
    """Per VM, from each start's begin to the next deallocation's begin (the simulator's clock)."""
    per_vm: dict[str, list[Mapping[str, Any]]] = {}
    for op in operations:
        per_vm.setdefault(f"{op['resource_group']}/{op['vm']}".lower(), []).append(op)
    seconds, starts, deallocations, still_on = 0.0, 0, 0, set()
    for vm, ops in per_vm.items():
        on: float | None = None
        for op in sorted(ops, key=lambda o: o["start"]):
            if op["action"] == "start" and on is None:
                on, starts = op["start"], starts + 1
            elif op["action"] == "deallocate" and on is not None:
                seconds += op["start"] - on
                on, deallocations = None, deallocations + 1
        if on is not None:
            seconds += now - on
            still_on.add(vm)
    return Billing(seconds, starts, deallocations, frozenset(per_vm), frozenset(still_on))


@dataclass(frozen=True)
class Held:
    """One job's claims as the driver saw them (monotonic clock, shared with the simulator's)."""

    vms: tuple[str, ...]
    asked: float
    ready: float
    released: float


def latencies(held: Iterable[Held], operations: Iterable[Mapping[str, Any]], *, idle: float) -> tuple[float, float, float]:
    """Means in ms: claim -> start begins, start ends -> Ready seen, release + idle -> deallocation
    begins; each over the starts and switch-offs that a job's claims caused."""
    ops: dict[str, list[Mapping[str, Any]]] = {}
    for op in operations:
        ops.setdefault(str(op["vm"]).lower(), []).append(op)
    for v in ops.values():
        v.sort(key=lambda o: o["start"])
    held = list(held)
    taken: dict[str, list[float]] = {}  # per VM, when jobs took it
    for h in held:
        for vm in h.vms:
            taken.setdefault(vm.lower(), []).append(h.asked)
    start, ready, late = [], [], []
    for h in held:
        ends = []
        for vm in h.vms:
            mine = ops.get(vm.lower(), [])
            boot = next((o for o in mine if o["action"] == "start" and h.asked <= o["start"] <= h.ready), None)
            if boot is not None and boot["end"] is not None:
                start.append(boot["start"] - h.asked)
                ends.append(boot["end"])
            again = min((t for t in taken[vm.lower()] if t > h.released), default=math.inf)
            nxt = next((o for o in mine if o["start"] >= h.released), None)
            if nxt is not None and nxt["action"] == "deallocate" and nxt["start"] < again:  # not taken again first
                late.append(nxt["start"] - h.released - idle)
        if ends:
            ready.append(h.ready - max(ends))

    def mean(values: list[float]) -> float:
        return 1000 * sum(values) / len(values) if values else math.nan

    return mean(start), mean(ready), mean(late)


# ----------------------------------------------------------------------------- the real side


class ClaimApi(KubeApi):
    """GpuVmClaims through the emulator's REST API; a ``Watcher`` over it watches claims."""

    def _path(self, namespace: str | None, name: str | None = None) -> str:
        path = super()._path(namespace, name)
        return path.replace("/gpuvms", f"/{CLAIM_PLURAL}", 1)

    async def create_claim(self, namespace: str, name: str, gpuvm: str) -> None:
        body = {"apiVersion": "gpuvm.dev/v1alpha1", "kind": "GpuVmClaim",
                "metadata": {"name": name, "namespace": namespace}, "spec": {"gpuVm": gpuvm}}
        await self._json("POST", self._path(namespace), body)

    async def delete_claim(self, namespace: str, name: str) -> None:
        await self._json("DELETE", self._path(namespace, name), ok=(200, 202, 404))


def claim_ready(obj: Mapping[str, Any]) -> bool:
    ready = ready_of(obj)
    return bool(ready and ready.get("status") == "True" and ready.get("reason") == ClaimReason.VM_RUNNING.value)


@dataclass
class Slot:
    name: str
    index: int
    holder: str | None = None
    released_at: float = float("-inf")


@dataclass
class Replayed:
    """What the real side did; hours are trace hours (real seconds x K / 3600)."""

    cluster: str
    day: int
    k: int
    pool: int
    jobs: int
    job_ids: list[str] = field(default_factory=list)  # in the order they were submitted
    billed_hours: float = 0.0
    boots: int = 0
    idle_deallocations: int = 0  # GpuVms whose last operation is a deallocation by trigger Idle
    deallocations: int = 0
    jobs_waited_for_boot: int = 0
    jobs_queued: int = 0
    claims_created: int = 0
    claims_deleted: int = 0
    vms_started: int = 0
    still_on: int = 0
    claim_wait_warm_ms: float = math.nan  # mean real wait for Ready of jobs whose VMs were all Running
    # Where the real side's extra billing comes from (real milliseconds, means; see ``latencies``):
    start_ms: float = math.nan  # claim created -> the simulator's start begins (not billed: the job waits too)
    ready_ms: float = math.nan  # the start ends -> the driver sees every claim of the job Ready (billed)
    idle_late_ms: float = math.nan  # the claim deleted + idleTimeout -> the deallocation begins (billed)
    seconds: float = 0.0  # wall time of the replay itself (arrivals to the last switch-off)
    setup_seconds: float = 0.0


async def replay(day: Day, *, k: int = K, workdir: Path, deadline: float = 120.0) -> Replayed:
    """Run ``day`` through the real processes; ``deadline`` bounds every single wait (real seconds)."""
    began = time.monotonic()
    pool = peak_gpus(day.jobs)
    fleet = Fleet(subscription_id(11), "rg-money", NAMESPACE, "vm", pool)
    out = Replayed(day.cluster, day.day, k, pool, len(day.jobs), job_ids=[j.id for j in day.jobs])
    timeout = idle_timeout(k)
    with Processes(workdir) as procs:
        opened: list[World] = []
        try:
            world = await World.start(procs, opened=opened)
            side = world.add_simulator("money", [fleet], flags=[
                f"--start-seconds={BOOT / k:g}", f"--deallocate-seconds={DEALLOCATE:g}", "--retry-after=0", "--no-throttling"])
            await world.api.create_namespace(NAMESPACE)
            for name in fleet.names:
                labels, annotations = manifest_metadata(fleet, name)
                await world.api.apply(NAMESPACE, name, {"vm": {"resourceId": fleet.resource_id(name)}, "desiredState": "Auto",
                                                        "idleTimeout": timeout}, labels=labels, annotations=annotations)
            world.add_operator("money", subscription=fleet.subscription, flags=[
                "--namespace", NAMESPACE, f"--operation-poll={POLL:g}", f"--transition-poll={POLL:g}",
                "--azure-budget-share=0"])
            await world.settle(fleet.keys, power="Deallocated", timeout=deadline)
            claims = ClaimApi(world.emulator.url)
            claim_watch = Watcher(claims)
            await claim_watch.start()
            try:
                out.setup_seconds = time.monotonic() - began
                t0 = time.monotonic()
                held = await _drive(day, k=k, world=world, claims=claims, claim_watch=claim_watch, slots=fleet.names,
                                    out=out, deadline=deadline)
                # every VM switched off by the idle timeout (or never started)
                await world.watcher.wait(lambda: all(_power(world, n) == "Deallocated" for n in fleet.names), deadline,
                                         "every VM deallocated after the day")
                out.seconds = time.monotonic() - t0
                await claim_watch.wait(lambda: not claim_watch.objects, deadline, "every claim gone")
            finally:
                await claim_watch.stop()
                await claims.close()
            operations = await side.admin.operations()
            bill = billing(operations, now=time.monotonic())
            out.billed_hours = bill.seconds * k / 3600
            out.boots, out.deallocations = bill.starts, bill.deallocations
            out.vms_started, out.still_on = len(bill.vms_started), len(bill.still_on)
            out.start_ms, out.ready_ms, out.idle_late_ms = latencies(held, operations, idle=IDLE.total_seconds() / k)
            out.idle_deallocations = sum(1 for n in fleet.names if _last_operation(world, n) == ("Deallocate", "Idle"))
        finally:
            for w in opened:
                await w.close()
    return out


def _power(world: World, name: str) -> str:
    return str(((world.watcher.objects.get((NAMESPACE, name)) or {}).get("status") or {}).get("powerState", ""))


def _last_operation(world: World, name: str) -> tuple[str, str]:
    last = ((world.watcher.objects.get((NAMESPACE, name)) or {}).get("status") or {}).get("lastOperation") or {}
    return str(last.get("action", "")), str(last.get("trigger", ""))


async def _drive(day: Day, *, k: int, world: World, claims: ClaimApi, claim_watch: Watcher, slots: Sequence[str],
                 out: Replayed, deadline: float) -> list[Held]:
    """Arrivals at their scaled times; each job a task: claim, wait for Ready, hold, delete."""
    vms = [Slot(name, i) for i, name in enumerate(slots)]
    queue: deque[Job] = deque()
    queued: set[str] = set()
    tasks: set[asyncio.Task[None]] = set()
    warm_waits: list[float] = []
    held: list[Held] = []
    failures: list[BaseException] = []
    seq = 0

    async def run_job(job: Job, taken: list[Slot]) -> None:
        nonlocal seq
        names = []
        for slot in taken:
            seq += 1
            names.append((f"job-{seq:05d}", slot.name))
        waited = any(_power(world, slot.name) != "Running" for slot in taken)
        out.jobs_waited_for_boot += waited
        asked = time.monotonic()
        await asyncio.gather(*(claims.create_claim(NAMESPACE, c, vm) for c, vm in names))
        out.claims_created += len(names)
        keys = [(NAMESPACE, c) for c, _ in names]
        await claim_watch.wait(lambda: all(claim_ready(claim_watch.objects.get(key) or {}) for key in keys), deadline,
                               f"the claims of job {job.id} Ready")
        ready = time.monotonic()
        if not waited:
            warm_waits.append(ready - asked)
        await asyncio.sleep(job.duration / k)  # the job's work
        await asyncio.gather(*(claims.delete_claim(NAMESPACE, c) for c, _ in names))
        out.claims_deleted += len(names)
        now = time.monotonic()
        held.append(Held(tuple(slot.name for slot in taken), asked, ready, now))
        for slot in taken:
            slot.holder, slot.released_at = None, now
        dispatch()

    def done(task: asyncio.Task[None]) -> None:
        tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            failures.append(task.exception())  # type: ignore[arg-type]

    def dispatch() -> None:
        while queue:
            job = queue[0]
            free = [s for s in vms if s.holder is None]
            if len(free) < job.gpus:
                queued.add(job.id)
                return
            queue.popleft()
            free.sort(key=lambda s: (ORDER.get(_power(world, s.name), 2), -s.released_at, s.index))
            taken = free[: job.gpus]
            for slot in taken:
                slot.holder = job.id
            task = asyncio.create_task(run_job(job, taken), name=f"job {job.id}")
            tasks.add(task)
            task.add_done_callback(done)

    t0 = time.monotonic() + 0.5
    try:
        for job in day.jobs:
            delay = t0 + (job.submit - day.start) / k - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)  # the job's submission time on the compressed clock
            if failures:
                raise failures[0]
            queue.append(job)
            dispatch()
        while tasks or queue:
            if failures:
                raise failures[0]
            pending = set(tasks)
            if pending:
                await within(asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED),
                             deadline + max(j.duration for j in day.jobs) / k, "the day's jobs")
            elif queue:
                raise RuntimeError(f"{len(queue)} jobs queued with no job running (pool {len(vms)})")
        if failures:
            raise failures[0]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    out.jobs_queued = len(queued)
    if warm_waits:
        out.claim_wait_warm_ms = 1000 * sum(warm_waits) / len(warm_waits)
    return held


# ----------------------------------------------------------------------------- the report


@dataclass(frozen=True)
class CrossCheck:
    model: Outcome
    real: Replayed
    machine: str  # what else ran on the machine, in words

    @property
    def difference(self) -> float:
        """(real - model) / model billed VM-hours."""
        return self.real.billed_hours / self.model.billed_hours - 1

    @property
    def explained_hours(self) -> float:
        """The extra billing the measured latencies account for: per boot the Ready lag, per switch-off the idle lag."""
        r = self.real
        return (r.boots * r.ready_ms + r.deallocations * r.idle_late_ms) / 1000 * r.k / 3600

    def as_json(self) -> dict[str, Any]:
        return {"model": asdict(self.model), "real": {**asdict(self.real), "job_ids": len(self.real.job_ids)},
                "difference": self.difference, "target": 0.05, "met": abs(self.difference) <= 0.05,
                "poll_seconds": POLL, "deallocate_seconds": DEALLOCATE, "machine": self.machine}

    def markdown(self) -> list[str]:
        m, r = self.model, self.real
        k = r.k
        met = "met" if abs(self.difference) <= 0.05 else "**missed**"
        return [
            f"**Cross-check against the real operator** (`bench/money_replay.py`; target: billed hours within 5 %): "
            f"cluster {r.cluster}, day {r.day} of the trace (the day with the most submissions, ties to the earliest), "
            f"{r.jobs} jobs submitted that day, each clipped to end by the day's end; the same job list on both sides, "
            f"a pool of {r.pool} VMs (the day's peak), claims with idleTimeout 10 min. The real side replays the day in "
            f"compressed real time, K = {k} (a second is {k} s of the trace: {DAY / k / 60:.1f} min for the day), "
            f"through `gpuvm-operator run`, the Kubernetes emulator and the Azure simulator as separate processes: "
            f"a start takes {BOOT / k:g} s, `spec.idleTimeout: {idle_timeout(k)}`, the operator polls operations every "
            f"{POLL:g} s (Retry-After 0), throttling off on both sides (Azure's budgets are per real second; the "
            f"replay's rate is K times the day's). A driver creates one GpuVmClaim per VM of a job at its scaled "
            f"submission (free VMs warm first, as in the model, from the GpuVms' status), waits for every claim Ready, "
            f"holds them duration / K and deletes them. Real billed hours come from the simulator's operation record: "
            f"per VM, each start's begin to the next deallocation's begin, times K.",
            "",
            "| side | billed VM-h | boots | jobs waited for a boot | jobs queued |",
            "|---|---:|---:|---:|---:|",
            f"| model (virtual clock, decision code) | {m.billed_hours:,.1f} | {m.boots} | {m.jobs_waited_for_boot} | "
            f"{m.jobs_queued} |",
            f"| real `gpuvm-operator run`, K = {k} | {r.billed_hours:,.1f} | {r.boots} | {r.jobs_waited_for_boot} | "
            f"{r.jobs_queued} |",
            "",
            f"- {met}: difference {self.difference:+.1%} ({r.billed_hours - m.billed_hours:+,.1f} VM-h; used "
            f"{m.used_hours:,.1f} VM-h). Replay {r.seconds:.0f} s of wall time (plus {r.setup_seconds:.0f} s to start "
            f"the processes and settle {r.pool} GpuVms); {r.claims_created} claims created and deleted, "
            f"{r.idle_deallocations} VMs last switched off by trigger Idle. Measured while {self.machine}.",
            f"- Why they differ: every latency of the real path is billed K times. Measured means: a start began "
            f"{r.start_ms:.0f} ms after its claim was created (not billed: the job waits for the boot on both sides, "
            f"only later); the driver saw a job's claims Ready {r.ready_ms:.0f} ms after its boot ended (the "
            f"operation poll, the status writes, the watch: {r.ready_ms / 1000 * k:.0f} s of the trace billed per "
            f"boot); a deallocation began {r.idle_late_ms:.0f} ms after the idle timeout past the claim's deletion (the "
            f"watch event, the engine's timer: {r.idle_late_ms / 1000 * k:.0f} s of the trace per switch-off); a job "
            f"on warm VMs waited {r.claim_wait_warm_ms:.0f} ms for Ready. Boots x the Ready lag plus switch-offs x the "
            f"idle lag make {self.explained_hours:+,.2f} VM-h of the {r.billed_hours - m.billed_hours:+,.2f} VM-h. "
            f"The rest: which VM a job gets depends on what the driver sees through the watch, where the model sees "
            f"the VMs' state at once, so a VM released just before can be picked in another order (another boot "
            f"count); boots {r.boots} vs {m.boots} here.",
        ]


def load_average() -> float | None:
    """What else runs, in the one number Linux keeps: the 1-minute load average."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def run(*, trace: Path = TRACE, k: int = K, workdir: Path, cluster: str = CLUSTER, note: str = "") -> CrossCheck:
    day = busiest_day(load(cluster, trace), cluster=cluster)
    expected = model(day)
    before = load_average()
    real = asyncio.run(replay(day, k=k, workdir=workdir))
    after = load_average()
    shown = "unknown" if before is None or after is None else f"{before:.1f} at the start, {after:.1f} at the end"
    machine = f"the machine's 1-minute load average was {shown} ({os.cpu_count()} cores)" + (f"; {note}" if note else "")
    return CrossCheck(expected, real, machine)
