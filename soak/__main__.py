"""``./dev soak`` (``python -m soak``): the chaos soak; writes docs/reliability.md's "Chaos soak"
section and reports/soak.json. Exit status 0 when every invariant holds, 1 otherwise.

    python -m soak [--seed N] [--gpuvms 200] [--intents 10000] [--rate 18]
    python -m soak --quick                  # the CI size: 40 GpuVms, 1,000 intents, one kill
    python -m soak --seed N --only-vm team-a/gv-007   # replay one GpuVm of run N (with those it shared a VM with)

Process logs, the VM file, the CA and everything recorded (collected.pickle: soak.driver.Collected)
are kept under reports/soak-run/ for a look afterwards.
A quick or replayed run writes reports/soak-quick.json or reports/soak-replay.json and leaves the
published numbers alone.
"""

from __future__ import annotations

import argparse
import asyncio
import pickle
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

from soak import report
from soak.driver import Collected, Soak
from soak.invariants import Invariant
from soak.plan import SoakConfig, generate

ROOT = Path(__file__).resolve().parents[1]
QUICK = SoakConfig(gpuvms=40, intents=1_000, rate=16.0, kills=1, sigterm_and_ha=False, credential_expiry=True,
                   rss_after=200, settle=120.0)


async def soak(config: SoakConfig, workdir: Path) -> tuple[Collected, list[Invariant], dict]:
    """Run one soak and judge it: (what was recorded, the invariants, the JSON report)."""
    began = time.monotonic()
    plan = generate(config)
    if config.only_vm:
        plan = plan.only(config.only_vm)
    out = await Soak(plan, workdir).run()
    now = time.monotonic()
    with (workdir / "collected.pickle").open("wb") as f:  # everything recorded, for a look afterwards
        pickle.dump(out, f)
    results = report.verdict(out, now)
    return out, results, report.as_json(out, results, now - began)


async def _cancellable(config: SoakConfig, workdir: Path) -> tuple[Collected, list[Invariant], dict]:
    """The soak as one task that SIGINT and SIGTERM cancel: every process is stopped."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    return await soak(config, workdir)


def _clean(workdir: Path) -> None:
    if workdir.is_dir():
        for path in workdir.iterdir():
            if path.is_file() and path.suffix in (".log", ".yaml", ".pem", ".token", ".new", ".pickle"):
                path.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m soak", description=__doc__.splitlines()[0])
    default = SoakConfig()
    parser.add_argument("--seed", type=int, default=default.seed)
    parser.add_argument("--gpuvms", type=int, default=None)
    parser.add_argument("--intents", type=int, default=None)
    parser.add_argument("--rate", type=float, default=None, help="planned intents per second")
    parser.add_argument("--quick", action="store_true", help="the CI size: 40 GpuVms, 1,000 intents, one kill")
    parser.add_argument("--only-vm", metavar="NAMESPACE/NAME",
                        help="replay only this GpuVm's intents, those of every GpuVm that shared a VM with it, "
                             "and every disruption")
    parser.add_argument("--report", type=Path, default=None, help="Markdown file whose Chaos soak section is written "
                        "(default docs/reliability.md; none for --quick or --only-vm)")
    parser.add_argument("--json", type=Path, default=None, help="default reports/soak.json (soak-quick.json, soak-replay.json)")
    parser.add_argument("--workdir", type=Path, default=ROOT / "reports" / "soak-run")
    args = parser.parse_args(argv)
    config = QUICK if args.quick else default
    config = replace(config, seed=args.seed, only_vm=args.only_vm,
                     **{k: v for k, v in (("gpuvms", args.gpuvms), ("intents", args.intents), ("rate", args.rate)) if v is not None})
    kind = "replay" if args.only_vm else ("quick" if args.quick else None)
    json_path = args.json or ROOT / "reports" / (f"soak-{kind}.json" if kind else "soak.json")
    report_path = args.report or (None if kind else ROOT / "docs" / "reliability.md")
    _clean(args.workdir)
    print(f"soak: seed {config.seed}, {config.gpuvms} GpuVms, {config.intents:,} intents at {config.rate:g}/s"
          f"{f', only {config.only_vm}' if config.only_vm else ''}; logs in {args.workdir}", flush=True)
    try:
        out, results, data = asyncio.run(_cancellable(config, args.workdir))
    except asyncio.CancelledError:
        print("soak: interrupted; every process was stopped", file=sys.stderr)
        return 130
    report.write_json(json_path, data)
    if report_path is not None:
        report.write_section(report_path, report.markdown(data))
    for r in results:
        print(f"{'ok  ' if r.ok else 'FAIL'} {r.name}: {r.value} (bound {r.bound})")
    failed = report.failures(out, results)
    if failed:
        print(failed)
    print(f"soak: {'passed' if data['passed'] else 'FAILED'} in {data['elapsed_seconds']:.0f} s; seed {config.seed}; "
          f"report {json_path}" + (f" and {report_path}" if report_path else ""))
    return 0 if data["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
