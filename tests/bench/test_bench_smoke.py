"""The benchmark's building blocks on a tiny world, so CI proves the benchmark code works.

One emulator, one simulator and one operator as separate processes (as ``./dev bench`` runs
them), three GpuVms: one reaction sample, one bulk-read interval, the baseline script on two
VMs, the report rendered from what was measured, and every process stopped afterwards.
"""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path

import pytest

from bench import measure, report, suite
from bench.procs import Processes, usage
from bench.world import Fleet, World, subscription_id
from testbed.azuresim.cli import parse_limit
from controller.cli import CliError

pytestmark = pytest.mark.timeout(90)

SUB, SCRIPT_SUB = subscription_id(901), subscription_id(902)


async def test_building_blocks_on_three_gpuvms(tmp_path: Path) -> None:
    fleet = Fleet(SUB, "rg-smoke", "smoke", "s", 3, timings={"start": 0.05, "deallocate": 0.05})
    script_fleet = Fleet(SCRIPT_SUB, "rg-script", "unused", "sc", 2, timings={"start": 0.2})
    with Processes(tmp_path) as procs:
        world = await World.start(procs)
        try:
            # Retry-After 0.2 s (the 202 carries 1 s): the sync SDK of the script needs one to poll soon.
            side = world.add_simulator("s", [fleet, script_fleet], flags=["--retry-after=0.2", "--page-size=2"],
                                       limits=suite.RELAXED_PER_VM, log_size=5_000)
            world.add_operator("s", subscription=SUB, flags=["--resync-interval=1", "--operation-poll=0.05"])
            assert [p.name for p in procs.procs] == ["kube-emulator", "azure-sim-s", "operator-s"]
            assert all(p.alive() for p in procs.procs)
            assert "--ca-bundle" in procs.procs[-1].command  # the documented way to trust the simulator's CA

            await world.create([fleet])
            await world.settle(fleet.keys, power="Deallocated", timeout=30)
            # Created as kubectl apply creates them, then written by kopf and the operator's status writer.
            size = measure.object_bytes(world.watcher.objects.values())
            assert size["n"] == 3 and {"kubectl-client-side-apply", "gpuvm-operator"} <= set(size["managers"])
            assert size["median_bytes"] > size["median_bytes_without_managed_fields"] + 1000
            print(f"settled GpuVm: {size}")

            # One reaction sample: PATCH -> the simulator logged the start; then back to Deallocated.
            meter = measure.CpuMeter(procs.procs)
            sample = await measure.flip_once(world, side.admin, fleet.keys[0], fleet.names[0], start_seconds=0.05)
            assert sample.start_status == 202
            assert 0 < sample.reaction < 5
            assert 0 <= sample.completion < 5
            cpu = meter.read()
            assert cpu.cpu_percent["operator-s"] > 0 and cpu.rss_mib["operator-s"] > 30

            # One bulk-read interval: with every GpuVm settled, one walk of two pages per interval.
            since = time.monotonic()
            deadline = since + 20

            def walks_since(log: list) -> int:
                return len([w for w in measure.walks_of(log, SUB, gap=0.3) if w.start >= since])

            while walks_since(await side.admin.log(5_000)) < 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            requests = await side.admin.log(5_000)
            assert walks_since(requests) >= 3, "fewer than 3 bulk walks in 20 s with resync 1 s"
            intervals = measure.interval_counts(requests, subscription=SUB, gpuvms=3, page_size=2, since=since,
                                                until=time.monotonic(), resync=1.0)
            assert intervals.counts, "no complete observation interval"
            assert intervals.bound == math.ceil(3 / 2) + 2
            assert max(intervals.counts) <= intervals.bound
            assert intervals.by_operation.get(measure.LIST_ALL, 0) >= 2 * len(intervals.counts)
            assert intervals.throttled == 0

            # The baseline script on two VMs: one message each, in turn, each blocking on its start.
            argv, process = measure.run_script_baseline(side.simulator, subscription=SCRIPT_SUB,
                                                        resource_group=script_fleet.resource_group, vms=script_fleet.names)
            outcome = await measure.finish_script(process, timeout=60)
            assert outcome["errors"] == 0, outcome
            assert [o["action"] for o in outcome["outcomes"]] == ["start", "start"]
            assert [o["seen"] for o in outcome["outcomes"]] == ["VM deallocated", "VM deallocated"]
            assert outcome["seconds"] >= sum(o["seconds"] for o in outcome["outcomes"]) * 0.99
            powers = {v["name"]: v["powerState"] for v in await side.admin.vms()}
            assert [powers[n] for n in script_fleet.names] == ["running", "running"]
            assert await side.admin.overlaps() == 0

            # The report renders from measured data.
            document = {
                "invocation": "pytest", "started": "now", "runtime_seconds": 1.0, "machine": report.machine(),
                "plan": {**suite.QUICK.__dict__}, "scenarios": ["reaction", "bulk"],
                "results": {"reaction_1": suite._flip_summary([sample], 3), "bulk": [intervals.__dict__ | {"resync_seconds": 1}]},
                "setup_seconds": {}, "cpu": {"flip": cpu.__dict__}, "commands": {"smoke": [p.command for p in procs.procs]},
            }
            document["targets"] = report.targets(document)
            text = report.markdown(document)
            assert "reaction, 1 GpuVm: p50" in text and "bulk reads, 3 settled" in text and "gpuvm-operator run" in text
        finally:
            await world.close()
        pids = [p.pid for p in procs.procs]
    # Every process the benchmark started is gone.
    assert pids
    for pid in pids:
        with pytest.raises(OSError):
            usage(pid)


