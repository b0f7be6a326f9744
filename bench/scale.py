"""World S (scale): one subscription of N simulated VMs and N GpuVms, the operator as shipped.

The same procedure runs for N = 1,000 and N = 10,000 (issue 10's table, issue 14's writes per
interval, issue 15's 100 flips), so the two columns of the report differ only in N:

1. the emulator and the simulator start (list pages of ``page_size`` VMs, as a real ARM endpoint
   pages; every start and deallocate takes ``transition`` seconds; Azure's throttling on);
2. N GpuVms are created as ``kubectl apply`` creates them, while no operator runs;
3. **first adoption**: ``gpuvm-operator run`` (shipped defaults) starts; time from its process
   start until the watch shows every GpuVm Ready for its generation and Deallocated, as Azure has
   it (each GpuVm gets kopf's finalizer and its first status: two writes and their events);
   once no event came for 3 s, that operator stops (SIGTERM, as a pod is stopped);
   **cold start** (issue 10's): a new operator process over the N settled GpuVms; time from its
   process start until it has confirmed every GpuVm Ready and current (its own
   ``gpuvm_intent_to_desired_seconds_count`` reaches N; a settled status does not change, so
   the watch cannot tell), with the status changes and Azure requests it caused;
4. **settled window**: once nothing changed for 3 s (the cold start walked every VM already);
   at least ``window`` seconds of the operator's CPU and memory, Azure requests per
   observation interval, status writes by cause (``gpuvm_status_writes_total``);
5. **reaction**: ``reaction_flips`` GpuVms, one after the other, are patched to Running; each
   sample is the time from the PATCH to the start request in the simulator's log (distinct VMs,
   so Azure's per-VM limits stay on);
6. **100 flips**: once those are Running and Ready and the write budget has refilled, ``flips``
   other GpuVms are patched to Running at once: time from the last start's end in Azure (the
   simulator's operation log) to all Running and Ready, 429s, and the operator's reads by
   purpose (``gpuvm_azure_reads_total``) during it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass
from typing import Any

from bench import measure
from bench.clients import count_status
from bench.measure import CpuMeter, PeakSampler, hwm_mib, log_volume, summary_ms
from bench.procs import Operator, Processes
from bench.world import Fleet, World, subscription_id

START = measure.START
API_SERVERS = {False: "emulator", True: "real kube-apiserver"}
REACTION_RATE = 5.0  # reaction samples a second at most


@dataclass(frozen=True)
class ScalePlan:
    gpuvms: int
    page_size: int = 100
    transition: float = 1.0  # simulated start and deallocate seconds
    retry_after: float = 1.0  # the simulator's Retry-After on running operations (scaled with the transition)
    window: float = 125.0
    resync: float | None = None  # None: the operator's default (60 s)
    reaction_flips: int = 200
    flips: int = 100
    cold_start_timeout: float = 600.0


def _say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _delta(before: dict[Any, float], after: dict[Any, float]) -> dict[Any, float]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def _counters(operator: Operator) -> dict[str, dict[str, float]]:
    return {
        "status_writes": operator.counter("gpuvm_status_writes_total", "cause"),
        "reads": operator.counter("gpuvm_azure_reads_total", "purpose"),
        "throttle_wait": operator.counter("gpuvm_azure_throttle_wait_seconds_total", "kind"),
    }


def _counters_delta(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    return {k: {label: round(v, 3) for label, v in _delta(before.get(k, {}), after[k]).items()} for k in after}


async def run(procs: Processes, plan: ScalePlan, *, opened: list[World],
              real: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """World S for ``plan.gpuvms`` on the emulator (``real``: on the real control plane); returns
    (results, {phase: CpuWindow as dict}) and leaves nothing running."""
    n = plan.gpuvms
    fleet = Fleet(subscription_id(500 + len(str(n))), "rg-scale", f"scale-{n}", "s", n)
    side_name = f"s{n}{'r' if real else ''}"
    out: dict[str, Any] = {"gpuvms": n, "page_size": plan.page_size, "transition_seconds": plan.transition,
                           "retry_after_seconds": plan.retry_after, "api_server": API_SERVERS[real]}
    cpu: dict[str, Any] = {}
    world = await World.start(procs, name=f"kube-{'real' if real else 'emulator'}-{side_name}", opened=opened, real=real)
    try:
        sim_flags = [f"--page-size={plan.page_size}", f"--start-seconds={plan.transition:g}",
                     f"--deallocate-seconds={plan.transition:g}", f"--retry-after={plan.retry_after:g}"]
        side = world.add_simulator(side_name, [fleet], flags=sim_flags, log_size=max(200_000, 20 * n))
        admin = side.admin
        _say(f"scale {n:,} ({out['api_server']}): creating {n:,} GpuVms as kubectl apply does, no operator running")
        began = time.monotonic()
        await world.create([fleet], parallel=32)
        out["create_seconds"] = time.monotonic() - began

        # ---- first adoption: GpuVms without status, no finalizer; every one gets both
        _say(f"scale {n:,} ({out['api_server']}): first adoption (no status yet)")
        op_flags = ["--namespace", fleet.namespace] + ([f"--resync-interval={plan.resync:g}"] if plan.resync else [])

        def mine() -> list[Any]:
            return [p for p in procs.procs if p.name.endswith(f"-{side_name}")]

        counters0 = await admin.counters()
        settled = world.tracker(fleet.keys, "Deallocated")
        operator = world.add_operator(side_name, subscription=fleet.subscription, flags=op_flags)
        sampler = PeakSampler(operator.proc)  # every 0.25 s: the peak of a first adoption lasts seconds
        meter = CpuMeter(mine())
        try:
            done = await world.watcher.wait(lambda: len(settled.now) == n, plan.cold_start_timeout,
                                            f"{n} GpuVms Ready after the operator started (now {len(settled.now)})")
        finally:
            world.watcher.untrack(settled)
        window = meter.read()
        cpu[f"scale {n:,}: first adoption"] = asdict(window)
        out["adoption"] = _start_record(operator, done, _delta(counters0, await admin.counters()), window)
        await _no_events(world, quiet=3.0, timeout=120.0)
        # The watch shows a status write before the operator has counted it: count once quiet.
        out["adoption"].update({k: v for k, v in _counters(operator).items() if k in ("status_writes", "reads")})
        out["adoption"]["operator_rss_mib_after"] = operator.proc.usage().rss_mib
        peak = sampler.stop()
        out["adoption"]["operator_peak_rss_mib"] = peak["peak_rss_mib"]
        out["adoption"]["peak_at_seconds"] = peak["peak_at_seconds"]
        out["adoption"]["operator_hwm_rss_mib"] = round(hwm_mib(operator.proc), 1)  # as the peak: rounding keeps the order
        out["adoption"]["log_lines"], out["adoption"]["log_bytes"] = log_volume(operator.proc)
        out["gpuvm_json"] = measure.object_bytes(list(world.watcher.objects.values())[:2000])
        world.stop_operator(side_name)

        # ---- cold start: a new operator process over N settled GpuVms (a restart, an upgrade)
        _say(f"scale {n:,} ({out['api_server']}): cold start over {n:,} settled GpuVms")
        counters0, events0 = await admin.counters(), world.watcher.events
        operator = world.add_operator(side_name, subscription=fleet.subscription, flags=op_flags)
        out["commands"] = [p.command for p in mine()]
        meter = CpuMeter(mine())
        done = await _all_current(operator, n, timeout=plan.cold_start_timeout)
        window = meter.read()
        cpu[f"scale {n:,}: cold start"] = asdict(window)
        out["cold_start"] = _start_record(operator, done, _delta(counters0, await admin.counters()), window)
        out["cold_start"]["status_changes"] = world.watcher.events - events0

        # ---- settled window: the cold start walked every VM and changed nothing (status_changes); quiet now
        await _no_events(world, quiet=3.0, timeout=120.0)
        _say(f"scale {n:,} ({out['api_server']}): settled window, at least {plan.window:g} s")
        since, events0 = time.monotonic(), world.watcher.events
        metrics0 = _counters(operator)
        meter = CpuMeter(mine())
        await asyncio.sleep(plan.window)
        window = meter.read()
        until = time.monotonic()
        cpu[f"scale {n:,}: settled window"] = asdict(window)
        log = [q for q in await admin.log(max(200_000, 20 * n)) if since <= q.time <= until]
        intervals = measure.interval_counts(log, subscription=fleet.subscription, gpuvms=n, page_size=plan.page_size,
                                            since=since, until=until, resync=plan.resync or 60.0,
                                            gap=(plan.resync or 60.0) / 3)  # only resync walks run here
        # The bound counts list_all pages; the tag pages (one per interval) are the "+ 2"'s business.
        out["settled"] = {
            "window_seconds": window.seconds,
            "resync_seconds": plan.resync or 60.0,
            "operator_cpu_percent": window.cpu_percent.get(operator.proc.name),
            "operator_peak_percent": window.peak_percent.get(operator.proc.name),
            "operator_rss_mib": window.rss_mib.get(operator.proc.name),
            "operator_peak_rss_mib": operator.proc.peak_rss_mib,
            "emulator_rss_mib": window.rss_mib.get(world.emulator.procs[0].name) if world.emulator.procs else None,
            "status_changes_in_window": world.watcher.events - events0,
            "azure_requests_in_window": len(log),
            "bulk": asdict(intervals),
            "metrics": _counters_delta(metrics0, _counters(operator)),
        }

        # ---- reaction with N present: distinct GpuVms, one after the other
        reaction_keys = fleet.keys[:plan.reaction_flips]
        _say(f"scale {n:,} ({out['api_server']}): reaction, {len(reaction_keys)} GpuVms patched to Running one after the other")
        meter = CpuMeter(mine())
        samples, statuses, delivered = [], set(), []
        for key in reaction_keys:
            began = time.monotonic()
            sample, status, watched = await _react(world, admin, key)
            samples.append(sample)
            delivered.append(watched)
            statuses.add(status)
            # Each sample is a start (a write): at most REACTION_RATE a second keeps them inside the
            # operator's write budget (8/s as shipped), so no sample waits for the pacer.
            await asyncio.sleep(max(0.0, began + 1 / REACTION_RATE - time.monotonic()))
        cpu[f"scale {n:,}: reaction"] = asdict(meter.read())
        out["reaction"] = {"flips": len(samples), "reaction": summary_ms(samples), "start_statuses": sorted(statuses),
                           "watch_delivery": summary_ms(delivered),
                           "reaction_ms": [round(1000 * s, 3) for s in samples]}
        await world.settle(reaction_keys, power="Running", timeout=120)

        # ---- the 100 flips at once (issue 15)
        flip_keys = fleet.keys[plan.reaction_flips:plan.reaction_flips + plan.flips]
        flip_names = fleet.names[plan.reaction_flips:plan.reaction_flips + plan.flips]
        await _write_budget_refilled(len(reaction_keys))
        _say(f"scale {n:,} ({out['api_server']}): {len(flip_keys)} GpuVms patched to Running at once")
        out["flips"] = await _flips(world, admin, operator, flip_keys, flip_names, plan,
                                    cpu=cpu, cpu_label=f"scale {n:,}: {len(flip_keys)} flips at once",
                                    procs=mine())
        out["operator_log"] = operator.proc.log_stats()
    finally:
        await world.close()
        for proc in [p for p in procs.procs if p.name.endswith(f"-{side_name}")]:  # also on failure
            procs.stop(proc)
    return out, cpu


def _start_record(operator: Operator, done: float, requests: dict[Any, float], window: measure.CpuWindow) -> dict[str, Any]:
    metrics = _counters(operator)
    return {
        "seconds": done - operator.spawned,
        "liveness_seconds": operator.live - operator.spawned,
        "requests": {f"{op} {st}": c for (op, st), c in sorted(requests.items())},
        "throttled": count_status(requests, 429),
        "status_writes": metrics["status_writes"],
        "reads": metrics["reads"],
        "operator_cpu_percent": window.cpu_percent.get(operator.proc.name),
        "operator_rss_mib": window.rss_mib.get(operator.proc.name),
    }


async def _all_current(operator: Operator, n: int, *, timeout: float) -> float:
    """Until the operator has confirmed every GpuVm Ready and current: each GpuVm it starts to
    drive counts once in gpuvm_intent_to_desired_seconds when its step ends Ready with the status
    written (or found unchanged). The watch cannot tell this: a settled GpuVm's status does not change."""
    deadline = time.monotonic() + timeout
    count = 0.0
    while time.monotonic() < deadline:
        for line in operator.metrics().splitlines():
            if line.startswith("gpuvm_intent_to_desired_seconds_count"):
                count = float(line.rsplit(" ", 1)[1])
        if count >= n:
            return time.monotonic()
        await asyncio.sleep(0.1)
    raise TimeoutError(f"the operator confirmed {count:.0f} of {n} GpuVms within {timeout:g} s")


