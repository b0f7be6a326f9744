"""The benchmark suite: three worlds of separate processes, and the order they run in.

- World C (compare): the operator flips 100 GpuVms (once as shipped, once with its own pacing
  off, each in a subscription of its own); its simulator then serves the baseline script
  (bench/script_baseline.py), which handles 100 more VMs one queue message at a time.
- World R (reaction, completion, bulk reads, footprint): one operator, one simulator with three
  subscriptions of 10, 100 and 1,000 VMs. 200 flips with a single GpuVm present; then every GpuVm
  is created and settles; 200 flips again with all present; later a settled window (CPU, memory,
  requests per observation interval).
- World B (burst): one emulator, two simulators, two operators. (b): ARM's write bucket relaxed,
  in the simulator and in the operator (``--azure-budget write=...``), every other budget as shipped; (a): as shipped, every Azure limit on. 1,000 GpuVms flipped at once.

- After everything else stopped, alone on the machine: bench/census.py (tracemalloc, a process of
  its own), then world S (scale, bench/scale.py) with 1,000 and then 10,000 GpuVms; the money trace
  (bench/money.py) runs after the report is written. About 20 minutes in all on two cores.

Order of the first three worlds, chosen so they fit in ten minutes without two CPU-bound
measurements ever overlapping: C's operator side; R's flips and settling; B's settling and
burst (b); then, together, R's settled window, the baseline script and burst (a). None of those
three is CPU-bound: the window measures an idle operator's own CPU time and memory and counts
requests, the script sleeps on 1 s polls, burst (a) is paced by the Azure budget at 8 writes/s.
Burst (a) starts first and the window only after (a)'s first flurry of patches and writes.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import measure
from bench.measure import CpuMeter, FlipSample, summary_ms
from bench.procs import Proc, Processes, shown_command
from bench.world import Fleet, World, subscription_id

SCENARIOS = ("reaction", "completion", "bulk", "footprint", "burst", "compare", "scale", "adoption", "census", "money")
# "money" is bench/money.py (no processes): python -m bench runs it after the suite, into the same report.
RELAXED_PER_VM = ("UpdateVMResource=1000000/1000000", "DeleteVMResource=1000000/1000000")
RELAXED_WRITES = ("SubscriptionWrites=1000000/1000000",)


@dataclass(frozen=True)
class Plan:
    flips: int = 200
    fleet_sizes: tuple[int, ...] = (10, 100, 1000)  # bulk reads; the largest fleet also hosts reaction and footprint
    page_size: int = 100
    resync: float = 60.0  # world R's --resync-interval (60 is the default)
    window: float = 125.0  # settled seconds measured at least: two walks apart at the default resync, plus margin
    reaction_start: float = 0.02  # simulated start/deallocate seconds of world R's VMs
    operation_poll: float = 0.02  # world R's --operation-poll (its simulator sends Retry-After 0)
    burst_n: int = 1000
    burst_start: float = 60.0
    burst_sends_timeout: float = 240.0
    burst_a_wait_ready: bool = False  # (a) cannot be Ready in 65 s; waiting for it costs minutes
    burst_a_head_start: float = 12.0  # seconds (a) runs alone before the settled window begins
    compare_n: int = 100
    compare_start: float = 1.0
    scale_sizes: tuple[int, ...] = (1000, 10000)  # world S (bench/scale.py), one after the other, alone
    scale_reaction_flips: int = 200
    scale_resync: float | None = None  # None: the operator's default (60 s)
    census_gpuvms: int = 300  # tracemalloc in one process with the emulator and simulator: 1,000 take >5 min here
    # World A (bench/adoption.py), on the real control plane only: (settled GpuVms, GpuVms applied at once)
    adoption_added: tuple[int, int] = (5000, 5000)
    quick: bool = False


FULL = Plan()
QUICK = Plan(flips=20, fleet_sizes=(10, 30, 100), page_size=10, resync=5.0, window=12.0, burst_n=100,
             burst_start=10.0, burst_sends_timeout=60.0, burst_a_wait_ready=True, burst_a_head_start=3.0,
             compare_n=10, scale_sizes=(300,), scale_reaction_flips=20, scale_resync=5.0, census_gpuvms=100,
             adoption_added=(100, 100), quick=True)


@dataclass
class Results:
    plan: Plan
    data: dict[str, Any] = field(default_factory=dict)
    commands: dict[str, list[str]] = field(default_factory=dict)
    cpu: dict[str, Any] = field(default_factory=dict)
    setup: dict[str, float] = field(default_factory=dict)

    def phase_cpu(self, name: str, meter: CpuMeter) -> None:
        self.cpu[name] = asdict(meter.read())


def _say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _named(procs: Processes, *suffixes: str) -> list[Proc]:
    return [p for p in procs.procs if p.name.endswith(suffixes)]


def _flip_summary(samples: Sequence[FlipSample], gpuvms: int) -> dict[str, Any]:
    return {
        "gpuvms": gpuvms,
        "flips": len(samples),
        "reaction": summary_ms([s.reaction for s in samples]),
        "completion": summary_ms([s.completion for s in samples]),
        "start_statuses": sorted({s.start_status for s in samples}),
        "reaction_ms": [round(1000 * s.reaction, 3) for s in samples],
        "completion_ms": [round(1000 * s.completion, 3) for s in samples],
    }


async def _flips(world: World, side: str, fleet: Fleet, plan: Plan, gpuvms: int) -> dict[str, Any]:
    admin = world.sides[side].admin
    key, vm = fleet.keys[0], fleet.names[0]
    samples = []
    deadline = time.monotonic() + 60 + 2 * plan.flips  # bounded whatever happens
    for _ in range(plan.flips):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{plan.flips} flips did not finish in time")
        samples.append(await measure.flip_once(world, admin, key, vm, start_seconds=plan.reaction_start))
    return _flip_summary(samples, gpuvms)


def _throttle_wait(operator: Any) -> dict[str, float]:
    """gpuvm_azure_throttle_wait_seconds_total by kind, from the operator's /metrics."""
    out: dict[str, float] = {}
    if operator is None:
        return out
    for line in operator.metrics().splitlines():
        if line.startswith("gpuvm_azure_throttle_wait_seconds_total{"):
            kind = line.split('kind="', 1)[1].split('"', 1)[0]
            out[kind] = float(line.rsplit(" ", 1)[1])
    return out


