"""Turn the suite's results into docs/benchmarks.md: the machine, the commands, the numbers, the verdicts."""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from importlib import metadata
from typing import Any

from bench import notes  # the prose, kept apart from the formatting
from bench.units import _ms, _s


def machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    ram = 0
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            ram = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemTotal:"))
    except (OSError, StopIteration):
        pass
    versions = {}
    for package in ("kopf", "aiohttp", "azure-core", "azure-mgmt-compute", "kubernetes"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "?"
    return {
        "cpu_model": model or platform.processor() or "unknown",
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "ram_gib": round(ram / 1024**3, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "packages": versions,
    }


def targets(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per target: what was asked, what was measured, met or not."""
    r = doc.get("results", {})
    rows: list[dict[str, Any]] = []

    def row(name: str, target: str, measured: str, met: bool | None) -> None:
        rows.append({"name": name, "target": target, "measured": measured, "met": met})

    r1, rn = r.get("reaction_1"), r.get("reaction_n")
    if r1:
        row("reaction, 1 GpuVm: p50", "<= 50 ms", _ms(r1["reaction"]["p50_ms"]), r1["reaction"]["p50_ms"] <= 50)
        row("reaction, 1 GpuVm: p99", "<= 200 ms", _ms(r1["reaction"]["p99_ms"]), r1["reaction"]["p99_ms"] <= 200)
    if rn:
        row(f"reaction, {rn['gpuvms']:,} GpuVms: p50", "<= 100 ms", _ms(rn["reaction"]["p50_ms"]), rn["reaction"]["p50_ms"] <= 100)
        row(f"reaction, {rn['gpuvms']:,} GpuVms: p99", "(no target)", _ms(rn["reaction"]["p99_ms"]), None)
    completions = [x for x in (r1, rn) if x]
    if completions:
        c = completions[0]["completion"]
        row("completion (flips): median", "<= 1 s", _ms(c["p50_ms"]), c["p50_ms"] <= 1000)
    b = r.get("burst_b")
    if b and b["completion"].get("n"):
        row(f"completion, {b['gpuvms']:,} at once (burst b): median", "<= 1 s", _ms(b["completion"]["p50_ms"]),
            b["completion"]["p50_ms"] <= 1000)
    for bulk in r.get("bulk") or []:
        worst = max(bulk["counts"]) if bulk["counts"] else None
        row(f"bulk reads, {bulk['gpuvms']:,} settled: requests per interval (worst of {len(bulk['counts'])})",
            f"<= {bulk['bound']} (ceil(N/{bulk['page_size']}) + 2)", "—" if worst is None else str(worst),
            None if worst is None else worst <= bulk["bound"])
        row(f"bulk reads, {bulk['gpuvms']:,} settled: 429s", "0", str(bulk["throttled"]), bulk["throttled"] == 0)
    for label, key in (("(b) write bucket relaxed", "burst_b"), ("(a) as shipped, Azure's limits", "burst_a")):
        x = r.get(key)
        if not x:
            continue
        n = x["gpuvms"]
        sends = x["sends_seconds"]
        row(f"burst {label}: all {n:,} start requests sent", "<= 10 s",
            _s(sends) if sends is not None else f"{x['accepted']} of {n} accepted in {doc['plan']['burst_sends_timeout']:g} s",
            sends is not None and sends <= 10)
        ready_target = doc["plan"]["burst_start"] + 5
        if x["all_ready_seconds"] is not None or key == "burst_b":
            row(f"burst {label}: all Ready", f"<= {ready_target:g} s", _s(x["all_ready_seconds"]),
                x["all_ready_seconds"] is not None and x["all_ready_seconds"] <= ready_target)
            if x["all_ready_seconds"] is not None and sends is not None:
                after = x["all_ready_seconds"] - sends
                row(f"burst {label}: all Ready, counted from the last start request", f"<= {ready_target:g} s",
                    _s(after), after <= ready_target)
        else:
            low = (sends or 0) + doc["plan"]["burst_start"]
            row(f"burst {label}: all Ready", f"<= {ready_target:g} s", f"not awaited; >= {low:.0f} s (last send + start)", False)
        row(f"burst {label}: 409s / overlapping operations", "0 / 0", f"{x['conflicts']} / {x['overlaps']}",
            x["conflicts"] == 0 and x["overlaps"] == 0)
        row(f"burst {label}: 429s", "0" if key == "burst_a" else "(reported)",
            f"{x['throttled']}" + (f" ({', '.join(f'{k} {v}' for k, v in sorted(x['throttled_by_operation'].items()))})" if x["throttled"] else ""),
            x["throttled"] == 0 if key == "burst_a" else None)
    fp = r.get("footprint")
    if fp:
        rss = fp["rss_mib"].get("operator-r")
        cpu = fp["cpu_percent"].get("operator-r")
        row(f"footprint, {fp['gpuvms']:,} GpuVms (world R: adopted while it ran, after the flips): operator RSS", "<= 150 MiB", f"{rss:.0f} MiB (peak {fp['operator_peak_rss_mib']:.0f})",
            rss is not None and rss <= 150)
        row(f"footprint, settled: operator CPU over {fp['window_seconds']:.0f} s (resync {fp['resync_seconds']:g} s)",
            "<= 2 % of a core", f"{cpu:.2f} %", cpu is not None and cpu <= 2)
    cmp_ = r.get("compare")
    if cmp_ and "ratio" in cmp_:
        row(f"compare, {cmp_['vms']} VMs, {cmp_['simulated_start_seconds']:g} s start: script / operator (as shipped) to all converged",
            ">= 50x", f"{cmp_['script_seconds']:.1f} s / {cmp_['operator_seconds']:.2f} s = {cmp_['ratio']:.0f}x", cmp_["ratio"] >= 50)
        row("compare: script / operator with --azure-budget-share 0",
            "(shows what pacing costs)", f"{cmp_['script_seconds']:.1f} s / {cmp_['operator_unpaced_seconds']:.2f} s = {cmp_['ratio_unpaced']:.0f}x", None)
    from bench import scale

    for s in r.get("scale") or []:
        for t in scale.targets(s):
            row(f"scale {s['gpuvms']:,} ({s.get('api_server', 'emulator')}): {t.what}", t.target, t.measured, t.met)
    a = r.get("adoption")
    if a:
        from bench import adoption

        for t in adoption.targets(adoption.AdoptionPlan(**a["targets_plan"]), a):
            row(t.what, t.target, t.measured, t.met)
    real = r.get("real_control_plane")
    if real and not real.get("available"):
        row("worlds on the real control plane", "run", f"skipped: {real.get('reason')}", None)
    census = r.get("census")
    if census:
        row(f"census, {census['gpuvms']:,} GpuVms: operator memory per GpuVm (tracemalloc)", "(reported)",
            f"{census['bytes_per_gpuvm'] / 1024:.1f} KiB", None)
    # The worlds on the real control plane (world S twice more, world A) add about a quarter of an hour.
    budget = 25 + (15 if (r.get("real_control_plane") or {}).get("available") else 0)
    row("suite runtime (this machine)", f"< {budget} min incl. setup" + (" (25 + 15 for the real control plane's worlds)"
                                                                        if budget > 25 else ""),
        f"{doc.get('runtime_seconds', 0) / 60:.1f} min (bench only)", doc.get("runtime_seconds", 0) < budget * 60)
    return rows


def memory_guard(doc: Mapping[str, Any]) -> list[str]:
    """The peak-RSS targets a run missed: ``python -m bench`` fails when there is one."""
    return [f"{t['name']}: {t['measured']} (target {t['target']})" for t in doc.get("targets") or targets(doc)
            if "peak RSS" in t["name"] and t["met"] is False]


def _verdict(met: bool | None) -> str:
    return "—" if met is None else ("met" if met else "**missed**")


def table(doc: Mapping[str, Any]) -> str:
    lines = ["| what | target | measured | |", "|---|---|---|---|"]
    for t in doc.get("targets") or targets(doc):
        lines.append(f"| {t['name']} | {t['target']} | {t['measured']} | {_verdict(t['met'])} |")
    return "\n".join(lines)


def _cpu_table(doc: Mapping[str, Any]) -> str:
    phases = doc.get("cpu") or {}
    if not phases:
        return "(not measured)"
    lines = ["| phase | seconds | process: mean / busiest second, % of one core; RSS MiB at the end |", "|---|---|---|"]
    for phase, w in phases.items():
        cells = "<br>".join(
            f"{name}: {w['cpu_percent'][name]:.1f} / {w.get('peak_percent', {}).get(name, 0):.0f} %; {w['rss_mib'].get(name, 0):.0f} MiB"
            for name in sorted(w["cpu_percent"]))
        lines.append(f"| {phase} | {w['seconds']:.0f} | {cells} |")
    return "\n".join(lines)


def markdown(doc: Mapping[str, Any]) -> str:
    m = doc["machine"]
    out = [
        "# Benchmarks",
        "",
        "Generated by `./dev bench` (`python -m bench`); do not edit by hand — change `bench/` and run it again.",
        "Machine-readable results: `reports/benchmarks.json`. Process logs: `reports/bench-run/`.",
        "",
        f"- **Run:** `{doc['invocation']}`, started {doc['started']}, took {doc['runtime_seconds'] / 60:.1f} min "
        f"(scenarios: {', '.join(doc['scenarios'])}{'; QUICK sizes' if doc['plan'].get('quick') else ''}).",
        f"- **Machine:** {m['cpu_model']}, {m['cores']} cores ({m['usable_cores']} usable), {m['ram_gib']} GiB RAM, "
        f"Python {m['python']}, Linux {m['kernel']}; " + ", ".join(f"{k} {v}" for k, v in m["packages"].items()) + ".",
        "- Everything runs on 127.0.0.1: the Kubernetes emulator, the Azure simulator(s) and the operator(s) are separate "
        "processes (no shared GIL); the benchmark process only patches GpuVms, watches them and reads the simulator's "
        "admin endpoints. Times on both sides come from one clock, CLOCK_MONOTONIC. (The one listener not on "
        "127.0.0.1 is the operator's own `--metrics-port`, which `Metrics.serve` binds to 0.0.0.0; `run` has no flag "
        "for its address. The benchmark only reads it through 127.0.0.1.)",
        "- From a fresh clone `./dev bench` first creates `.venv` and installs the project; that took 19 s on this "
        "machine with pip's cache warm and is not included in the run time above.",
        "",
        "## Results",
        "",
        table(doc),
        "",
        notes.SUMMARY,
        "",
        *notes.missed(doc.get("targets") or targets(doc)),
        "",
    ]
    out += notes.sections(doc)
    out += [
        "## CPU of every process, per phase",
        "",
        "CPU time (user + system, all threads, from `/proc/<pid>/stat`) over the phase's wall time; the emulator and the "
        "simulators must not be the bottleneck. RSS from `/proc/<pid>/status` at the end of the phase.",
        "",
        _cpu_table(doc),
        "",
        "## Setup times",
        "",
        *[f"- {k}: {v:.1f} s" for k, v in (doc.get("setup_seconds") or {}).items()],
        "",
        "## Exact commands",
        "",
        "Each world's processes, as started (paths relative to the repository; the simulator's token is passed in "
        "`GPUVM_SIMULATOR_TOKEN` and a 0600 file, not shown).",
        "",
    ]
    for world, commands in (doc.get("commands") or {}).items():
        out += [f"**{world}**", "", "```sh", *commands, "```", ""]
    out += notes.findings(doc)
    return "\n".join(out).rstrip() + "\n"