async def _no_events(world: World, *, quiet: float, timeout: float) -> None:
    """Until the watch delivered nothing for ``quiet`` seconds (the operator's last writes are in)."""
    deadline = time.monotonic() + timeout
    quiet_since, events = time.monotonic(), world.watcher.events
    while time.monotonic() < deadline:
        if world.watcher.events != events:
            quiet_since, events = time.monotonic(), world.watcher.events
        elif time.monotonic() - quiet_since >= quiet:
            return
        await asyncio.sleep(0.2)


async def _react(world: World, admin: Any, key: tuple[str, str], *, timeout: float = 30.0) -> tuple[float, int, float]:
    """PATCH one Deallocated GpuVm to Running; seconds until the simulator received its start,
    and until the bench's own watch (a client like the operator's) received the change: the
    API server's share of the reaction."""
    changed = world.watcher.expect(key, lambda o: (o.get("spec") or {}).get("desiredState") == "Running")
    requested = world.watcher.expect(key, lambda o: ((o.get("status") or {}).get("lastOperation") or {}).get("action") == "Start")
    t0 = time.monotonic()
    await world.api.patch_spec(key[0], key[1], {"desiredState": "Running"})
    seen_at, _ = await measure.within(changed, timeout, f"{key[1]}: desiredState Running on the watch")
    await measure.within(requested, timeout, f"{key[1]}: lastOperation Start")
    (request,) = await measure.find_requests(admin, operation=START, vm=key[1], after=t0, timeout=timeout, limit=2_000)
    return request.time - t0, request.status, seen_at - t0


