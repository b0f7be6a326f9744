"""The money benchmark's cross-check: its pure parts by hand, and its replay through the real processes.

The replay test runs a handful of jobs through the real ``gpuvm-operator run``, the emulator and
the simulator (separate processes, as in the benchmark) and checks the mechanics only: the same
jobs on both sides, every claim created and deleted, VMs started and switched off by the idle
timeout, billed hours read from the simulator's own record. How close the two sides come is the
benchmark's number (docs/benchmarks.md), not a test's.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from bench import money, money_replay
from bench.money import Job
from bench.money_replay import Day, billing, busiest_day, idle_timeout

H = 3600.0
D = money_replay.DAY


def test_the_busiest_day_is_the_one_with_most_submissions_ties_to_the_earliest_and_ends_are_clipped() -> None:
    jobs = [Job("a", 0.5 * D, H, 1), Job("b", 0.6 * D, H, 1),  # day 0: two
            Job("c", 2 * D + 10, H, 1), Job("d", 2.9 * D, 0.5 * D, 4),  # day 2: two, d runs past the end
            Job("e", 5 * D, H, 1)]
    day = busiest_day(jobs, cluster="x")
    assert day.day == 0 and [j.id for j in day.jobs] == ["a", "b"]
    day = busiest_day([*jobs, Job("f", 2.5 * D, H, 2)], cluster="x")
    assert day.day == 2 and [j.id for j in day.jobs] == ["c", "f", "d"]
    assert day.jobs[-1].duration == pytest.approx(0.1 * D) and day.end == pytest.approx(3 * D)
    assert day.start == 2 * D + 10
    with pytest.raises(ValueError, match="no jobs"):
        busiest_day([], cluster="x")


def test_the_idle_timeout_must_be_whole_seconds_on_the_compressed_clock() -> None:
    assert idle_timeout(200) == "3s" and idle_timeout(600) == "1s" and idle_timeout(1) == "600s"
    for k in (240, 7, 1200):
        with pytest.raises(ValueError, match="whole number of seconds"):
            idle_timeout(k)


def op(vm: str, action: str, start: float) -> dict[str, object]:
    return {"vm": vm, "resource_group": "rg", "action": action, "start": start, "end": start + 1, "status": "Succeeded"}


def test_billing_runs_from_each_start_to_the_next_deallocation_and_counts_what_is_still_on() -> None:
    ops = [op("a", "deallocate", 50), op("a", "start", 10), op("a", "start", 100), op("a", "deallocate", 130),
           op("b", "start", 5), op("b", "deallocate", 20), op("B", "start", 40), op("c", "start", 60)]
    bill = billing(ops, now=70)
    assert bill.seconds == pytest.approx(40 + 30 + 15 + 30 + 10)  # a: 10-50, 100-130; b: 5-20, 40-70 (on); c: 60-70
    assert bill.starts == 5 and bill.deallocations == 3
    assert bill.vms_started == {"rg/a", "rg/b", "rg/c"} and bill.still_on == {"rg/b", "rg/c"}
    assert billing([], now=1).seconds == 0


def test_the_cross_check_part_of_the_report_is_replaced_or_kept_alone() -> None:
    report = money.Report()
    section = report.markdown()
    assert money.cross_check_of(section) == [money.NO_CROSS_CHECK]
    document = money.put_section("# Benchmarks\n\nbefore\n", section) + "\nafter\n"
    replaced = money.put_cross_check(document, ["new line 1", "", "new line 2"])
    assert money.cross_check_of(replaced) == ["new line 1", "", "new line 2"]
    assert replaced.replace("new line 1\n\nnew line 2", money.NO_CROSS_CHECK) == document
    with pytest.raises(ValueError, match="no cross-check part"):
        money.put_cross_check("# Benchmarks\n", ["x"])


def test_a_few_jobs_replayed_through_the_real_operator(tmp_path: Path) -> None:
    """Two jobs share the pool at once (one on 2 VMs), one comes back within the grace, one after it."""
    k = 600  # the idle timeout 1 s, a boot 0.3 s
    jobs = (Job("j1", 0, 1200, 1), Job("j2", 120, 900, 2), Job("j3", 1500, 600, 1), Job("j4", 6000, 900, 1))
    day = Day("test", 0, jobs)
    expected = money_replay.model(day)
    real = asyncio.run(money_replay.replay(day, k=k, workdir=tmp_path / "replay", deadline=180))

    assert real.job_ids == [j.id for j in day.jobs] == ["j1", "j2", "j3", "j4"]
    assert expected.jobs == real.jobs == 4 and expected.pool == real.pool == 3
    assert real.claims_created == real.claims_deleted == sum(j.gpus for j in jobs) == 5
    assert real.boots >= 3 and real.vms_started >= 3  # j1 and j2 need three VMs at once, all cold
    assert real.deallocations == real.boots and real.still_on == 0  # every start ended by a deallocation
    assert real.idle_deallocations == real.vms_started  # each VM's last switch-off was the idle timeout's
    assert real.jobs_waited_for_boot >= 2
    # From the simulator's record: each claim was held duration / K while its VM ran, so at least that is billed.
    assert real.billed_hours >= expected.used_hours > 0
    assert (tmp_path / "replay" / "operator-money.log").exists()


def test_dev_bench_money_cross_check_only_rewrites_its_part_and_a_run_without_it_keeps_it(tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    trace.mkdir()
    rows = ["job_id,submission_time,duration,num_gpu", "j0,100,1200,1", "j1,400,600,2", "j2,3000,600,1"]
    (trace / f"cluster{money_replay.CLUSTER}.csv").write_text("\n".join(rows) + "\n")
    report, js = tmp_path / "benchmarks.md", tmp_path / "money.json"
    args = ["--trace", str(trace), "--report", str(report), "--json", str(js)]
    report.write_text("# Benchmarks\n")
    assert money.main([*args, "--cross-check-only"]) == 2  # nothing to replace yet

    report.write_text(money.put_section("# Benchmarks\n\nthe suite's part\n", money.Report().markdown()))
    js.write_text('{"seconds": 1.5, "outcomes": []}\n')
    before = report.read_text()
    assert money.main([*args, "--cross-check-only", "--k", "600", "--workdir", str(tmp_path / "replay")]) == 0
    text = report.read_text()
    assert text.split(money.CROSS_BEGIN)[0] == before.split(money.CROSS_BEGIN)[0]
    part = money.cross_check_of(text)
    assert part is not None and part != [money.NO_CROSS_CHECK]
    assert any("Cross-check against the real operator" in line for line in part)
    assert any("day 0 of the trace" in line and "3 jobs" in line for line in part)
    data = json.loads(js.read_text())
    assert data["seconds"] == 1.5 and data["cross_check"]["real"]["jobs"] == 3
    assert data["cross_check"]["real"]["claims_created"] == data["cross_check"]["real"]["claims_deleted"] == 4

    assert money.main([*args, "--clusters", money_replay.CLUSTER, "--no-cross-check"]) == 0
    assert money.cross_check_of(report.read_text()) == part
    assert json.loads(js.read_text())["cross_check"] == data["cross_check"]


def test_latencies_pair_each_job_with_the_start_and_the_switch_off_its_claims_caused() -> None:
    def o(vm: str, action: str, start: float, end: float) -> dict[str, object]:
        return {"vm": vm, "resource_group": "rg", "action": action, "start": start, "end": end, "status": "Succeeded"}

    ops = [o("a", "start", 10.1, 11.0), o("b", "start", 10.3, 11.2), o("a", "deallocate", 24.5, 25.0),
           o("b", "deallocate", 26.0, 26.1), o("b", "start", 30.2, 31.0), o("b", "deallocate", 45.0, 45.1)]
    held = [money_replay.Held(("a", "b"), asked=10.0, ready=11.5, released=20.0),  # both boot; b is taken again warm
            money_replay.Held(("b",), asked=21.0, ready=21.1, released=23.0),  # warm: no start of its own
            money_replay.Held(("b",), asked=30.0, ready=31.1, released=40.0)]  # b was switched off: it boots again
    start, ready, late = money_replay.latencies(held, ops, idle=3.0)
    assert start == pytest.approx(1000 * (0.1 + 0.3 + 0.2) / 3)
    assert ready == pytest.approx(1000 * (0.3 + 0.1) / 2)
    # a: released 20 -> deallocated 24.5 (1.5 late); b after 20: taken again, no switch-off; after 23: 26 (0); after 40: 45 (2)
    assert late == pytest.approx(1000 * (1.5 + 0.0 + 2.0) / 3)