def test_processes_are_stopped_when_the_benchmark_fails(tmp_path: Path) -> None:
    import sys

    with pytest.raises(RuntimeError, match="boom"):
        with Processes(tmp_path) as procs:
            sleeper = procs.spawn("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"])
            assert sleeper.alive()
            raise RuntimeError("boom")
    assert sleeper.popen.poll() is not None


def test_simulator_limit_overrides_parse() -> None:
    policy, limit = parse_limit("UpdateVMResource=1000000/1000000")
    assert policy == "UpdateVMResource" and limit.capacity == 1e6 and limit.per_second == 1e6
    for bad in ("UpdateVMResource=12", "NoSuchPolicy=1/1", "SubscriptionWrites=x/1"):
        with pytest.raises(CliError):
            parse_limit(bad)


def test_percentile_is_nearest_rank() -> None:
    values = [float(i) for i in range(1, 201)]
    assert measure.percentile(values, 0.99) == 198.0
    assert measure.percentile(values, 0.5) == 100.0
    assert measure.summary_ms([0.010, 0.020, 0.030])["p50_ms"] == pytest.approx(20.0)


async def test_scale_world_on_a_tiny_fleet(tmp_path: Path) -> None:
    """World S (bench/scale.py) end to end on 12 GpuVms: every phase runs and reports, and the
    report renders its side-by-side table and read mix. Numbers are not judged here."""
    from bench import scale

    plan = scale.ScalePlan(12, page_size=5, transition=0.2, retry_after=0.2, window=3.0, resync=1.0,
                           reaction_flips=3, flips=4, cold_start_timeout=60.0)
    with Processes(tmp_path) as procs:
        opened: list[World] = []
        s, cpu = await scale.run(procs, plan, opened=opened)
        assert procs.procs == []  # the world stopped its processes
    assert s["gpuvms"] == 12 and s["adoption"]["status_writes"].get("change") == 12  # each GpuVm's first status
    cold = s["cold_start"]
    assert cold["seconds"] > cold["liveness_seconds"] > 0
    assert cold["status_writes"] == {} and cold["status_changes"] == 0  # settled: a restart writes nothing
    assert cold["reads"].get("walk", 0) >= 3  # ceil(12 / 5) pages, and no per-VM GETs for settled VMs
    assert not any(k.startswith("get:") for k in cold["reads"])
    assert {"kubectl-client-side-apply", "gpuvm-operator"} <= set(s["gpuvm_json"]["managers"])
    assert s["settled"]["bulk"]["counts"] and s["settled"]["bulk"]["bound"] == math.ceil(12 / 5) + 2
    assert s["settled"]["metrics"]["status_writes"] == {}  # nobody interfered: nothing written
    assert s["reaction"]["flips"] == 3 and s["reaction"]["start_statuses"] == [202]
    delivery, reaction = s["reaction"]["watch_delivery"], s["reaction"]["reaction"]
    assert delivery["n"] == 3 and 0 < delivery["min_ms"] <= delivery["max_ms"] and reaction["n"] == 3
    f = s["flips"]
    assert f["flips"] == 4 and f["requests"].get("VirtualMachines.Start 202") == 4
    assert f["last_start_ended"] is not None and f["ready_after_last_end"] is not None
    assert f["completion"]["n"] == 4 and f["seen_ended_after_max"] is not None
    assert f["metrics"]["status_writes"].get("change", 0) >= 4
    assert sum(f["metrics"]["reads"].values()) >= 1
    assert set(cpu) == {f"scale 12: {p}" for p in ("first adoption", "cold start", "settled window", "reaction",
                                                         "4 flips at once")}
    adoption = s["adoption"]
    assert adoption["operator_hwm_rss_mib"] >= adoption["operator_peak_rss_mib"] > 30  # sampled every 0.25 s
    # No line per handled watch event (three per GpuVm in a first adoption): what is logged is per operator.
    assert 0 < adoption["log_lines"] < 12, adoption["log_lines"]
    rows = scale.targets(s)
    assert [r.what for r in rows[:3]] == ["first adoption: peak RSS (sampled every 0.25 s)",
                                          "first adoption: operator start -> all Ready", "first adoption: log lines"]
    assert len(rows) == 13 and all(r.met is None for r in rows[:4])  # no adoption or RSS target for 12 on the emulator
    document = {
        "invocation": "pytest", "started": "now", "runtime_seconds": 1.0, "machine": report.machine(),
        "plan": {**suite.QUICK.__dict__}, "scenarios": ["scale"], "results": {"scale": [s]},
        "setup_seconds": {}, "cpu": cpu, "commands": {},
    }
    document["targets"] = report.targets(document)
    text = report.markdown(document)
    assert "of which the emulator's watch delivery" in text
    assert "### Scale (world S): 12 GpuVms" in text and "| 12 (emulator) | " in text
    assert "scale 12 (emulator): reaction: p99" in text
    assert "### First adoption: the emulator and the real API server" in text and "| 12 | emulator | " in text