async def _write_budget_refilled(spent: int) -> None:
    """The reaction samples spent ``spent`` write tokens: give the pacer the time to refill them
    (8/s as shipped, 160 at most), so the flips start from a full bucket as a quiet operator would."""
    await asyncio.sleep(min(spent, 160) / 8)


async def _flips(world: World, admin: Any, operator: Operator, keys: list[tuple[str, str]], names: list[str],
                 plan: ScalePlan, *, cpu: dict[str, Any], cpu_label: str, procs: list[Any]) -> dict[str, Any]:
    counters0, metrics0 = await admin.counters(), _counters(operator)
    ready = world.tracker(keys, "Running")
    meter = CpuMeter(procs)
    try:
        t0, patched = await world.flip(keys, "Running")
        all_ready = await world.watcher.wait(lambda: len(ready.now) == len(keys), 300,
                                             f"{len(keys)} flipped GpuVms Running and Ready (now {len(ready.now)})")
    finally:
        world.watcher.untrack(ready)
    cpu[cpu_label] = asdict(meter.read())
    counters = _delta(counters0, await admin.counters())
    wanted = {name.lower() for name in names}
    operations = [o for o in await admin.operations() if o["vm"].lower() in wanted and o["action"] == "start"
                  and o["origin"] == "api" and o["start"] >= t0]
    ends = [o["end"] for o in operations if o["end"] is not None]
    last_end = max(ends) if len(ends) == len(keys) else None
    log = await admin.log(max(200_000, 20 * plan.gpuvms))
    starts = sorted(r.time for r in log if r.operation == START and r.status == 202 and r.time >= t0
                    and (r.vm or "").lower() in wanted)
    unobserved = [u for u in await admin.unobserved() if u["vm"].lower() in wanted]
    return {
        "flips": len(keys),
        "patch_seconds": patched - t0,
        "first_start_sent": (starts[0] - t0) if starts else None,
        "last_start_sent": (starts[-1] - t0) if starts else None,
        "last_start_ended": (last_end - t0) if last_end is not None else None,
        "all_ready": all_ready - t0,
        "ready_after_last_end": (all_ready - last_end) if last_end is not None else None,
        "completion": summary_ms([ready.first[k] - e for k, e in _ends_by_key(keys, names, operations).items()
                                  if ready.first.get(k) is not None]),
        "throttled": count_status(counters, 429),
        "conflicts": count_status(counters, 409),
        "requests": {f"{op} {st}": c for (op, st), c in sorted(counters.items())},
        "metrics": _counters_delta(metrics0, _counters(operator)),
        "longest_unobserved": max((u["longest"] for u in unobserved), default=None),
        "seen_ended_after_max": max((u["seen_ended_after"] for u in unobserved if u["seen_ended_after"] is not None), default=None),
    }


