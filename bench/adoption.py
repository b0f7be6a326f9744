"""World A (first adoption): the operator's memory while it takes on GpuVms it has never seen.

On a real API server the whole list, and the watch events of the operator's own first writes
(kopf's finalizer, the first status), arrive as fast as they are made; an operator that holds
what arrived faster than it handled it grows with the fleet (issue 23: 2.7 GiB for 10,000). So
this world runs on the real control plane whenever ``$GPUVM_KUBE_ASSETS`` is there (and says so
when it is not), with GpuVms created as ``kubectl apply`` creates them (last-applied annotation,
managedFields: 2.6 KB of JSON each when created, about twice that once adopted), the operator as
shipped:

1. **first adoption of N**: N GpuVms exist, none adopted; ``gpuvm-operator run`` starts. Time
   from its process start until the watch shows every GpuVm Ready and Deallocated; peak RSS
   sampled every ``SAMPLE`` seconds from its start, and the kernel's high-water mark (VmHWM);
   its log lines and bytes.
2. **added at once** (``plan.added``): once settled, ``added`` more GpuVms are applied (a GitOps
   sync of a few thousand): peak RSS until those are Ready too.
3. **restart**: a new operator process over every settled GpuVm; its RSS ``RESTART_RSS_AFTER``
   seconds after it started (what the old table called settled).

A memory guard fails the run (``targets`` turn ``met: False`` and ``python -m bench`` exits 1)
when a sampled peak exceeds the plan's target.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

from bench.measure import SAMPLE, PeakSampler, hwm_mib, log_volume
from bench.procs import Processes
from bench.scale import API_SERVERS, Target, _at_most, _no_events
from bench.world import Fleet, World, subscription_id

RESTART_RSS_AFTER = 30.0
PEAK_MIB = 400.0  # issue 23: 5,000 applied at once while 5,000 are settled, peak RSS


@dataclass(frozen=True)
class AdoptionPlan:
    gpuvms: int
    added: int = 0
    transition: float = 1.0
    page_size: int = 100
    peak_mib: float | None = None  # memory guard: sampled peak RSS of the first adoption, the added and the restart
    ready_seconds: float | None = None  # first adoption: all Ready within
    restart_mib: float | None = None  # restart: RSS 30 s after the start
    timeout: float = 900.0


def _say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


async def run(procs: Processes, plan: AdoptionPlan, *, real: bool, opened: list[World]) -> dict[str, Any]:
    """World A for ``plan``; leaves nothing running."""
    n, added = plan.gpuvms, plan.added
    fleet = Fleet(subscription_id(700 + len(str(n)) + (10 if added else 0)), "rg-adopt", f"adopt-{n}", "a", n + added)
    first, later = fleet.keys[:n], fleet.keys[n:]
    side = f"a{n}{'+' + str(added) if added else ''}"
    where = API_SERVERS[real]
    out: dict[str, Any] = {"gpuvms": n, "added": added, "api_server": where, "transition_seconds": plan.transition}
    world = await World.start(procs, name=f"kube-{'real' if real else 'emulator'}-{side}", opened=opened, real=real)
    try:
        sim_flags = [f"--page-size={plan.page_size}", f"--start-seconds={plan.transition:g}",
                     f"--deallocate-seconds={plan.transition:g}", f"--retry-after={plan.transition:g}"]
        world.add_simulator(side, [fleet], flags=sim_flags, log_size=max(200_000, 20 * (n + added)))
        _say(f"adoption {n:,} ({where}): creating {n:,} GpuVms as kubectl apply does, no operator running")
        began = time.monotonic()
        await world.create([fleet], parallel=32, skip=later)
        out["create_seconds"] = round(time.monotonic() - began, 1)
        bodies = [o for k, o in world.watcher.objects.items() if k[0] == fleet.namespace][:200]
        out["object_json_bytes"] = round(sum(len(json.dumps(o)) for o in bodies) / max(len(bodies), 1))

        _say(f"adoption {n:,} ({where}): first adoption")
        flags = ["--namespace", fleet.namespace]
        operator = world.add_operator(side, subscription=fleet.subscription, flags=flags)
        sampler = PeakSampler(operator.proc)
        done = await world.settle(first, power="Deallocated", timeout=plan.timeout)
        await _no_events(world, quiet=3.0, timeout=120.0)
        lines, size = log_volume(operator.proc)
        out["adoption"] = {
            "seconds": round(done - operator.spawned, 1),
            **sampler.stop(),
            "hwm_rss_mib": round(hwm_mib(operator.proc), 1),
            "rss_mib_after": round(operator.proc.usage().rss_mib, 1),
            "log_lines": lines, "log_bytes": size,
        }
        _say(f"adoption {n:,} ({where}): {out['adoption']}")

        if added:
            _say(f"adoption {n:,} ({where}): {added:,} more applied at once")
            log0 = log_volume(operator.proc)
            sampler = PeakSampler(operator.proc)
            began = time.monotonic()
            await world.create([fleet], parallel=64, skip=first)
            created = time.monotonic()
            done = await world.settle(later, power="Deallocated", timeout=plan.timeout)
            out["added_at_once"] = {
                "create_seconds": round(created - began, 1),
                "seconds_after_last_create": round(done - created, 1),
                **sampler.stop(),
                "hwm_rss_mib": round(hwm_mib(operator.proc), 1),
                "log_lines": log_volume(operator.proc, log0)[0],
            }
            _say(f"adoption {n:,} ({where}): {out['added_at_once']}")
            await _no_events(world, quiet=3.0, timeout=120.0)

        world.stop_operator(side)
        _say(f"adoption {n:,} ({where}): restart over {n + added:,} adopted GpuVms")
        operator = world.add_operator(side, subscription=fleet.subscription, flags=flags)
        sampler = PeakSampler(operator.proc)
        await asyncio.sleep(max(0.0, operator.spawned + RESTART_RSS_AFTER - time.monotonic()))
        out["restart"] = {"rss_mib_30s": round(operator.proc.usage().rss_mib, 1), **sampler.stop(),
                          "log_lines": log_volume(operator.proc)[0]}
        _say(f"adoption {n:,} ({where}): {out['restart']}")
        out["command"] = operator.proc.command
        world.stop_operator(side)
    finally:
        await world.close()
        for proc in [p for p in procs.procs if p.name.endswith(f"-{side}")]:
            procs.stop(proc)
    return out


def targets(plan: AdoptionPlan, result: dict[str, Any]) -> list[Target]:
    """The memory guard and the time targets of one run of world A."""
    n, where = plan.gpuvms, result["api_server"]
    out: list[Target] = []
    adoption = result.get("adoption") or {}
    if plan.peak_mib is not None:
        out.append(Target(f"first adoption of {n:,} ({where}): peak RSS, sampled every {SAMPLE:g} s",
                          f"<= {plan.peak_mib:g} MiB", f"{adoption.get('peak_rss_mib')} MiB",
                          _at_most(adoption.get("peak_rss_mib"), plan.peak_mib)))
    if plan.ready_seconds is not None:
        out.append(Target(f"first adoption of {n:,} ({where}): all Ready", f"<= {plan.ready_seconds:g} s",
                          f"{adoption.get('seconds')} s", _at_most(adoption.get("seconds"), plan.ready_seconds)))
    if plan.added and plan.peak_mib is not None:
        added = result.get("added_at_once") or {}
        out.append(Target(f"{plan.added:,} applied at once while {n:,} are settled ({where}): peak RSS",
                          f"<= {plan.peak_mib:g} MiB", f"{added.get('peak_rss_mib')} MiB",
                          _at_most(added.get("peak_rss_mib"), plan.peak_mib)))
    restart = result.get("restart") or {}
    if plan.peak_mib is not None and restart:
        # A restart lists every GpuVm at once: the largest peak, the one deploy/manifests' limit is sized for.
        out.append(Target(f"restart over {n + plan.added:,} adopted ({where}): peak RSS", f"<= {plan.peak_mib:g} MiB",
                          f"{restart.get('peak_rss_mib')} MiB", _at_most(restart.get("peak_rss_mib"), plan.peak_mib)))
    if plan.restart_mib is not None:
        out.append(Target(f"restart over {n + plan.added:,} adopted ({where}): RSS {RESTART_RSS_AFTER:g} s after start",
                          f"<= {plan.restart_mib:g} MiB", f"{restart.get('rss_mib_30s')} MiB",
                          _at_most(restart.get("rss_mib_30s"), plan.restart_mib)))
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.adoption N [ADDED] [--emulator]``: one run of world A, printed as JSON."""
    import argparse
    import tempfile
    from pathlib import Path

    parser = argparse.ArgumentParser(prog="python -m bench.adoption")
    parser.add_argument("gpuvms", type=int)
    parser.add_argument("added", type=int, nargs="?", default=0)
    parser.add_argument("--emulator", action="store_true", help="on the emulator instead of the real control plane")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-adoption-"))
    plan = AdoptionPlan(args.gpuvms, args.added)

    async def go() -> dict[str, Any]:
        opened: list[World] = []
        with Processes(workdir) as procs:
            try:
                return await run(procs, plan, real=not args.emulator, opened=opened)
            finally:
                for world in opened:
                    await world.close()

    print(json.dumps(asyncio.run(go()), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