def _delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items()}


# ---- world C: the comparison with the script this project replaces -----------------------------


@dataclass
class CompareWorld:
    world: World
    script_fleet: Fleet


async def compare_operator(procs: Processes, plan: Plan, results: Results, opened: list[World]) -> CompareWorld:
    shipped = Fleet(subscription_id(301), "rg-compare", "compare", "op", plan.compare_n)
    unpaced = Fleet(subscription_id(303), "rg-compare", "compare-unpaced", "up", plan.compare_n)
    script_fleet = Fleet(subscription_id(302), "rg-compare", "compare-script", "sc", plan.compare_n)
    world = await World.start(procs, name="kube-emulator-c", opened=opened)
    sim_flags = [f"--start-seconds={plan.compare_start:g}", f"--deallocate-seconds={plan.compare_start:g}", "--retry-after=1"]
    world.add_simulator("c", [shipped, unpaced, script_fleet], flags=sim_flags)
    world.add_operator("c", subscription=shipped.subscription, flags=["--namespace", shipped.namespace])
    side = world.sides["c"]
    unpaced_operator = world.add_operator("c0", simulator_of="c", subscription=unpaced.subscription,
                                          flags=["--namespace", unpaced.namespace, "--azure-budget-share=0"])
    results.commands["world C (compare)"] = [p.command for p in _named(procs, "-c", "-c0")]
    began = time.monotonic()
    await world.create([shipped, unpaced])
    await world.settle(shipped.keys + unpaced.keys, power="Deallocated", timeout=120)
    results.setup[f"world C: create and settle 2 x {plan.compare_n} GpuVms"] = time.monotonic() - began
    data: dict[str, Any] = {"vms": plan.compare_n, "simulated_start_seconds": plan.compare_start, "retry_after_seconds": 1}
    for label, fleet, operator in (("operator", shipped, side.operator), ("operator_unpaced", unpaced, unpaced_operator)):
        counters0 = await side.admin.counters()
        meter = CpuMeter(_named(procs, "-c", "-c0"))
        t0, _ = await world.flip(fleet.keys, "Running")
        done = await world.settle(fleet.keys, power="Running", timeout=120)
        results.phase_cpu(f"compare: {label.replace('_', ' ')} flips {plan.compare_n}", meter)
        counters = await side.admin.counters()
        delta = {k: n - counters0.get(k, 0) for k, n in counters.items()}
        data[f"{label}_seconds"] = done - t0
        data[f"{label}_409"] = measure.count_status(delta, 409)
        data[f"{label}_429"] = measure.count_status(delta, 429)
        data[f"{label}_throttle_wait"] = _throttle_wait(operator)
    results.data["compare"] = data
    for name in ("c", "c0"):
        world.stop_operator(name)  # the simulator stays up for the script
    procs.stop(world.emulator.proc)
    return CompareWorld(world, script_fleet)


