"""``./dev bench`` (``python -m bench``): run the benchmark suite and write docs/benchmarks.md.

    python -m bench [--only reaction,completion,bulk,footprint,burst,compare,scale,census,money] [--quick]
                    [--report docs/benchmarks.md] [--json reports/benchmarks.json]
    python -m bench --render reports/benchmarks.json   # rewrite the report from an earlier run, run nothing
    python -m bench money [--clusters 01,05,09,10,02]   # bench/money.py: the money section of the report
    python -m bench money --cross-check-only            # bench/money_replay.py: one day through the real operator
    python -m bench --only scale                        # a subset while iterating: reports/benchmarks-only.md

The whole run (every scenario, world S at 1,000 and 10,000 GpuVms) takes about 20 minutes on two cores;
its money step recomputes the 60 days and keeps the report's cross-check (``money --no-cross-check``:
the replay through the real operator takes 7 minutes more; ``./dev bench money`` runs it).

Runs the real operator, the Kubernetes emulator and the Azure simulator as separate processes
on 127.0.0.1 and stops every one of them at the end, on failure and on Ctrl-C. Process logs are
kept under reports/bench-run/ for a look afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path

from bench import report, suite

ROOT = Path(__file__).resolve().parents[1]


async def _run(plan: suite.Plan, wanted: set[str], workdir: Path) -> suite.Results:
    """The suite as one task that SIGINT and SIGTERM cancel: every ``finally`` runs, every process stops."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()


    def interrupt() -> None:
        if not task.done():
            task.cancel()
            loop.call_later(10, interrupt)  # cleanup gets 10 s; then it is cancelled too (processes still stop)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, interrupt)
    return await suite.run(plan, wanted, workdir)


def _clean(workdir: Path) -> None:
    """Remove what an earlier run left in the work directory (only the kinds of files it writes)."""
    if workdir.is_dir():
        for path in workdir.iterdir():
            if path.is_file() and path.suffix in (".log", ".yaml", ".pem", ".token"):
                path.unlink()


def _keeping_money(path: Path, text: str) -> str:
    """The suite rewrites its report; the money section (``./dev bench money``) stays."""
    from bench import money

    return money.keep_section(path.read_text(), text) if path.exists() else text


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["money"]:  # ./dev bench money: the 60 days on the decision code, one day on the real operator
        from bench import money

        return money.main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(suite.SCENARIOS),
                        help=f"comma-separated scenarios to run (default all: {','.join(suite.SCENARIOS)})")
    parser.add_argument("--quick", action="store_true", help="small N and short windows: a smoke run in about a minute")
    parser.add_argument("--report", type=Path, default=None,
                        help="where to write the Markdown report (default docs/benchmarks.md; with --quick "
                             "reports/benchmarks-quick.md, with a subset of --only reports/benchmarks-only.md)")
    parser.add_argument("--json", type=Path, default=None,
                        help="where to write the results as JSON (default reports/benchmarks.json; with --quick reports/benchmarks-quick.json)")
    parser.add_argument("--workdir", type=Path, default=ROOT / "reports" / "bench-run", help="process logs, VM files, CA files")
    parser.add_argument("--render", type=Path, metavar="JSON", help="run nothing: write the report from an earlier run's JSON")
    args = parser.parse_args(argv)
    # A smoke run or a subset (--only, while iterating) must not overwrite the published numbers.
    subset = set(suite.SCENARIOS) - {s.strip() for s in args.only.split(",")}
    stem = "benchmarks-quick" if args.quick else ("benchmarks-only" if subset else None)
    args.report = args.report or (ROOT / "reports" / f"{stem}.md" if stem else ROOT / "docs" / "benchmarks.md")
    args.json = args.json or ROOT / "reports" / f"{stem or 'benchmarks'}.json"
    if args.render is not None:
        document = json.loads(args.render.read_text())
        document["targets"] = report.targets(document)
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(_keeping_money(args.report, report.markdown(document)))
        print(report.table(document))
        return 0
    wanted = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = wanted - set(suite.SCENARIOS)
    if unknown or not wanted:
        parser.error(f"--only: unknown scenario(s) {', '.join(sorted(unknown)) or '(none given)'}; choose from {', '.join(suite.SCENARIOS)}")
    plan = suite.QUICK if args.quick else suite.FULL
    _clean(args.workdir)
    began, started_at = time.monotonic(), dt.datetime.now(dt.timezone.utc)
    invocation = "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:])
    try:
        results = asyncio.run(_run(plan, wanted, args.workdir))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("bench: interrupted; every process it started has been stopped", file=sys.stderr)
        return 130
    runtime = time.monotonic() - began
    document = {
        "invocation": invocation.strip(),
        "started": started_at.isoformat(timespec="seconds"),
        "runtime_seconds": runtime,
        "machine": report.machine(),
        "plan": asdict(plan),
        "scenarios": sorted(wanted),
        "results": results.data,
        "setup_seconds": results.setup,
        "cpu": results.cpu,
        "commands": results.commands,
    }
    document["targets"] = report.targets(document)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(document, indent=2, default=str) + "\n")
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(_keeping_money(args.report, report.markdown(document)))
    print(report.table(document))
    if "money" in wanted:  # the 60-day trace through the decision code: its own section of the same report
        from bench import money

        code = money.main(["--report", str(args.report), "--no-cross-check",
                           "--json", str(ROOT / "reports" / ("money-quick.json" if args.quick else "money.json"))]
                          + (["--clusters", "01"] if args.quick else []))
        if code:
            return code
    print(f"\nbench: {time.monotonic() - began:.0f} s; wrote {args.report} and {args.json}")
    over = report.memory_guard(document)
    for line in over:
        print(f"bench: memory guard: {line}", file=sys.stderr)
    return 1 if over else 0


if __name__ == "__main__":
    raise SystemExit(main())