def _ends_by_key(keys: list[tuple[str, str]], names: list[str], operations: list[dict[str, Any]]) -> dict[tuple[str, str], float]:
    end_of = {o["vm"].lower(): o["end"] for o in operations if o["end"] is not None}
    return {k: end_of[n.lower()] for k, n in zip(keys, names) if n.lower() in end_of}


# ---- targets (issue 10's table, issue 14's writes, issue 15's flips) -----------------------------

RSS_TARGET_MIB = {1000: 150.0, 10000: 400.0}
COLD_START_TARGET_S = {1000: 10.0, 10000: 60.0}
# Issue 23, on the real control plane: a first adoption's peak RSS (sampled every 0.25 s) and
# the time until all are Ready. The peak is the memory guard (``python -m bench`` exits 1 when
# one is missed): deploy/manifests' limit is derived from it.
ADOPTION_PEAK_MIB = {1000: 200.0, 10000: 400.0}
ADOPTION_READY_S = {1000: 15.0, 10000: 120.0}
REACTION_TARGET_MS = (10.0, 50.0)  # p50, p99 (issue 10: with 10,000 present; held to for every N)
SETTLED_CPU_TARGET = 5.0  # % of one core, resync 60 s
FLIPS_READY_TARGET_S = 10.0  # after the last start ended in Azure