async def compare_script(c: CompareWorld, results: Results, *, timeout: float) -> None:
    sim = c.world.sides["c"].simulator
    _say(f"compare: the baseline script handles {len(c.script_fleet.names)} queue messages in turn")
    argv, process = measure.run_script_baseline(sim, subscription=c.script_fleet.subscription,
                                                resource_group=c.script_fleet.resource_group, vms=c.script_fleet.names)
    results.commands["world C (compare)"].append(shown_command(argv))
    outcome = await measure.finish_script(process, timeout=timeout)
    states = {v["name"]: v["powerState"] for v in await c.world.sides["c"].admin.vms()}
    data = results.data["compare"]
    data.update({
        "script_seconds": outcome["seconds"],
        "script_errors": outcome["errors"],
        "script_cpu_seconds": outcome["cpu_seconds"],
        "script_running_after": sum(1 for n in c.script_fleet.names if states.get(n) == "running"),
        "script_per_message_p50_s": statistics.median(o["seconds"] for o in outcome["outcomes"]),
        "ratio": outcome["seconds"] / data["operator_seconds"],
        "ratio_unpaced": outcome["seconds"] / data["operator_unpaced_seconds"],
    })


# ---- world R: reaction, completion, bulk reads, footprint ----------------------------------------


@dataclass
class ReactionWorld:
    world: World
    fleets: list[Fleet]
    settled_at: float


async def world_r(procs: Processes, plan: Plan, results: Results, wanted: set[str], opened: list[World]) -> ReactionWorld:
    """Start world R, flip with one GpuVm, grow to all, flip again; leave it running for the window."""
    fleets = [Fleet(subscription_id(100 + i), f"rg-{n}", f"bulk-{n}", f"v{n}", n,
                    timings={"start": plan.reaction_start, "deallocate": plan.reaction_start})
              for i, n in enumerate(plan.fleet_sizes)]
    big = fleets[-1]  # also hosts the flipped VM: its subscription's walk lists all of them
    total = sum(plan.fleet_sizes)
    world = await World.start(procs, name="kube-emulator-r", opened=opened)
    world.add_simulator("r", fleets, flags=["--retry-after=0", f"--page-size={plan.page_size}"], limits=RELAXED_PER_VM,
                        log_size=100_000)
    operator = world.add_operator("r", subscription=big.subscription,
                                  flags=[f"--resync-interval={plan.resync:g}", f"--operation-poll={plan.operation_poll:g}"])
    results.commands["world R (reaction, completion, bulk, footprint)"] = [p.command for p in _named(procs, "-r")]
    mine = _named(procs, "-r")
    flips = bool({"reaction", "completion"} & wanted)
    rss_one = None
    if flips:
        await world.create([Fleet(big.subscription, big.resource_group, big.namespace, big.prefix, 1)])
        await world.settle(big.keys[:1], power="Deallocated", timeout=60)
        rss_one = operator.proc.usage().rss_mib
        _say(f"reaction: {plan.flips} flips with 1 GpuVm present")
        meter, waits = CpuMeter(mine), _throttle_wait(operator)
        results.data["reaction_1"] = await _flips(world, "r", big, plan, 1) | {"pacer_wait": _delta(waits, _throttle_wait(operator))}
        results.phase_cpu("reaction, 1 GpuVm", meter)
    _say(f"creating {total} GpuVms in {len(fleets)} subscriptions; they settle within Azure's read budget")
    began = time.monotonic()
    meter = CpuMeter(mine)
    counters0 = await world.sides["r"].admin.counters()
    await world.create(fleets, skip=set(world.watcher.objects))
    await world.settle([k for f in fleets for k in f.keys], power="Deallocated", timeout=300)
    settled_at = time.monotonic()
    results.setup[f"world R: create and settle {total} GpuVms"] = settled_at - began
    results.phase_cpu(f"world R: create and settle {total} GpuVms", meter)
    counters = await world.sides["r"].admin.counters()
    results.data["settle_r"] = {
        "gpuvms": total, "seconds": settled_at - began, "operator_rss_mib_one_gpuvm": rss_one,
        "gpuvm_json": measure.object_bytes(world.watcher.objects.values()),
        "requests": {f"{op} {st}": n - counters0.get((op, st), 0) for (op, st), n in sorted(counters.items())
                     if n - counters0.get((op, st), 0)},
    }
    if flips:
        _say(f"reaction: {plan.flips} flips with {total} GpuVms present")
        meter, waits = CpuMeter(mine), _throttle_wait(operator)
        results.data["reaction_n"] = await _flips(world, "r", big, plan, total) | {"pacer_wait": _delta(waits, _throttle_wait(operator))}
        results.phase_cpu(f"reaction, {total} GpuVms", meter)
    return ReactionWorld(world, fleets, settled_at)


