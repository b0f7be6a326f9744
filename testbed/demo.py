"""``gpuvm-operator demo``: the real operator, an embedded cluster and a simulated Azure.

Everything runs in this process on loopback: the Kubernetes API emulator (loaded with the real
CRD), the Azure Compute simulator over HTTPS, and ``gpuvm-operator run`` itself in a thread —
the same code a cluster runs, configured through the same flags. A short script plays what
users do: an AI job asks for its GPU VM and releases it, someone starts a VM from the portal,
Azure runs out of capacity once. A live table shows the GpuVms until everything converges.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

from controller.check import role_actions
from controller.config import parse_config
from testbed.azuresim import Fault, SimulatorConfig, SimVm, Timings
from testbed.sandbox import Azure, Cluster, Sandbox, ready_of, settled

SUBSCRIPTION = "6c1f8b2e-3d4a-4f5b-9c8d-7e6f5a4b3c2d"
RESOURCE_GROUP = "rg-ai-gpu"
NAMESPACE = "ml"
MANAGED = {"gpuvm-managed": "true", "team": "ml"}

# The operator signs in with exactly the actions of the custom role (deploy/azure), as it should in Azure.
ROLE_TOKEN = "demo-gpuvm-power-operator"

# Azure takes minutes; the demo runs its clock 20x faster so it finishes in well under a minute.
SPEEDUP = 20.0
AZURE_START_SECONDS = 120.0
AZURE_DEALLOCATE_SECONDS = 70.0


@dataclasses.dataclass(frozen=True)
class DemoVm:
    gpuvm: str
    vm: str
    size: str
    power: str  # the VM's power state when the demo starts
    desired: str  # the GpuVm's desiredState when created
    story: str


VMS = (
    DemoVm("a100-trainer", "vm-a100-01", "Standard_NC24ads_A100_v4", "deallocated", "Running",
           "a training run asks for an A100; Azure has no capacity the first time"),
    DemoVm("a10-inference", "vm-a10-01", "Standard_NV36ads_A10_v5", "deallocated", "Deallocated",
           "an AI job requests Running, works, then requests Deallocated"),
    DemoVm("t4-notebook", "vm-t4-01", "Standard_NC4as_T4_v3", "deallocated", "Deallocated",
           "someone starts it in the portal; the operator puts it back"),
    DemoVm("h100-eval", "vm-h100-01", "Standard_NC40ads_H100_v5", "running", "Deallocated",
           "left running overnight at several dollars an hour; deallocated"),
)

COLUMNS = ("NAME", "DESIRED", "POWER", "READY", "REASON", "LAST OPERATION")


def crd_paths() -> list[Path]:
    """The CRDs shipped with the package (the same files as deploy/crds): GpuVm and GpuVmClaim."""
    data = Path(str(resources.files("controller") / "data"))
    return sorted(data.glob("*.gpuvm.dev.yaml"))


def last_operation_text(status: Mapping[str, Any]) -> str:
    op = status.get("lastOperation")
    if not isinstance(op, Mapping):
        return "-"
    text = f"{op.get('action')} {op.get('result')} ({op.get('trigger')})"
    error = op.get("error") or {}
    if error.get("code"):
        text += f" {error['code']}"
    return text


def table_rows(objects: Sequence[Mapping[str, Any]]) -> list[tuple[str, ...]]:
    rows = []
    for obj in sorted(objects, key=lambda o: o["metadata"]["name"]):
        status = obj.get("status") or {}
        ready = ready_of(obj) or ("-", "-", "-")
        rows.append(
            (
                obj["metadata"]["name"],
                (obj.get("spec") or {}).get("desiredState", "-"),
                status.get("powerState", "-"),
                ready[0],
                ready[1],
                last_operation_text(status),
            )
        )
    return rows


def render_table(rows: Sequence[Sequence[str]], columns: Sequence[str] = COLUMNS) -> str:
    """Rows as kubectl prints them: left-aligned columns, three spaces apart."""
    widths = [max(len(str(c)) for c in column) for column in zip(columns, *rows)]
    lines = ["   ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip() for row in (columns, *rows)]
    return "\n".join(lines)


class Script:
    """What users and Azure do during the demo, one step at a time, each when its moment comes.

    Steps fire on conditions observed in the cluster (not on a timer), except the AI job's own
    "work", which lasts a few seconds as a job would.
    """

    def __init__(self, *, cluster: Cluster, azure: Azure, say: Callable[[str], None]) -> None:
        self.cluster, self.azure, self.say = cluster, azure, say
        self.step = 0
        self.job_started_at: float | None = None

    @property
    def done(self) -> bool:
        return self.step >= 5

    def advance(self, objects: Mapping[str, Mapping[str, Any]]) -> None:
        def at(name: str, desired: str) -> bool:
            obj = objects.get(name)
            return obj is not None and obj["spec"].get("desiredState") == desired and settled(obj)

        if self.step == 0 and at("a10-inference", "Deallocated") and at("t4-notebook", "Deallocated"):
            self.say("AI job: needs a GPU -> kubectl patch gvm a10-inference desiredState=Running")
            self.cluster.patch_spec("a10-inference", {"desiredState": "Running"})
            self.say("portal: someone clicks Start on vm-t4-01 (out of band)")
            self.azure.out_of_band("vm-t4-01", "start")
            self.step = 1
        elif self.step == 1 and at("a10-inference", "Running"):
            self.say("AI job: VM is Ready, running inference ...")
            self.job_started_at = time.monotonic()
            self.step = 2
        elif self.step == 2 and self.job_started_at is not None and time.monotonic() - self.job_started_at > 3:
            self.say("AI job: done -> kubectl patch gvm a10-inference desiredState=Deallocated")
            self.cluster.patch_spec("a10-inference", {"desiredState": "Deallocated"})
            self.step = 3
        elif self.step == 3 and at("a10-inference", "Deallocated"):
            self.step = 4
        elif self.step == 4 and all(at(v.gpuvm, v.desired) for v in VMS):  # the job put a10 back too
            self.step = 5


def _sandbox(workdir: Path) -> Sandbox:
    timings = Timings(
        start=AZURE_START_SECONDS / SPEEDUP,
        deallocate=AZURE_DEALLOCATE_SECONDS / SPEEDUP,
        power_off=45 / SPEEDUP,
        restart=90 / SPEEDUP,
        hibernate=150 / SPEEDUP,
    )
    vms = [
        SimVm(subscription_id=SUBSCRIPTION, resource_group=RESOURCE_GROUP, name=v.vm, size=v.size,
              power_state=v.power, tags=MANAGED)
        for v in VMS
    ]
    config = SimulatorConfig(
        timings=timings,
        retry_after=0.25,
        restricted_tokens={ROLE_TOKEN: role_actions()},
        ca_file=str(workdir / "azure-sim-ca.pem"),
        faults=(Fault.parse("op=start vm=vm-a100-01 error=AllocationFailed times=1 after=1"),),
    )
    return Sandbox(crds=crd_paths(), simulator=config, vms=vms, workdir=workdir, namespace=NAMESPACE)


# The demo's ``gpuvm-operator run`` flags beyond the sandbox's: cadences scaled to its clock.
TIMING_FLAGS = (
        "--resync-interval", "2",
        "--transition-poll", "1",
        "--operation-poll", "0.5",
        "--capacity-backoff", "3",
        "--capacity-backoff-max", "10",
        "--error-retry", "2",
        "--denied-retry", "5",
)


class Screen:
    """Redraws in place on a terminal; prints each changed table once elsewhere (CI logs)."""

    def __init__(self, out: TextIO, *, live: bool) -> None:
        self.out, self.live = out, live
        self.last = ""
        self.notes: list[str] = []

    def note(self, text: str) -> None:
        self.notes.append(f"{time.strftime('%H:%M:%S')}  {text}")
        if not self.live:
            print(f"  {self.notes[-1]}", file=self.out, flush=True)

    def show(self, table: str, header: str) -> None:
        if self.live:
            frame = f"{header}\n\n{table}\n\n" + "\n".join(self.notes[-6:])
            self.out.write("\x1b[H\x1b[2J" + frame + "\n")
            self.out.flush()
        elif table != self.last:
            print(f"\n{header}\n{table}", file=self.out, flush=True)
        self.last = table


def _create_gpuvms(cluster: Cluster) -> None:
    for vm in VMS:
        spec = {"vm": {"resourceGroup": RESOURCE_GROUP, "name": vm.vm}, "desiredState": vm.desired, "deletionPolicy": "Deallocate"}
        cluster.create(vm.gpuvm, spec, labels={"app.kubernetes.io/part-of": "gpuvm-demo"})


def run_demo(*, timeout: float, out: TextIO, live: bool) -> int:
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="gpuvm-demo-"))
    log_file = workdir / "operator.log"
    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    for noisy in ("azure", "urllib3", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    screen = Screen(out, live=live)
    converged = False
    try:
        with _sandbox(workdir) as world:
            cluster, azure = world.cluster, world.azure
            print(f"gpuvm-operator demo: Kubernetes emulator {cluster.url}, Azure simulator {azure.sim.endpoint}", file=out)
            print(f"  Azure transitions run {SPEEDUP:.0f}x faster than Azure's (a {AZURE_START_SECONDS:.0f} s start takes "
                  f"{AZURE_START_SECONDS / SPEEDUP:.0f} s); operator log: {log_file}", file=out)
            for vm in VMS:
                print(f"  {vm.gpuvm:<14} {vm.vm:<11} {vm.size:<26} {vm.story}", file=out)
            flags = world.operator_flags(subscription=SUBSCRIPTION, timing=TIMING_FLAGS)
            flags[flags.index("--simulator-token-file") + 1] = str(world.token_file(ROLE_TOKEN))
            world.start_operator(flags)
            _create_gpuvms(cluster)
            script = Script(cluster=cluster, azure=azure, say=screen.note)
            warnings_seen: set[str] = set()
            deadline = started + timeout
            while time.monotonic() < deadline:
                objects = cluster.objects()
                script.advance(objects)
                _note_warnings(cluster, screen, warnings_seen)
                elapsed = time.monotonic() - started
                screen.show(render_table(table_rows(list(objects.values()))), f"gpuvm-operator demo  {elapsed:5.1f} s")
                if script.done and not azure.busy():
                    converged = True
                    break
                time.sleep(0.25)  # the screen's refresh rate, not a wait for an effect
            _summary(out, cluster=cluster, azure=azure, elapsed=time.monotonic() - started, converged=converged, timeout=timeout)
            checked = _check(out, flags, live=live)
        return 0 if converged and checked else 1
    finally:
        root.removeHandler(handler)
        handler.close()


def _note_warnings(cluster: Cluster, screen: Screen, seen: set[str]) -> None:
    """Warning Events as they come: a failure that lasts one back-off still shows, and stays shown,
    whichever moments the table happened to be drawn at."""
    for event in cluster.core.list_namespaced_event(NAMESPACE).items:
        uid = event.metadata.uid
        if event.type == "Warning" and uid not in seen:
            seen.add(uid)
            screen.note(f"event: {event.involved_object.name} {event.reason}: {event.message}")


def _summary(out: TextIO, *, cluster: Cluster, azure: Azure, elapsed: float, converged: bool, timeout: float) -> None:
    counters = azure.counters()
    total = sum(counters.values())

    def count(op: str, status: int | None = None) -> int:
        return sum(n for (o, s), n in counters.items() if o == op and (status is None or s == status))

    by_status: dict[int, int] = {}
    for (_, status), n in counters.items():
        by_status[status] = by_status.get(status, 0) + n
    print("", file=out)
    if converged:
        print(f"All {len(VMS)} GpuVms converged in {elapsed:.1f} s.", file=out)
    else:
        print(f"NOT converged within {timeout:.0f} s; see the table above and the operator log.", file=out)
    print(
        f"Azure requests: {total} (starts {count('VirtualMachines.Start')}, deallocates "
        f"{count('VirtualMachines.Deallocate')}, reads {count('VirtualMachines.Get') + count('VirtualMachines.InstanceView')}, "
        f"operation polls {count('Operations.Get') + count('Operations.Status')}); "
        f"HTTP 409: {by_status.get(409, 0)}, 429: {by_status.get(429, 0)}; overlapping power operations: {len(azure.overlaps())}",
        file=out,
    )
    for name, obj in sorted(cluster.objects().items()):
        status = obj.get("status") or {}
        op = status.get("lastOperation") or {}
        print(f"  {name:<14} {status.get('powerState', '-'):<12} last: {op.get('action', '-')} {op.get('result', '')} "
              f"({op.get('trigger', '-')})", file=out)


def _check(out: TextIO, flags: Sequence[str], *, live: bool) -> bool:
    """``gpuvm-operator check`` with the operator's own flags, against the demo's world."""
    from controller.check import exit_code, render_text, run_checks

    print("\n$ gpuvm-operator check  (with the operator's flags)", file=out)
    results = run_checks(parse_config(list(flags)), pre=False)
    print(render_text(results, tty=live), file=out, flush=True)
    return exit_code(results) == 0


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the operator against an embedded cluster and a simulated Azure",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="give up (exit 1) after this many seconds")
    parser.add_argument("--plain", action="store_true", help="print tables as they change instead of redrawing")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    live = sys.stdout.isatty() and not args.plain and os.environ.get("TERM") != "dumb"
    return run_demo(timeout=args.timeout, out=sys.stdout, live=live)
