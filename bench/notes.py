"""The prose of docs/benchmarks.md: how each number is taken, and what the numbers say.

Numbers in the text come from the run being reported wherever the run measures them. A few
come from profiles taken while this suite was written (on the machine named in the report);
those are marked "(profiled separately)" and are not re-measured by each run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

SUMMARY = (
    "Targets marked **missed** are explained below (\"What limits the operator\"), each with the function "
    "responsible, the measurement that shows it, and what would close it. The operator's code was not changed "
    "by this work; the benchmark measures it as shipped."
)


def _ms(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{v:.1f} ms" if v < 1000 else f"{v / 1000:.2f} s"


def _s(v: float | None) -> str:
    return "—" if v is None else f"{v:.1f} s"


def _cpu(doc: Mapping[str, Any], phase_prefix: str, proc: str, key: str = "cpu_percent") -> float | None:
    for phase, w in (doc.get("cpu") or {}).items():
        if phase.startswith(phase_prefix) and proc in w.get(key, {}):
            return float(w[key][proc])
    return None


def sections(doc: Mapping[str, Any]) -> list[str]:
    r = doc.get("results", {})
    p = doc["plan"]
    out: list[str] = ["## How each number is taken", ""]

    r1, rn = r.get("reaction_1"), r.get("reaction_n")
    if r1 or rn:
        out += [
            "### Reaction and completion (world R)",
            "",
            f"One operator (`--operation-poll {p['operation_poll']:g}`, `--resync-interval {p['resync']:g}`, everything "
            f"else default) against one simulator with Azure's throttling numbers except one thing: the per-VM Compute "
            f"limits `UpdateVMResource` and `DeleteVMResource` (4 starts / 4 deallocates a minute per VM, bucket 12) are "
            f"relaxed, because flipping one VM {p['flips']} times is exactly what they forbid. Every ARM and subscription "
            f"limit stays on. Simulated start and deallocate take {p['reaction_start'] * 1000:.0f} ms and the simulator "
            f"answers `Retry-After: 0`, so the operator polls an operation every {p['operation_poll'] * 1000:.0f} ms and "
            f"a flip cycle is short.",
            "",
            "A flip: the benchmark takes `time.monotonic()`, PATCHes `spec.desiredState: Running` (a merge patch, as "
            "kubectl sends), and waits on its watch for the operator's `lastOperation: Start` — written only after Azure "
            "answered the start — then reads the simulator's request log once: **reaction** = the log time of the start "
            "request minus the time before the PATCH (one clock, CLOCK_MONOTONIC, in every process). **Completion** = the "
            "time the watch delivered `status.powerState: Running` minus the moment the simulated start ended (request "
            f"time + {p['reaction_start'] * 1000:.0f} ms; if the simulator's timer fires late, that lateness counts "
            "against the operator). Then the GpuVm is flipped back and the next flip waits until it is Deallocated and Ready.",
            "",
        ]
        for x in (r1, rn):
            if x:
                out.append(f"- **{x['gpuvms']:,} GpuVm{'s' if x['gpuvms'] != 1 else ''} present**, {x['flips']} flips: reaction p50 {_ms(x['reaction']['p50_ms'])}, "
                           f"p99 {_ms(x['reaction']['p99_ms'])}, max {_ms(x['reaction']['max_ms'])}; completion p50 "
                           f"{_ms(x['completion']['p50_ms'])}, p99 {_ms(x['completion']['p99_ms'])}, max {_ms(x['completion']['max_ms'])}.")
        out += [
            "",
            " ".join([
                "Completion is set by the operator's own read budget, not by how fast it reacts. Each flip costs about six "
                "ARM reads (per operation: the status poll azure-core sends right after the 202, one more, and the final "
                "Location GET) and, while an operation runs, the operator walks the flipped VM's subscription — 1,000 VMs, "
                "10 pages — every 2 s. Flipping back to back (~4 flips a second) asks for about 30 reads a second; the "
                "operator keeps to 80 % of ARM's 25/s, so once its 200-token burst is spent (after ~40 flips) every read "
                "waits its 50 ms turn and completion settles at ~70 ms, or ~170 ms when two reads queue. The flips before "
                "that complete in 12–20 ms. A VM flipped at a human pace stays in the first regime.",
                (f"The pacer's summed waits over the {(r1 or rn)['flips']} flips: "
                 + "; ".join(f"{x['gpuvms']:,} present: " + (", ".join(f"{k} {v:.0f} s" for k, v in sorted(x.get('pacer_wait', {}).items()) if v >= 0.5) or "none")
                             for x in (r1, rn) if x) + ".") if any(x.get("pacer_wait") for x in (r1, rn) if x) else "",
                "Reaction is hardly affected: the start is a write, paced separately, and the request usually goes out "
                "before anything else is queued.",
            ]).strip(),
            "",
        ]

    bulk = r.get("bulk")
    if bulk:
        out += [
            "### Bulk reads (world R, settled)",
            "",
            f"Three subscriptions in one simulator hold {', '.join(format(b['gpuvms'], ',') for b in bulk)} VMs, each with "
            f"one GpuVm per VM, all settled; list pages hold {p['page_size']} VMs (`--page-size {p['page_size']}`), "
            f"and Azure's throttling model is on for every read (this world relaxes only the per-VM start and deallocate "
            f"limits, which reads do not touch). After every GpuVm is Ready, every subscription was walked "
            f"once more and nothing changed for 3 s, a window of {_s(r.get('footprint', {}).get('window_seconds'))} "
            f"begins. An **observation interval** runs from the first list page of one bulk walk to the first page of "
            f"the next (`--resync-interval {p['resync']:g}`, the default); only intervals wholly inside the window count. "
            "Every request the simulator logged for the subscription in the interval counts, whatever it was.",
            "",
            "| GpuVms | complete intervals | Azure requests per interval | by operation | target | 429s in the window |",
            "|---|---|---|---|---|---|",
        ]
        for b in bulk:
            ops = ", ".join(f"{k} {v}" for k, v in sorted(b["by_operation"].items())) or "—"
            out.append(f"| {b['gpuvms']:,} | {len(b['counts'])} | {', '.join(map(str, b['counts'])) or '—'} | {ops} | "
                       f"<= {b['bound']} | {b['throttled']} |")
        settle = r.get("settle_r")
        if settle:
            reqs = ", ".join(f"{k}: {v}" for k, v in settle["requests"].items())
            out += ["", f"Getting there: creating and settling {settle['gpuvms']:,} GpuVms took {_s(settle['seconds'])} "
                        f"({reqs}). Each new GpuVm needs one read of its own (the VM's tags are the consent), and the "
                        "operator keeps those reads within 80 % of ARM's read budget (200 at once, then 20/s): 1,000 VMs in "
                        "one subscription settle in about 40 s, with no 429."]
        out.append("")

    for key, label in (("burst_b", "(b) ARM write bucket relaxed, `--azure-budget-share 0`"), ("burst_a", "(a) as shipped")):
        x = r.get(key)
        if not x:
            continue
        if key == "burst_b":
            out += [
                "### Burst (world B)",
                "",
                f"{x['gpuvms']:,} settled Deallocated GpuVms are patched to Running by {x['gpuvms']:,} concurrent clients "
                f"(32 at a time; the patches took {_s(x['patch_seconds'])}); each simulated start takes "
                f"{p['burst_start']:g} s and running operations answer `Retry-After: 10` (the simulator's default). "
                "\"Sent\" is the simulator's log time of the last start request answered 202, from the first PATCH. "
                "\"Ready\" is the watch delivering the last GpuVm Ready for its new generation with `powerState: Running`. "
                "Completion per GpuVm = that GpuVm's Ready minus (its start's log time + the start duration). "
                "409s and 429s are the simulator's counters over the burst; overlaps are power requests that arrived "
                "while another operation ran on the same VM.",
                "",
                "(b) and (a) use one emulator and two simulators with their own operators. (b) runs first, alone. "
                "(b)'s operator also gets `--max-operations "
                f"{x['gpuvms']}`: with the default 500 in flight per subscription, the second half of a 1,000-VM burst "
                f"waits a whole start duration ({p['burst_start']:g} s) for the first half — a cap, not a capability.",
                "",
            ]
        tw = x.get("throttle_wait") or {}
        cpu = x.get("cpu") or {}
        out += [
            f"**{label}:** first start request {_s(x['first_send'])} after the first PATCH, last one {_s(x['sends_seconds'])}; "
            f"{x['accepted']:,} of {x['gpuvms']:,} accepted; all Ready "
            f"{_s(x['all_ready_seconds']) if x['all_ready_seconds'] is not None else 'not awaited'}; "
            f"429s {x['throttled']}" + (f" ({', '.join(f'{k} {v}' for k, v in sorted(x['throttled_by_operation'].items()))})" if x['throttled'] else "")
            + f"; 409s {x['conflicts']}; overlapping operations {x['overlaps']}; completion p50 {_ms(x['completion'].get('p50_ms'))}, "
            f"p99 {_ms(x['completion'].get('p99_ms'))} over {x['completion'].get('n', 0):,} GpuVms. "
            f"Time requests spent waiting in the operator's own pacer (sum over requests, from its metrics): "
            + (", ".join(f"{k} {v:,.0f} s" for k, v in sorted(tw.items())) or "none") + ". "
            + ("CPU over the burst (mean, % of one core): " + ", ".join(f"{k} {v:.0f} %" for k, v in sorted(cpu.get('cpu_percent', {}).items()))
               + "; busiest second: " + ", ".join(f"{k} {v:.0f} %" for k, v in sorted(cpu.get('peak_percent', {}).items())) + "." if cpu else ""),
            "",
        ]
        if key == "burst_a":
            out += [
                f"(a) runs while world R's settled window and the baseline script run (it starts {p['burst_a_head_start']:g} s "
                "before them, so its first flurry of patches and writes is over). It cannot meet the 10 s target by "
                "design: Azure's ARM write bucket holds 200 requests and refills 10 a second, the operator keeps to 80 % "
                "of it (160, then 8/s), so 1,000 starts need (1,000 − 160) / 8 ≈ 105 s. Two things add to that: every "
                "start of a VM whose tags are older than 60 s first re-reads the VM (the consent) from the same 20 reads/s "
                "that the polls use, and the default `--max-operations 500` is reached after ~42 s, after which a start "
                "waits until the operator has seen an earlier one end (finding 1 makes that late). Its Ready is not awaited (it would add ~2 minutes and can only be later than the last "
                f"send + {p['burst_start']:g} s).",
                "",
            ]

    fp = r.get("footprint")
    if fp:
        one = fp.get("operator_rss_mib_one_gpuvm")
        rss = fp["rss_mib"].get("operator-r")
        per = (rss - one) / (fp["gpuvms"] - 1) * 1024 if one and rss else None
        out += [
            "### Footprint (world R, settled)",
            "",
            f"`/proc/<pid>/status` VmRSS and `/proc/<pid>/stat` utime+stime of the operator process alone, over the "
            f"settled window ({fp['window_seconds']:.0f} s, default `--resync-interval {fp['resync_seconds']:g}`), with "
            f"{fp['gpuvms']:,} GpuVms (10 + 100 + 1,000: the bulk-read fleets) — 11 % more than the target's 1,000. "
            f"During the window the operator made {fp['azure_requests_in_window']} Azure requests and "
            f"{fp['status_changes_in_window']} GpuVm changes were seen.",
            "",
            f"- operator RSS {rss:.0f} MiB" + (f" (with 1 GpuVm: {one:.0f} MiB, so about {per:.0f} KiB per GpuVm)" if per else "")
            + f"; CPU {fp['cpu_percent'].get('operator-r', 0):.2f} % of one core (busiest second "
            f"{fp['peak_percent'].get('operator-r', 0):.0f} %).",
            f"- the emulator: {fp['cpu_percent'].get('kube-emulator-r', 0):.2f} %, {fp['rss_mib'].get('kube-emulator-r', 0):.0f} MiB; "
            f"the simulator: {fp['cpu_percent'].get('azure-sim-r', 0):.2f} %, {fp['rss_mib'].get('azure-sim-r', 0):.0f} MiB.",
            "",
        ]

    c = r.get("compare")
    if c and "script_seconds" in c:
        out += [
            "### Side by side with the script it replaces (world C)",
            "",
            f"One simulator, {c['vms']} VMs for each side, every start {c['simulated_start_seconds']:g} s, running operations "
            f"answer `Retry-After: {c['retry_after_seconds']}` (the 202 itself carries whole seconds, as the SDK needs), "
            "Azure's throttling on. **The operator:** "
            f"{c['vms']} Deallocated, settled GpuVms are patched to Running at once; time to all Ready with `powerState: "
            "Running`, from the first PATCH. It runs twice, each time in a subscription of its own: as shipped, and "
            "with `--azure-budget-share 0`. **The script** (`bench/script_baseline.py`, our rendering of the queue-"
            "triggered Function): one worker takes one message per VM in turn, reads the VM with its instance view, "
            "takes `statuses[1]` as the power state, calls `begin_start` and blocks on `.result()` — the synchronous "
            "azure-mgmt-compute client, as the Function does; time from its first message to its last result.",
            "",
            f"- script: {_s(c['script_seconds'])} ({c['script_per_message_p50_s']:.2f} s per message at the median, "
            f"{c['script_errors']} errors, {c['script_running_after']} of {c['vms']} VMs running afterwards, "
            f"{c['script_cpu_seconds']:.1f} s CPU)",
            f"- operator as shipped: {_s(c['operator_seconds'])} → **{c['ratio']:.0f}x**; 409s {c['operator_409']}, 429s "
            f"{c['operator_429']}; pacer waits: " + (", ".join(f"{k} {v:.0f} s" for k, v in sorted(c['operator_throttle_wait'].items())) or "none"),
            f"- operator with `--azure-budget-share 0`: {_s(c['operator_unpaced_seconds'])} → **{c['ratio_unpaced']:.0f}x**; "
            f"409s {c['operator_unpaced_409']}, 429s {c['operator_unpaced_429']}",
            "",
            "The operator's side is one run each; in repeated runs while this suite was written the as-shipped time "
            "ranged from 3.4 to 7.4 s (14–30x), depending on how its paced polls and its 2 s walks fell, and the "
            "unpaced one from 1.7 to 2.1 s. The script's time is the number of VMs times (start + the poll it waits for); the operator's is one start "
            "plus how soon it learns that 100 operations ended. The ratio therefore grows with the start time and the "
            "number of VMs (a real GPU VM takes minutes: 100 of them are hours for the script). With a 1 s start it is "
            "decided by how the operator learns the ends: see \"What limits the operator\", 1.",
            "",
        ]
    return out


def _num(value: Any, fmt: str, fallback: str) -> str:
    return fallback if value is None else format(value, fmt)


def findings(doc: Mapping[str, Any]) -> list[str]:
    r = doc.get("results", {})
    c = r.get("compare") or {}
    a = r.get("burst_a") or {}
    b = r.get("burst_b") or {}
    tls = r.get("cabundle")
    blog = b.get("operator_log") or {}
    poll_wait = (c.get("operator_throttle_wait") or {}).get("poll")
    compare_txt = (
        f"in the comparison the operator as shipped needed {_s(c.get('operator_seconds'))} to see 100 one-second starts "
        f"end (its pacer's summed poll waits: {_num(poll_wait, ',.0f', '?')} s), against {_s(c.get('operator_unpaced_seconds'))} "
        "with `--azure-budget-share 0`" if c else "the comparison shows it"
    )
    a_txt = (f"a median of {_s((a.get('completion') or {}).get('p50_ms', 0) / 1000)} late (p99 "
             f"{_s((a.get('completion') or {}).get('p99_ms', 0) / 1000)})" if a.get("completion", {}).get("n") else "seconds late")
    b_failed = blog.get("operations_reported_failed_throttled")
    b_txt = (f" In this run's burst (b) the operator reported {b_failed:,} of {b.get('gpuvms', 0):,} starts as failed "
             "(`start of … failed: SubscriptionRequestsThrottled`, a `StartFailed` Warning Event) although every one of "
             "them succeeded in Azure." if b_failed else "")
    sends_b = b.get("sends_seconds")
    peak_b = ((b.get("cpu") or {}).get("peak_percent") or {}).get("operator-b")
    log_txt = (f"by the end of burst (b) (1,000 GpuVms settled, then started) operator-b's log held {blog['lines']:,} lines "
               f"({blog['bytes'] / 1e6:.1f} MB) for {blog['records']:,} log records; the {blog['marker_records']:,} records "
               f"from azure.core.pipeline, with the headers they print on lines of their own, make up "
               f"{blog['marker_lines']:,} of those lines" if blog.get("records") else
               "one burst of 1,000 starts wrote about 127,000 lines (8.5 MB), nine in ten of them from azure.core.pipeline")
    if tls:
        x, y = tls["ca_bundle_flag"], tls["ssl_cert_file"]
        tls_txt = (f"Measured by this run (`--only cabundle`: {tls['gpuvms']:,} GpuVms settling under each operator): "
                   f"operator RSS {x['operator_rss_mib']:.0f} MiB with `--ca-bundle` against {y['operator_rss_mib']:.0f} MiB "
                   f"with the same CA in `SSL_CERT_FILE`, {x['operator_open_sockets']} open sockets against "
                   f"{y['operator_open_sockets']}, operator CPU {x['operator_cpu_percent']:.0f} % against "
                   f"{y['operator_cpu_percent']:.0f} %, the simulator's RSS {x['simulator_rss_mib']:.0f} MiB against "
                   f"{y['simulator_rss_mib']:.0f} MiB.")
    else:
        tls_txt = ("Measured with `python -m bench --only cabundle` on this machine (not part of the default run; 1,000 "
                   "GpuVms settling under each operator, 43 s): operator RSS 402 MiB with `--ca-bundle` against 166 MiB "
                   "with the same CA in `SSL_CERT_FILE`, 478 open sockets against 31, operator CPU 24 % of a core against "
                   "19 %, the simulator's RSS 328 MiB against 119 MiB.")
    return [
        "## What limits the operator",
        "",
        "Precise places in the operator's code (not changed here; described for whoever owns `controller/`). Numbers "
        "marked \"profiled separately\" come from cProfile/tracemalloc runs on this machine while the suite was "
        "written; the others are from this run.",
        "",
        "1. **Every operation is polled, and the polls share the read budget with the bulk walk that would make them "
        "unnecessary.** `Engine._finish` (controller/engine.py) awaits `AzureCompute.finish` → `poller.result()` for "
        "each operation; azure-core 1.41 polls once right after the 202 (`AsyncLROBasePolling._poll` calls "
        "`update_status()` before the first delay), then every `Retry-After`, then GETs the Location monitor once more "
        "at the end. Each of these takes a `Kind.POLL` and a `Kind.READ` token in `SubscriptionPacer.take` "
        "(controller/pacing.py), and so does every page of the walk (`Kind.LIST` + `Kind.READ`). At 80 % of ARM's read "
        f"budget (20/s) 100 operations polled every second already queue: {compare_txt}. In burst (a) up to 500 "
        "operations in flight, each polled every 10 s, plus a tag read before every start, keep the read bucket in debt "
        f"for the whole burst; the walk's pages wait behind the polls and completion is learned {a_txt}. *What would "
        "close it:* while the subscription's walk runs, do not poll each operation at `Retry-After` — poll once after "
        "the expected duration, or not at all (one list page answers for 1,000 VMs) — and let `Kind.LIST` go before "
        "`Kind.POLL` in the pacer.",
        "",
        "2. **A 429 on an operation's status poll is taken for a failed start.** With `--azure-budget-share 0` "
        "(burst b) the polls exceed ARM's 25 reads/s and get 429. `_OwnThrottlingRetryPolicy` "
        "(controller/azure_compute.py) does not retry 429 (by design), so `poller.result()` raises; `Engine._finish` "
        "returns it as the operation's failure, `_follow` logs and posts `StartFailed` and sets `request_failure`, "
        "`Fleet.operation_ended` forgets the VM, and the GpuVm's next step reads the VM with a GET of its own — which "
        f"draws 429s too.{b_txt} *What would close it:* treat a throttled poll as \"still running, unknown\": wait "
        "out the pause and keep following the same poller instead of ending the operation.",
        "",
        "3. **One process, CPU-bound during a burst.** Burst (b) sent its 1,000 starts in "
        f"{_s(sends_b)} instead of 10 s, with the operator at {_num(peak_b, '.0f', '~100')} % of one core in its busiest "
        "second. Profiled separately (cProfile of the operator over burst (b) with Azure's limits off, so that 429s do "
        "not distort it; 93 s of CPU): azure-mgmt-compute model (de)serialization 12 %, kopf's per-event processing "
        "11 %, asyncio 8 %, azure-core pipeline 6 %, log formatting and writing 6 % (finding 6), JSON 3 %, the "
        "operator's own modules about 3 %. *What would close it:* fewer requests per start (finding 1), fewer log "
        "lines (6), a cheaper walk (4); beyond that, several operator processes sharded with `--selector`.",
        "",
        "4. **The bulk walk deserializes every VM into SDK models.** `AzureCompute.list_observations` lets "
        "azure-mgmt-compute build a `VirtualMachine` model per VM (`model_base`) before `observation_from_model` reads "
        "three fields of it: about 150–200 µs per VM (profiled separately: 140–220 ms of CPU per walk of 1,000 VMs, "
        "pages of 100 or 1,000). While operations run it walks every 2 s and right after each accepted operation, "
        "holding the event loop for a page at a time (15–20 ms per page of 100, all of a page of 1,000 at once). "
        "*What would close it:* take the list pages raw (a `cls=` callback returning the JSON) and pick `id` and "
        "`instanceView.statuses[].code` directly.",
        "",
        "5. **Memory: about 95 MiB before the first GpuVm, then about 70 KiB per GpuVm.** Importing the operator "
        "(`python -c 'import controller.operator'`) peaks at 96 MiB: kopf 61 MiB alone, about 20 MiB of which is the "
        "official `kubernetes` client (kopf imports it when installed; the operator needs it only for `StatusWriter`, "
        "controller/kube.py), azure-mgmt-compute 45 MiB. Per GpuVm, tracemalloc (profiled separately, 1 vs 1,000 "
        "GpuVms) finds about 37 KiB of Python objects — mostly kopf's per-object machinery: asyncio +12 MiB (daemon "
        "tasks, events, waiters), kopf +12 MiB, kept JSON bodies +7 MiB per 1,000; the engine's own state about "
        "3 KiB — and the allocator's overhead on top. *What would close it:* write status with kopf's aiohttp session "
        "instead of the `kubernetes` client and drop that dependency (~20 MiB), and drive GpuVms from one work queue "
        "(the engine already has wake events and requeue delays) instead of a kopf daemon per object (~25 MiB per 1,000).",
        "",
        "6. **Every ARM request is logged at INFO, in about eight lines.** azure-core's `HttpLoggingPolicy` logs each "
        "request's URL, headers and response status through `azure.core.pipeline.policies.http_logging_policy`, and "
        f"`kopf.configure` sets the root logger to INFO: {log_txt}. `logging_enable=False` in `AzureCompute._options` "
        "does not stop it (it governs body logging only). *What would close it:* set that logger to WARNING in "
        "`controller/operator.py::_run`.",
        "",
        "7. **`--ca-bundle` defeats connection reuse.** `AzureCompute._options` passes `connection_verify=<path>`; "
        "azure-core's `AioHttpTransport._build_ssl_config` then builds a new `ssl.SSLContext` from the file for every "
        "request, and aiohttp pools connections by that context, so no connection is ever reused: each request is a "
        f"new TCP connection and TLS handshake, and idle TLS connections pile up until keep-alive expires. {tls_txt} "
        "Production on Azure's public CAs is not affected; anyone passing `--ca-bundle` (a proxy's CA, a private "
        "endpoint) is. The benchmark therefore hands the simulator's CA to the operator in `SSL_CERT_FILE` (the trust "
        "store an image would have), which takes production's code path. *What would close it:* build one "
        "`SSLContext` at start-up and give the clients an `AioHttpTransport` over `aiohttp.TCPConnector(ssl=context)`.",
        "",
        "8. **`status.vm.size` flaps.** A GpuVm's own read (GET) records the VM's size; the first bulk walk after it "
        "(`list_all(statusOnly=true)`, whose items carry no `hardwareProfile`) replaces the facts in `Fleet.remember` "
        "with ones whose size is None, so every GpuVm's status is patched once more after it settled, and again "
        "after every action (which re-reads the VM for fresh tags); `gpuvm_billed_seconds` changes its `size` label "
        "with it. *What would close it:* merge facts field by field in `Fleet.remember`. The benchmark waits for that "
        "extra round of writes before its settled window.",
        "",
        "9. **`--max-operations` defaults to 500 per subscription.** A 1,000-VM burst as shipped leaves the second half "
        "waiting for the first half's starts to end. Burst (b) raises it to 1,000 to show capability; in (a) the write "
        "budget is the tighter limit anyway.",
        "",
        "10. **Completion at scale is bounded by the 2 s busy walk.** With `Retry-After: 10` on running operations the "
        "operator learns most ends from the bulk walk, which runs every `EngineSettings.busy_walk` = 2 s while "
        "operations are in flight (a constant, not a `run` flag): on average a second after the end, plus the status "
        "write — and 1,000 ends at once also queue their status writes behind 4 `StatusWriter` threads. *What would "
        "close it:* a 1 s busy walk when the subscription fits in one page (a fifth of Compute's list budget), and "
        "finding 1, so that walk pages do not queue behind polls.",
        "",
        *_servers(doc),
    ]


def _servers(doc: Mapping[str, Any]) -> list[str]:
    """Whether the emulator or a simulator was ever the busy process, from the per-phase CPU."""
    rows = []
    for phase, w in (doc.get("cpu") or {}).items():
        peaks = w.get("peak_percent") or {}
        means = w.get("cpu_percent") or {}
        emu = max((v for k, v in peaks.items() if k.startswith("kube-emulator")), default=None)
        sim = max((v for k, v in peaks.items() if k.startswith("azure-sim")), default=None)
        op = max((v for k, v in peaks.items() if k.startswith("operator")), default=None)
        emu_mean = max((v for k, v in means.items() if k.startswith("kube-emulator")), default=None)
        rows.append((phase, emu, emu_mean, sim, op))
    worst_emu = max((x for x in rows if x[1] is not None), key=lambda x: x[1], default=None)
    worst_sim = max((x for x in rows if x[3] is not None), key=lambda x: x[3], default=None)
    text = [
        "## The emulator and the simulator",
        "",
    ]
    if worst_emu and worst_sim:
        text.append(
            f"Neither limited a measurement, so neither was changed (no edits to `controller/kubeemu` or "
            f"`controller/azuresim`). The emulator's busiest second was {worst_emu[1]:.0f} % of one core (phase "
            f"\"{worst_emu[0]}\", mean {worst_emu[2]:.0f} %), while the operator in the same phase peaked at "
            f"{_num(worst_emu[4], '.0f', '?')} %: when the emulator is busiest, it is answering an operator that is "
            f"itself saturated. The simulators never exceeded {worst_sim[3]:.0f} % in any second. The emulator's "
            "heaviest work is validating each write against the CRD's schema and CEL rules (profiled separately: "
            "roughly 1–2 ms of CPU per status write, mostly celpy's tree interpreter); were the operator faster, "
            "that would be the next limit, at several hundred writes a second. The benchmark process itself only patches, "
            "watches and reads logs.")
    text += [
        "",
        "The simulators are the shipped `gpuvm-operator azure-sim`, with `--throttle-limit POLICY=CAP/RATE` for the "
        "one policy a scenario relaxes and `--log-size` large enough to keep every start request of a burst.",
        "",
    ]
    return text


def missed(doc: Mapping[str, Any], rows: list[Mapping[str, Any]]) -> list[str]:
    """One line per missed target: by how much, why, and which finding says what would close it."""
    r = doc.get("results", {})
    p = doc["plan"]
    out: list[str] = []
    for row in rows:
        if row["met"] is not False:
            continue
        name = row["name"]
        why = ""
        if name.startswith("completion") and "burst b" in name:
            polls = ((r.get("burst_b") or {}).get("throttled_by_operation") or {}).get("Operations.Status", 0)
            why = ("the operator learns most ends from the bulk walk, which runs every 2 s while operations are in flight "
                   f"(`busy_walk`, not a flag), and from 10 s polls, {polls:,} of which were answered 429 — findings 10 and 2.")
        elif name.startswith("burst (b)") and "sent" in name:
            cpu = ((r.get("burst_b") or {}).get("cpu") or {}).get("peak_percent", {}).get("operator-b")
            why = (f"the operator process is CPU-bound while it sends (busiest second {cpu:.0f} % of one core)" if cpu else
                   "the operator process is CPU-bound while it sends") + " and its reads draw 429s — findings 3, 1, 2, 6."
        elif name.startswith("burst (b)") and "Ready" in name:
            why = f"the last start leaves at the time above, then takes {p['burst_start']:g} s, then its end must be learned — findings 3 and 10."
        elif name.startswith("burst (a)") and "sent" in name:
            why = ("by design: ARM allows 200 writes at once and 10/s after, the operator keeps to 80 % (160, then 8/s), so "
                   "1,000 starts take about 105 s. Only a larger share of Azure's budget (or Azure raising it) shortens this; "
                   "the 10 s target is not reachable within Azure's documented write limit.")
        elif name.startswith("burst (a)") and "Ready" in name:
            why = "follows from the sends above."
        elif name.startswith("footprint") and "RSS" in name:
            why = "about 95 MiB of imports before the first GpuVm and about 70 KiB per GpuVm, most of it kopf's per-object daemon — finding 5."
        elif name.startswith("footprint"):
            why = "see the footprint section."
        elif name.startswith("compare"):
            c = r.get("compare") or {}
            why = (f"as shipped, the operator paces every operation's status polls into 20 reads/s, so learning that 100 "
                   f"operations ended takes seconds; with its pacing off it needs {_s(c.get('operator_unpaced_seconds'))} "
                   f"({c.get('ratio_unpaced', 0):.0f}x) — finding 1.")
        elif name.startswith("suite runtime"):
            why = "see the run time above."
        elif name.startswith("bulk"):
            why = "see the bulk reads section."
        elif name.startswith("reaction"):
            why = "see the reaction section."
        out.append(f"- **{name}** — {row['measured']} against {row['target']}: {why}")
    return out