async def _quiet(r: ReactionWorld, plan: Plan) -> None:
    """Wait until every subscription was walked after settling and no GpuVm changed for 3 s.

    The first walk after a GpuVm's own read rewrites its status once (see docs/benchmarks.md,
    "status.vm.size"), so "settled" starts after it, not when Ready first turned True."""
    world, admin = r.world, r.world.sides["r"].admin
    deadline = time.monotonic() + plan.resync + 30
    quiet_since, events = time.monotonic(), world.watcher.events
    while time.monotonic() < deadline:
        if world.watcher.events != events:
            quiet_since, events = time.monotonic(), world.watcher.events
        log = await admin.log(5_000)
        walked = all(any(w.start > r.settled_at for w in measure.walks_of(log, f.subscription)) for f in r.fleets)
        if walked and time.monotonic() - quiet_since >= 3:
            return
        await asyncio.sleep(0.5)
    _say("warning: world R did not go quiet; measuring anyway")


async def settled_window(r: ReactionWorld, procs: Processes, plan: Plan, results: Results,
                         during: Callable[[], Any] | None) -> None:
    await _quiet(r, plan)
    world, admin = r.world, r.world.sides["r"].admin
    operator = world.sides["r"].operator
    assert operator is not None
    since, events0 = time.monotonic(), world.watcher.events
    _say(f"settled window: at least {plan.window:g} s")
    meter = CpuMeter(_named(procs, "-r"))
    background = asyncio.ensure_future(during()) if during is not None else None
    try:
        end = since + plan.window
        while time.monotonic() < end or (background is not None and not background.done()):
            await asyncio.sleep(0.5)
            if time.monotonic() > end + 900:
                raise TimeoutError("the settled window did not end")
        window = meter.read()
        until = time.monotonic()
        if background is not None:
            await background  # raises what the script raised
    finally:
        if background is not None and not background.done():
            background.cancel()
    requests = [q for q in await admin.log(100_000) if since <= q.time <= until]
    results.data["bulk"] = [
        asdict(measure.interval_counts(requests, subscription=f.subscription, gpuvms=f.count, page_size=plan.page_size,
                                       since=since, until=until, resync=plan.resync)) | {"resync_seconds": plan.resync}
        for f in r.fleets
    ]
    results.data["footprint"] = {
        "gpuvms": sum(f.count for f in r.fleets),
        "window_seconds": window.seconds,
        "resync_seconds": plan.resync,
        "cpu_percent": window.cpu_percent,
        "peak_percent": window.peak_percent,
        "rss_mib": window.rss_mib,
        "operator_peak_rss_mib": operator.proc.peak_rss_mib,
        "operator_rss_mib_one_gpuvm": results.data.get("settle_r", {}).get("operator_rss_mib_one_gpuvm"),
        "status_changes_in_window": world.watcher.events - events0,
        "azure_requests_in_window": len(requests),
    }
    results.cpu["world R: settled window"] = asdict(window)


# ---- world B: the burst ------------------------------------------------------------------------


@dataclass
class BurstWorld:
    world: World
    fa: Fleet
    fb: Fleet


