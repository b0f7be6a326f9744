"""The money benchmark's model on tiny traces whose bills can be worked out by hand, and its plumbing.

Every number here follows from the model in bench/money.py's docstring: 1-GPU VMs, a 180 s
billed boot, instant deallocation, warm VMs first, leaks noticed at 09:00 on weekdays.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

import controller.decide
import controller.demand
from bench import money
from bench.money import BOOT, Job, Policy, Simulation, peak_gpus

H = 3600.0
ALWAYS, PATCH = Policy("always on", "always"), Policy("patching", "patch")


def claims(minutes: float) -> Policy:
    return Policy(f"claims {minutes}", "claims", idle=dt.timedelta(minutes=minutes))


def run(jobs: list[Job], policy: Policy) -> money.Outcome:
    return Simulation(jobs, policy).run()


def test_the_decisions_are_the_operators_own_code() -> None:
    assert money.decide is controller.decide.decide
    assert money.evaluate is controller.demand.evaluate
    out = run([Job("a", 0, H, 1)], claims(10))
    assert out.decisions >= 3  # claim appears, boot ends, claim gone, grace ends


def test_peak_counts_an_end_and_a_start_at_one_second_as_no_overlap() -> None:
    assert peak_gpus([Job("a", 0, 100, 2), Job("b", 100, 50, 3), Job("c", 120, 10, 1)]) == 4


def test_always_on_bills_the_pool_for_the_whole_span() -> None:
    out = run([Job("a", 0, H, 2), Job("b", 3 * H, H, 1)], ALWAYS)
    assert out.pool == 2 and out.billed_hours == pytest.approx(2 * 4) and out.boots == 0
    assert out.jobs_waited_for_boot == 0 and out.ratio == pytest.approx(8 / 3)


def test_patching_bills_what_is_used_plus_every_boot() -> None:
    jobs = [Job("a", 0, H, 2), Job("b", 3 * H, H, 1)]
    out = run(jobs, PATCH)
    assert out.boots == 3 and out.jobs_waited_for_boot == 2
    assert out.billed_hours == pytest.approx(3 + 3 * BOOT / H) == pytest.approx(out.bound_hours)


def test_claims_with_no_grace_bill_like_patching() -> None:
    jobs = [Job("a", 0, H, 2), Job("b", 3 * H, H, 1), Job("c", 3 * H + 60, 2 * H, 1)]
    assert run(jobs, claims(0)).billed_hours == pytest.approx(run(jobs, PATCH).billed_hours)


def test_a_grace_bills_the_idle_tail_and_saves_the_next_boot() -> None:
    # a runs 0:03-1:03 (booted); b arrives at 1:08, within the 10 min grace: no boot, runs to 2:08;
    # the VM is switched off at 2:18. Billed 2 h 18 min, one boot, one job waited.
    jobs = [Job("a", 0, H, 1), Job("b", H + BOOT + 300, H, 1)]
    out = run(jobs, claims(10))
    assert out.boots == 1 and out.jobs_waited_for_boot == 1
    assert out.billed_hours == pytest.approx((H + BOOT + 300 + H + 600) / H)


def test_a_grace_that_runs_out_means_a_new_boot() -> None:
    jobs = [Job("a", 0, H, 1), Job("b", 3 * H, H, 1)]
    out = run(jobs, claims(10))
    assert out.boots == 2 and out.jobs_waited_for_boot == 2
    assert out.billed_hours == pytest.approx(2 * (BOOT + H + 600) / H)


def test_a_killed_job_leaks_its_vm_until_a_weekday_morning() -> None:
    # t = 0 is Thursday 2021-03-04 00:00. A job ending Friday 20:00 leaks until Monday 09:00: 61 h.
    friday_8pm = (24 + 20) * H
    job = Job("a", friday_8pm - H - BOOT, H, 1)
    out = run([job], Policy("killed", "patch", kill=1.0))
    assert out.killed_jobs == 1 and out.leaks_ended_by_a_person == 1
    assert out.leaked_vm_hours == pytest.approx(61)
    assert out.billed_hours == pytest.approx((BOOT + H) / H + 61)
    assert run([job], claims(0)).billed_hours == pytest.approx((BOOT + H) / H), "a killed job's claim ends with its Pod"


def test_a_later_job_on_the_warm_vm_ends_the_leak_unless_the_vm_looks_in_use() -> None:
    jobs = [Job("a", 0, H, 1), Job("b", 2 * H, H, 1)]
    reused = Simulation(jobs, Policy("killed", "patch", kill=1.0)).run()
    assert reused.leaks_ended_by_a_job == 1  # b took the warm VM (no boot), and its own leak ends at 09:00
    assert reused.boots == 1 and reused.jobs_waited_for_boot == 1
    in_use = Simulation(jobs, Policy("killed", "patch", kill=1.0, reuse_leaked=False)).run()
    assert in_use.leaks_ended_by_a_job == 0 and in_use.jobs_queued == 1  # one VM, and it looks taken until 09:00


def test_jobs_queue_when_boots_push_ends_past_the_pool() -> None:
    # a needs the only VM from 0 to 1 h, but boots first: it ends at 1 h + boot; b arrives at 1 h.
    out = run([Job("a", 0, H, 1), Job("b", H, H, 1)], PATCH)
    assert out.pool == 1 and out.jobs_queued == 1


def test_kills_are_seeded() -> None:
    jobs = [Job(str(i), i * 10 * H, H, 1) for i in range(200)]
    policy = Policy("k", "patch", kill=0.05)
    assert Simulation(jobs, policy).killed == Simulation(jobs, policy).killed
    assert 3 <= len(Simulation(jobs, policy).killed) <= 20


def test_section_replaced_in_place_and_kept_by_the_suite() -> None:
    first = money.SECTION_BEGIN + "\nold\n" + money.SECTION_END + "\n"
    doc = "# Benchmarks\n\nsuite\n\n" + first + "\ntrailer\n"
    new = money.put_section(doc, money.SECTION_BEGIN + "\nnew\n" + money.SECTION_END + "\n")
    assert new == "# Benchmarks\n\nsuite\n\n" + money.SECTION_BEGIN + "\nnew\n" + money.SECTION_END + "\n\ntrailer\n"
    assert money.put_section("# B\n", first) == "# B\n\n" + first
    regenerated = money.keep_section(new, "# Benchmarks\n\nsuite, run again\n")
    assert regenerated.endswith(money.SECTION_BEGIN + "\nnew\n" + money.SECTION_END + "\n")
    assert money.keep_section("no section", "text") == "text"


def test_main_on_a_small_trace_writes_the_section(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "trace"
    trace.mkdir()
    rows = ["job_id,submission_time,duration,num_gpu"]
    rows += [f"j{i},{i * 5000},{3600 + 100 * i},{1 + i % 2}" for i in range(30)]
    for c in money.CLUSTERS:
        (trace / f"cluster{c}.csv").write_text("\n".join(rows) + "\n")
    report, js = tmp_path / "benchmarks.md", tmp_path / "money.json"
    report.write_text("# Benchmarks\n\nthe suite's part\n")
    assert money.main(["--trace", str(trace), "--report", str(report), "--json", str(js), "--no-cross-check"]) == 0
    text = report.read_text()
    assert text.startswith("# Benchmarks\n\nthe suite's part\n")
    assert text.count(money.SECTION_BEGIN) == 1 and "| 10 |" in text and "**Targets (issue 11):**" in text
    assert "ElasticFlow" in text and "microsoft/elasticflow-traces" in text
    assert money.main(["--trace", str(trace), "--clusters", "10", "--report", str(report), "--json", str(js),
                       "--no-cross-check"]) == 0
    assert report.read_text().count(money.SECTION_BEGIN) == 1
    assert money.main(["--trace", str(tmp_path / "nowhere"), "--report", str(report)]) == 2
    assert "no trace file" in capsys.readouterr().err


def test_dev_bench_money_is_the_hook(tmp_path: Path) -> None:
    from bench.__main__ import main

    assert main(["money", "--trace", str(tmp_path / "nowhere")]) == 2