@dataclass(frozen=True)
class Target:
    what: str
    target: str
    measured: str
    met: bool | None


def _at_most(value: float | None, bound: float | None) -> bool | None:
    return None if value is None or bound is None else value <= bound


def targets(s: dict[str, Any]) -> list[Target]:
    """One world S result against its targets; a size without a target (a quick run) gets none."""
    n = s["gpuvms"]
    cold, settled, reaction, flips = s["cold_start"], s["settled"], s["reaction"]["reaction"], s["flips"]
    bulk = settled["bulk"]
    rss, rss_bound = settled["operator_rss_mib"], RSS_TARGET_MIB.get(n)
    cold_bound = COLD_START_TARGET_S.get(n)
    worst = max(bulk["counts"]) if bulk["counts"] else None
    writes = sum(settled["metrics"]["status_writes"].values())
    intervals = settled["window_seconds"] / settled["resync_seconds"]
    ready = flips["ready_after_last_end"]
    p50, p99 = reaction.get("p50_ms"), reaction.get("p99_ms")
    delivery = s["reaction"].get("watch_delivery")
    cpu = settled["operator_cpu_percent"]
    adoption = s.get("adoption") or {}
    real = s.get("api_server") == API_SERVERS[True]
    peak_bound = ADOPTION_PEAK_MIB.get(n) if real else None
    ready_bound = ADOPTION_READY_S.get(n) if real else None
    first = [
        Target("first adoption: peak RSS (sampled every 0.25 s)", f"<= {peak_bound:g} MiB" if peak_bound else "(no target)",
               f"{adoption['operator_peak_rss_mib']:.0f} MiB", _at_most(adoption["operator_peak_rss_mib"], peak_bound)),
        Target("first adoption: operator start -> all Ready", f"<= {ready_bound:g} s" if ready_bound else "(no target)",
               f"{adoption['seconds']:.1f} s", _at_most(adoption["seconds"], ready_bound)),
        Target("first adoption: log lines", "(reported)", f"{adoption.get('log_lines', 0):,}", None),
    ] if adoption.get("operator_peak_rss_mib") is not None else []
    return [*first,
        Target("operator RSS, settled", f"<= {rss_bound:.0f} MiB" if rss_bound else "(no target)",
               f"{rss:.0f} MiB (peak {settled['operator_peak_rss_mib']:.0f})", _at_most(rss, rss_bound)),
        Target("cold start: operator start -> all Ready and current", f"<= {cold_bound:g} s" if cold_bound else "(no target)",
               f"{cold['seconds']:.1f} s", _at_most(cold["seconds"], cold_bound)),
        Target("reaction (PATCH -> start request): p50", f"<= {REACTION_TARGET_MS[0]:g} ms",
               f"{p50:.1f} ms" + (f" (of which the {'API server' if real else 'emulator'}'s watch delivery "
                                  f"{delivery['p50_ms']:.1f} ms)" if delivery else ""),
               _at_most(p50, REACTION_TARGET_MS[0])),
        Target("reaction: p99", f"<= {REACTION_TARGET_MS[1]:g} ms", f"{p99:.1f} ms", _at_most(p99, REACTION_TARGET_MS[1])),
        Target(f"settled CPU (resync {settled['resync_seconds']:g} s, {settled['window_seconds']:.0f} s window)",
               f"<= {SETTLED_CPU_TARGET:g} % of a core", f"{cpu:.2f} %", _at_most(cpu, SETTLED_CPU_TARGET)),
        Target(f"bulk reads per observation interval (worst of {len(bulk['counts'])})",
               f"<= {bulk['bound']} (ceil(N/{bulk['page_size']}) + 2)", "—" if worst is None else str(worst),
               _at_most(worst, bulk["bound"])),
        Target("429s in the settled window", "0", str(bulk["throttled"]), bulk["throttled"] == 0),
        Target("status writes per resync interval, settled", "0",
               f"{writes / intervals:.1f} ({writes:.0f} in {settled['window_seconds']:.0f} s)", writes == 0),
        Target(f"{flips['flips']} flips at once: all Running and Ready after the last start ended in Azure",
               f"<= {FLIPS_READY_TARGET_S:g} s", "—" if ready is None else f"{ready:.2f} s", _at_most(ready, FLIPS_READY_TARGET_S)),
        Target(f"{flips['flips']} flips at once: 429s", "0", str(flips["throttled"]), flips["throttled"] == 0),
    ]


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.scale --gpuvms N``: world S alone, results as JSON (what the suite's scale scenario runs)."""
    import argparse
    import json
    from pathlib import Path

    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=main.__doc__)
    parser.add_argument("--gpuvms", type=int, default=1000)
    parser.add_argument("--window", type=float, default=125.0)
    parser.add_argument("--resync", type=float, default=None)
    parser.add_argument("--reaction-flips", type=int, default=200)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--workdir", type=Path, default=Path(__file__).resolve().parents[1] / "reports" / "bench-scale")
    args = parser.parse_args(argv)
    plan = ScalePlan(args.gpuvms, window=args.window, resync=args.resync, reaction_flips=args.reaction_flips)

    async def go() -> tuple[dict[str, Any], dict[str, Any]]:
        with Processes(args.workdir) as procs:
            return await run(procs, plan, opened=[])

    results, cpu = asyncio.run(go())
    text = json.dumps({"results": results, "cpu": cpu}, indent=2, default=str)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