async def world_b(procs: Processes, plan: Plan, results: Results, opened: list[World]) -> BurstWorld:
    """Start world B, settle both fleets, run burst (b); leave it running for burst (a)."""
    fa = Fleet(subscription_id(201), "rg-burst", "burst-a", "a", plan.burst_n)
    fb = Fleet(subscription_id(202), "rg-burst", "burst-b", "b", plan.burst_n)
    world = await World.start(procs, name="kube-emulator-burst", opened=opened)
    sim_flags = [f"--start-seconds={plan.burst_start:g}"]
    world.add_simulator("a", [fa], flags=sim_flags, log_size=200_000)
    world.add_simulator("b", [fb], flags=sim_flags, limits=RELAXED_WRITES, log_size=200_000)
    world.add_operator("a", subscription=fa.subscription, flags=["--namespace", fa.namespace])
    world.add_operator("b", subscription=fb.subscription,
                       flags=["--namespace", fb.namespace, "--azure-budget=write=1000000/1000000", f"--max-operations={plan.burst_n}"])
    results.commands["world B (burst)"] = [p.command for p in _named(procs, "-burst", "-b", "-a")]
    _say(f"burst: creating 2 x {plan.burst_n} GpuVms; they settle within Azure's read budget")
    began = time.monotonic()
    await world.create([fa, fb])
    await world.settle(fa.keys + fb.keys, power="Deallocated", timeout=300)
    results.setup[f"world B: create and settle 2 x {plan.burst_n} GpuVms"] = time.monotonic() - began
    _say(f"burst (b): {plan.burst_n} GpuVms to Running at once, write bucket relaxed on both sides")
    b = await measure.burst(world, world.sides["b"].admin, fb.keys, fb.names, start_seconds=plan.burst_start,
                            procs=_named(procs, "-b", "-burst"),
                            sends_timeout=plan.burst_sends_timeout, ready_timeout=plan.burst_start + 60)
    operator_b = world.sides["b"].operator
    assert operator_b is not None
    results.data["burst_b"] = asdict(b) | {"throttle_wait": _throttle_wait(operator_b),
                                           "operator_log": operator_b.proc.log_stats()}
    if b.cpu is not None:
        results.cpu["burst (b)"] = asdict(b.cpu)
    return BurstWorld(world, fa, fb)


async def burst_a(bw: BurstWorld, procs: Processes, plan: Plan, results: Results) -> None:
    world, fa = bw.world, bw.fa
    _say(f"burst (a): {plan.burst_n} GpuVms to Running at once, as shipped (Azure's limits, 80 % budget share)")
    a = await measure.burst(world, world.sides["a"].admin, fa.keys, fa.names, start_seconds=plan.burst_start,
                            procs=_named(procs, "-a", "-burst"), sends_timeout=plan.burst_sends_timeout,
                            ready_timeout=(plan.burst_sends_timeout + plan.burst_start + 30) if plan.burst_a_wait_ready else None)
    results.data["burst_a"] = asdict(a) | {"throttle_wait": _throttle_wait(world.sides["a"].operator)}
    if a.cpu is not None:
        results.cpu["burst (a), alongside the settled window"] = asdict(a.cpu)


# ---- world S: scale (bench/scale.py), and the memory census ----------------------------------------


def real_control_plane(results: Results) -> bool:
    """Whether the real control plane's binaries are there (``$GPUVM_KUBE_ASSETS``); says so when not."""
    from testbed.controlplane import AssetsMissing, assets

    try:
        assets()
    except AssetsMissing as e:
        results.data["real_control_plane"] = {"available": False, "reason": str(e)}
        _say(f"the worlds on the real control plane are skipped: {e}")
        return False
    results.data["real_control_plane"] = {"available": True}
    return True


async def scale_worlds(procs: Processes, plan: Plan, results: Results, opened: list[World], *, real: bool) -> None:
    """World S for each size in turn, on the emulator and (``real``) on the real control plane,
    alone on the machine (cold start and reaction are CPU-bound)."""
    from bench import scale

    out = results.data.setdefault("scale", [])
    for n in plan.scale_sizes:
        for on_real in (False, True) if real else (False,):
            splan = scale.ScalePlan(n, page_size=100, window=plan.window, resync=plan.scale_resync,
                                    reaction_flips=min(plan.scale_reaction_flips, n // 3), flips=min(100, n // 3))
            data, cpu = await scale.run(procs, splan, opened=opened, real=on_real)
            where = data["api_server"]
            results.commands[f"world S (scale, {n:,} GpuVms, {where})"] = data.pop("commands")
            results.setup[f"world S: create {n:,} GpuVms as kubectl apply does ({where})"] = data["create_seconds"]
            results.cpu.update(cpu)
            out.append(data)


async def adoption_world(procs: Processes, plan: Plan, results: Results, opened: list[World]) -> None:
    """World A (bench/adoption.py): GpuVms applied at once while others are settled, on the real control plane."""
    from bench import adoption

    settled, added = plan.adoption_added
    aplan = adoption.AdoptionPlan(settled, added=added, peak_mib=None if plan.quick else adoption.PEAK_MIB)
    data = await adoption.run(procs, aplan, real=True, opened=opened)
    results.commands[f"world A ({added:,} applied while {settled:,} settled, {data['api_server']})"] = [data.pop("command")]
    data["targets_plan"] = asdict(aplan)
    results.data["adoption"] = data


async def census(plan: Plan, results: Results, workdir: Path) -> None:
    """bench/census.py in a process of its own (tracemalloc sees one whole process)."""
    import json
    import sys

    target = workdir / "census.json"
    argv = [sys.executable, "-m", "bench.census", "--gpuvms", str(plan.census_gpuvms), "--json", str(target)]
    _say(f"census: tracemalloc of the operator with {plan.census_gpuvms:,} GpuVms")
    process = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        _, err = await asyncio.wait_for(process.communicate(), 900)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    if process.returncode != 0:
        raise RuntimeError(f"bench.census failed ({process.returncode}): {err.decode()[-2000:]}")
    results.data["census"] = json.loads(target.read_text())
    results.commands["census"] = [shown_command(argv)]


# ---- the whole run -------------------------------------------------------------------------------


async def _close(procs: Processes, world: World | None, *suffixes: str) -> None:
    if world is not None:
        await world.close()
    for proc in _named(procs, *suffixes):
        procs.stop(proc)


async def run(plan: Plan, wanted: set[str], workdir: Path) -> Results:
    results = Results(plan)
    opened: list[World] = []
    with Processes(workdir) as procs:
        c: CompareWorld | None = None
        r: ReactionWorld | None = None
        b: BurstWorld | None = None
        try:
            if "compare" in wanted:
                _say(f"compare: the operator flips {plan.compare_n} GpuVms ({plan.compare_start:g} s simulated start), "
                     "as shipped and with its pacing off")
                c = await compare_operator(procs, plan, results, opened)
            if wanted & {"reaction", "completion", "bulk", "footprint"}:
                r = await world_r(procs, plan, results, wanted, opened)
                if not wanted & {"bulk", "footprint"}:
                    await _close(procs, r.world, "-r")
                    r = None
            if "burst" in wanted:
                b = await world_b(procs, plan, results, opened)
                await _close(procs, None, "-b")  # burst (b) is done; its operator and simulator go
            # Together now: none of these is CPU-bound (see the module docstring).
            parallel = CpuMeter(procs.procs)
            a_task = asyncio.ensure_future(burst_a(b, procs, plan, results)) if b is not None else None
            if a_task is not None and (r is not None or c is not None):
                await asyncio.sleep(plan.burst_a_head_start)
            script_timeout = 60 + plan.compare_n * (plan.compare_start + 5) * 2

            async def script() -> None:
                assert c is not None
                await compare_script(c, results, timeout=script_timeout)

            if r is not None:
                await settled_window(r, procs, plan, results, during=script if c is not None else None)
            elif c is not None:
                await script()
            if a_task is not None:
                await a_task
            if r is not None or c is not None or b is not None:
                results.phase_cpu("together: settled window, baseline script, burst (a)", parallel)
            for world in opened:  # the scale worlds and the census run alone
                await world.close()
            for proc in list(procs.procs):
                procs.stop(proc)
            if "census" in wanted:
                await census(plan, results, workdir)
            real = bool(wanted & {"scale", "adoption"}) and real_control_plane(results)
            if "scale" in wanted:
                await scale_worlds(procs, plan, results, opened, real=real)
            if "adoption" in wanted and real:
                await adoption_world(procs, plan, results, opened)
        finally:
            for world in reversed(opened):  # the Processes context stops every process after this
                await world.close()
    return results
