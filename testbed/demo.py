"""``gpuvm-operator demo``: the real operator, an embedded cluster and a simulated Azure.

Everything runs on loopback: the Kubernetes API emulator (loaded with the real CRDs), the Azure
Compute simulator over HTTPS, and ``gpuvm-operator run`` itself in a thread — the same code a
cluster runs, configured through the same flags; the jobs are real ``gpuvm-operator claim``
processes. A short script plays what users and Azure do: an AI job switches its VM on and off
by hand, someone starts a VM from the portal, Azure runs out of capacity once; two jobs share a
VM in desiredState Auto, one finishes and one is killed hard, and the VM is switched off when
idle; Azure evicts a Spot VM; a schedule window wants a VM. A live table shows the GpuVms and
their claims until everything converges.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

from controller.check import role_actions
from controller.config import parse_config
from controller.schedule import DAY_NAMES, Schedule, is_open, parse_schedule
from testbed.azuresim import ArmError, Fault, SimulatorConfig, SimVm, Timings
from testbed.sandbox import Azure, Cluster, Sandbox, free_port, ready_of, scrape, settled, write_kubeconfig

SUBSCRIPTION = "6c1f8b2e-3d4a-4f5b-9c8d-7e6f5a4b3c2d"
RESOURCE_GROUP = "rg-ai-gpu"
NAMESPACE = "ml"
MANAGED = {"gpuvm-managed": "true", "team": "ml"}
CLAIMANT = {"gpuvm.dev/claimant": "true"}  # the label on job pod templates (deploy/examples)

# The operator signs in with exactly the actions of the custom role (deploy/azure), as it should in Azure.
ROLE_TOKEN = "demo-gpuvm-power-operator"

# Azure takes minutes; the demo runs its clock 20x faster so it finishes in well under a minute.
# Durations the demo sets (idle timeout, warning lead, lease) are scaled the same way.
SPEEDUP = 20.0
AZURE_START_SECONDS = 120.0
AZURE_DEALLOCATE_SECONDS = 70.0
IDLE_TIMEOUT = "12s"  # 4 min at Azure's pace
DEALLOCATION_WARNING = "6"  # seconds: 2 min at Azure's pace
LEASE = "3s"  # a job outside a Pod renews its claim's lease every second

# Office hours in a real time zone. Windows are minutes of local wall-clock time, so a window
# that opens *during* the demo would make it wait up to a minute for the next minute boundary:
# the demo's window opened at the current minute instead, and the table shows when it closes.
OFFICE_ZONE = "Europe/Berlin"


@dataclasses.dataclass(frozen=True)
class DemoVm:
    gpuvm: str
    vm: str
    size: str
    power: str  # the VM's power state when the demo starts
    desired: str  # the GpuVm's desiredState when created
    story: str
    spec: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # more of the GpuVm's spec
    priority: str | None = None  # Azure's VM priority: Spot or regular


VMS = (
    DemoVm("a100-trainer", "vm-a100-01", "Standard_NC24ads_A100_v4", "deallocated", "Running",
           "a training run asks for an A100; Azure has no capacity the first time"),
    DemoVm("a10-inference", "vm-a10-01", "Standard_NV36ads_A10_v5", "deallocated", "Deallocated",
           "an AI job patches desiredState Running, works, then Deallocated (the old way)"),
    DemoVm("t4-notebook", "vm-t4-01", "Standard_NC4as_T4_v3", "deallocated", "Deallocated",
           "someone starts it in the portal; the operator puts it back"),
    DemoVm("h100-eval", "vm-h100-01", "Standard_NC40ads_H100_v5", "running", "Deallocated",
           "left running overnight at several dollars an hour; deallocated"),
    DemoVm("a100-shared", "vm-a100-02", "Standard_NC48ads_A100_v4", "deallocated", "Auto",
           f"Auto: two jobs claim it; one finishes, one is OOM-killed; idle {IDLE_TIMEOUT}, then off",
           spec={"idleTimeout": IDLE_TIMEOUT}),
    DemoVm("t4-spot", "vm-t4-spot-01", "Standard_NC8as_T4_v3", "deallocated", "Auto",
           "Auto, Spot: a notebook claims it; Azure evicts it; the notebook is killed -9",
           spec={"idleTimeout": "0s"}, priority="Spot"),
    DemoVm("a10-office", "vm-a10-02", "Standard_NV18ads_A10_v5", "deallocated", "Auto",
           f"Auto: wanted in office hours ({OFFICE_ZONE}); the window is open now",
           spec={"idleTimeout": IDLE_TIMEOUT}),
)

COLUMNS = ("NAME", "DESIRED", "POWER", "READY", "CLAIMS", "REASON", "DECIDED-BY", "NEXT", "LAST OPERATION")
CLAIM_COLUMNS = ("CLAIM", "GPUVM", "PHASE", "READY", "REASON")


def crd_paths() -> list[Path]:
    """The CRDs shipped with the package (the same files as deploy/crds): GpuVm and GpuVmClaim."""
    data = Path(str(resources.files("controller") / "data"))
    return sorted(data.glob("*.gpuvm.dev.yaml"))


def office_window(now: dt.datetime, zone: str = OFFICE_ZONE, *, hours: int = 1) -> dict[str, str]:
    """A schedule window in ``zone`` that opened at the current minute and lasts ``hours``."""
    local = now.astimezone(Schedule(zone, ()).zone).replace(second=0, microsecond=0)
    end = local + dt.timedelta(hours=hours)  # wall-clock arithmetic: the zone's offset is not applied
    return {"days": DAY_NAMES[local.weekday()], "start": local.strftime("%H:%M"),
            "end": "24:00" if end.strftime("%H:%M") == "00:00" else end.strftime("%H:%M")}


def last_operation_text(status: Mapping[str, Any]) -> str:
    op = status.get("lastOperation")
    if not isinstance(op, Mapping):
        return "-"
    return f"{op.get('action')} {op.get('result')} ({op.get('trigger')})"


def next_text(demand: Mapping[str, Any], now: dt.datetime) -> str:
    """The first planned transition: to which state, and when (UTC time of day; the date too if
    it is not today)."""
    transitions = demand.get("nextTransitions") or []
    if not transitions:
        return "-"
    first = transitions[0]
    at = str(first.get("at", ""))
    when = at[11:19] + "Z" if at[:10] == now.strftime("%Y-%m-%d") else at.replace("T", " ")
    return f"{first.get('to')} {when}"


def table_rows(objects: Sequence[Mapping[str, Any]], *, now: dt.datetime | None = None) -> list[tuple[str, ...]]:
    now = now or dt.datetime.now(dt.timezone.utc)
    rows = []
    for obj in sorted(objects, key=lambda o: o["metadata"]["name"]):
        status = obj.get("status") or {}
        demand = status.get("demand") or {}
        ready = ready_of(obj) or ("-", "-", "-")
        rows.append(
            (
                obj["metadata"]["name"],
                (obj.get("spec") or {}).get("desiredState", "-"),
                status.get("powerState", "-"),
                ready[0],
                str(demand.get("activeClaims", "-")),
                ready[1],
                demand.get("decidedBy", "-"),
                next_text(demand, now),
                last_operation_text(status),
            )
        )
    return rows


def owned_by(claims: Sequence[Mapping[str, Any]], pod: Mapping[str, Any] | None) -> list[str]:
    """The names of the claims ``pod`` owns (the wrapper in a Pod makes it their owner)."""
    if pod is None:
        return []
    uid = pod["metadata"]["uid"]
    return sorted(c["metadata"]["name"] for c in claims
                  if any(o.get("uid") == uid for o in c["metadata"].get("ownerReferences") or []))


def claim_rows(claims: Sequence[Mapping[str, Any]]) -> list[tuple[str, ...]]:
    """GpuVmClaims as ``kubectl get gvmc`` shows them (without AGE)."""
    rows = []
    for obj in sorted(claims, key=lambda o: ((o.get("spec") or {}).get("gpuVm", ""), o["metadata"]["name"])):
        ready = ready_of(obj) or ("-", "-", "-")
        rows.append((obj["metadata"]["name"], (obj.get("spec") or {}).get("gpuVm", "-"),
                     (obj.get("status") or {}).get("phase", "-"), ready[0], ready[1]))
    return rows


def render_table(rows: Sequence[Sequence[str]], columns: Sequence[str] = COLUMNS) -> str:
    """Rows as kubectl prints them: left-aligned columns, three spaces apart."""
    widths = [max(len(str(c)) for c in column) for column in zip(columns, *rows)]
    lines = ["   ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip() for row in (columns, *rows)]
    return "\n".join(lines)


class Job:
    """A job's container: ``gpuvm-operator claim GPUVM -- python -c WORK``, the real wrapper in a
    process of its own. ``pod``: the Pod it runs in (the downward API's POD_NAME and POD_UID, so
    the claim is owned by the Pod); without one, the claim is held by a lease the wrapper renews.
    Its output lines (the wrapper's progress, the work's own) go to ``lines``."""

    def __init__(self, name: str, gpuvm: str, *, work: str, kubeconfig: Path, lines: queue.Queue[str],
                 pod: Mapping[str, Any] | None = None, lease: str | None = None) -> None:
        self.name, self.gpuvm, self.pod = name, gpuvm, pod
        env = {k: v for k, v in os.environ.items() if not k.startswith(("POD_", "KUBERNETES_", "KUBECONFIG"))}
        if pod is not None:
            env.update(POD_NAME=pod["metadata"]["name"], POD_UID=pod["metadata"]["uid"], POD_NAMESPACE=NAMESPACE)
        argv = [sys.executable, "-m", "controller", "claim", gpuvm, "-n", NAMESPACE, "--kubeconfig", str(kubeconfig),
                "--timeout", "2m", *(["--lease", lease] if lease else []), "--", sys.executable, "-u", "-c", work]
        # A session of its own: killing it hard takes the wrapper and its command, as a container's end does.
        self.process = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self._reader = threading.Thread(target=self._read, args=(lines,), name=f"job-{name}", daemon=True)
        self._reader.start()

    def _read(self, lines: queue.Queue[str]) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            lines.put(f"{self.name} | {line.rstrip()}")

    @property
    def exit_code(self) -> int | None:
        return self.process.poll()

    def kill(self) -> None:
        """SIGKILL to the wrapper and its command: no clean-up runs, the claim is left behind."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)

    def close(self) -> None:
        self.kill()
        self.process.wait(10)
        self._reader.join(5)

    def ended(self) -> str:
        code = self.exit_code
        if code is None:
            return "still running"
        return f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit {code}"


@dataclasses.dataclass(frozen=True)
class Moment:
    """What the script sees at one tick: GpuVms by name, claims, the time."""

    objects: Mapping[str, Mapping[str, Any]]
    claims: Sequence[Mapping[str, Any]]
    now: float

    def at(self, name: str, power: str) -> bool:
        """The GpuVm is settled (Ready for its generation) with the VM in ``power``."""
        obj = self.objects.get(name)
        return obj is not None and settled(obj) and (obj.get("status") or {}).get("powerState") == power

    def status(self, name: str) -> Mapping[str, Any]:
        return (self.objects.get(name) or {}).get("status") or {}

    def trigger(self, name: str) -> str | None:
        return (self.status(name).get("lastOperation") or {}).get("trigger")

    def claims_of(self, gpuvm: str) -> list[Mapping[str, Any]]:
        return [c for c in self.claims if (c.get("spec") or {}).get("gpuVm") == gpuvm]

    def ready_claims(self, gpuvm: str) -> int:
        return sum(1 for c in self.claims_of(gpuvm) if (ready_of(c) or ("",))[0] == "True")


class Story:
    """One thread of the script: steps that fire on conditions observed in the cluster (never on
    a timer), except a job's own work, which lasts a few seconds as work would."""

    steps = 1  # the story is done once ``step`` reaches this

    def __init__(self, world: DemoWorld) -> None:
        self.world = world
        self.step = 0
        self.mark = 0.0

    @property
    def done(self) -> bool:
        return self.step >= self.steps

    def advance(self, m: Moment) -> None:
        raise NotImplementedError


class PinnedStory(Story):
    """desiredState pinned by hand: the AI job's patches, the portal start corrected."""

    steps = 4

    def advance(self, m: Moment) -> None:
        w = self.world
        if self.step == 0 and m.at("a10-inference", "Deallocated") and m.at("t4-notebook", "Deallocated"):
            w.say("AI job: needs a GPU -> kubectl patch gvm a10-inference desiredState=Running")
            w.cluster.patch_spec("a10-inference", {"desiredState": "Running"})
            w.say("portal: someone clicks Start on vm-t4-01 (out of band)")
            w.azure.out_of_band("vm-t4-01", "start")
            self.step = 1
        elif self.step == 1 and m.at("a10-inference", "Running"):
            w.say("AI job: VM is Ready, running inference ...")
            self.mark, self.step = m.now, 2
        elif self.step == 2 and m.now - self.mark > 3:
            w.say("AI job: done -> kubectl patch gvm a10-inference desiredState=Deallocated")
            w.cluster.patch_spec("a10-inference", {"desiredState": "Deallocated"})
            self.step = 3
        elif self.step == 3 and m.at("a10-inference", "Deallocated") and m.at("t4-notebook", "Deallocated"):
            self.step = 4


class SharedStory(Story):
    """Two jobs claim one Auto VM; one finishes and the VM stays up for the other; the other is
    OOM-killed (its Pod ends Failed, its wrapper never deletes the claim); idle, then off."""

    steps = 4

    def __init__(self, world: DemoWorld) -> None:
        super().__init__(world)
        self.eval_claims: set[str] = set()  # the claims eval's Pod was seen to own

    def advance(self, m: Moment) -> None:
        w = self.world
        if self.step == 0 and m.at("a100-shared", "Deallocated"):
            w.say("jobs eval and train (two Pods) each run: gpuvm-operator claim a100-shared -- python ...")
            w.jobs["eval"] = w.job("eval", "a100-shared", pod=w.pod("eval-5d8kq"),
                                   work="import time; print('evaluating ...'); time.sleep(4); print('done')")
            w.jobs["train"] = w.job("train", "a100-shared", pod=w.pod("train-x7p2m"),
                                    work="import time; print('training ...'); time.sleep(600)")
            self.step = 1
        elif self.step == 1:
            eval_job = w.jobs["eval"]
            self.eval_claims.update(owned_by(m.claims, eval_job.pod))  # while it works, it holds one
            if eval_job.exit_code is None:
                return
            # Said only once checked: read now (this tick's claims may predate the exit), the claim
            # the wrapper held while eval worked is gone.
            left = owned_by(w.claims(), eval_job.pod)
            if not self.eval_claims:
                w.problem(f"eval: finished ({eval_job.ended()}) without ever holding a claim")
            elif left:
                w.problem(f"eval: finished ({eval_job.ended()}), but its claim {', '.join(left)} is still there: "
                          "its wrapper did not delete it")
            else:
                w.say(f"eval: finished ({eval_job.ended()}); its wrapper deleted its claim")
            w.cluster.pod_phase("eval-5d8kq", "Succeeded")
            self.mark, self.step = m.now, 2
        elif (self.step == 2 and m.now - self.mark > 2 and m.at("a100-shared", "Running")
              and (m.status("a100-shared").get("demand") or {}).get("activeClaims") == 1):
            w.say("a100-shared stays up for train (CLAIMS 1); then train is OOM-killed (kill -9: its wrapper cannot "
                  "delete its claim) and its Pod ends Failed")
            w.jobs["train"].kill()
            w.cluster.pod_phase("train-x7p2m", "Failed")
            self.step = 3
        elif self.step == 3 and m.at("a100-shared", "Deallocated") and m.trigger("a100-shared") == "Idle":
            self.step = 4


class SpotStory(Story):
    """A notebook claims a Spot VM with a lease; Azure evicts the VM, the operator starts it
    again; the notebook is killed hard, its lease lapses, the claim expires."""

    steps = 4

    def advance(self, m: Moment) -> None:
        w = self.world
        evictions = (m.status("t4-spot").get("evictions") or {}).get("count", 0)
        if self.step == 0 and m.at("t4-spot", "Deallocated"):
            w.say(f"notebook (on a laptop, no Pod): gpuvm-operator claim t4-spot --lease {LEASE} -- python ...")
            w.jobs["notebook"] = w.job("notebook", "t4-spot", lease=LEASE,
                                       work="import time; print('notebook kernel up'); time.sleep(600)")
            self.step = 1
        elif self.step == 1 and m.at("t4-spot", "Running") and m.ready_claims("t4-spot") == 1 and not w.busy("vm-t4-spot-01"):
            try:
                w.azure.evict("vm-t4-spot-01")
            except ArmError:
                return  # Azure is busy with the VM after all: next tick
            w.say("Azure: evicts the Spot VM vm-t4-spot-01 (it needs the capacity back)")
            self.step = 2
        elif self.step == 2 and evictions and m.at("t4-spot", "Running") and m.ready_claims("t4-spot") == 1:
            w.say("notebook: killed -9 (its lease is no longer renewed)")
            w.jobs["notebook"].kill()
            self.step = 3
        elif self.step == 3 and m.at("t4-spot", "Deallocated") and m.trigger("t4-spot") == "Idle":
            self.step = 4


class ScheduleStory(Story):
    """A schedule window open now wants the VM: started by the schedule, NEXT says until when."""

    def advance(self, m: Moment) -> None:
        if (self.step == 0 and m.at("a10-office", "Running")
                and (m.status("a10-office").get("demand") or {}).get("decidedBy") == "Schedule"):
            self.step = 1


class DemoWorld:
    """The sandbox, the jobs' processes and what the stories share."""

    def __init__(self, sandbox: Sandbox, *, workdir: Path, say: Callable[[str], None]) -> None:
        assert sandbox.cluster is not None and sandbox.azure is not None
        self.cluster: Cluster = sandbox.cluster
        self.azure: Azure = sandbox.azure
        self.say = say
        self.kubeconfig = write_kubeconfig(workdir / "job-kubeconfig", self.cluster.url)
        self.lines: queue.Queue[str] = queue.Queue()
        self.jobs: dict[str, Job] = {}
        self.problems: list[str] = []

    def pod(self, name: str) -> dict[str, Any]:
        """A job's Pod (labelled as the examples label job pod templates); no kubelet runs it."""
        return self.cluster.pod(name, labels=CLAIMANT)

    def job(self, name: str, gpuvm: str, *, work: str, pod: Mapping[str, Any] | None = None,
            lease: str | None = None) -> Job:
        return Job(name, gpuvm, work=work, kubeconfig=self.kubeconfig, lines=self.lines, pod=pod, lease=lease)

    def busy(self, vm: str) -> bool:
        return self.azure.snapshot(vm).operation is not None

    def claims(self) -> list[dict[str, Any]]:
        """The GpuVmClaims as they are now."""
        return self.cluster.custom.list_namespaced_custom_object("gpuvm.dev", "v1alpha1", NAMESPACE, "gpuvmclaims")["items"]

    def problem(self, text: str) -> None:
        """Something the demo's story says did not happen: told, and the demo fails (exit 1)."""
        self.problems.append(text)
        self.say(f"PROBLEM: {text}")

    def close(self) -> None:
        for job in self.jobs.values():
            job.close()


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
              power_state=v.power, tags=MANAGED, priority=v.priority)
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
        "--deallocation-warning", DEALLOCATION_WARNING,
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
            width = shutil.get_terminal_size().columns
            frame = f"{header}\n\n{table}\n\n" + "\n".join(self.notes[-10:])
            # Lines cut at the terminal's width: a wrapped table is unreadable.
            self.out.write("\x1b[H\x1b[2J" + "\n".join(line[:width] for line in frame.splitlines()) + "\n")
            self.out.flush()
        elif table != self.last:
            print(f"\n{header}\n{table}", file=self.out, flush=True)
        self.last = table


def _create_gpuvms(cluster: Cluster, *, now: dt.datetime) -> dict[str, str]:
    """Creates the GpuVms; returns the office window it gave a10-office."""
    window = office_window(now)
    schedule = {"timeZone": OFFICE_ZONE, "windows": [window]}
    parsed = parse_schedule(schedule)
    assert isinstance(parsed, Schedule) and is_open(parsed, now), schedule  # the demo's premise: open now
    for vm in VMS:
        spec = {"vm": {"resourceGroup": RESOURCE_GROUP, "name": vm.vm}, "desiredState": vm.desired,
                "deletionPolicy": "Deallocate", **vm.spec}
        if vm.gpuvm == "a10-office":
            spec["schedule"] = schedule
        cluster.create(vm.gpuvm, spec, labels={"app.kubernetes.io/part-of": "gpuvm-demo"})
    return window


def run_demo(*, timeout: float, out: TextIO, live: bool) -> int:
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="gpuvm-demo-"))
    log_file = workdir / "operator.log"
    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    # The levels it changes go back when it ends: run in a test process, the demo left the Azure
    # SDK's request logging off for every test after it (test_secrets checks what that logs).
    levels = {name: logging.getLogger(name).level for name in ("", "azure", "urllib3", "aiohttp.access")}
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    for noisy in ("azure", "urllib3", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    screen = Screen(out, live=live)
    converged = False
    world: DemoWorld | None = None
    try:
        with _sandbox(workdir) as sandbox:
            cluster, azure = sandbox.cluster, sandbox.azure
            assert cluster is not None and azure is not None
            print(f"gpuvm-operator demo: Kubernetes emulator {cluster.url}, Azure simulator {azure.sim.endpoint}", file=out)
            print(f"  Azure transitions run {SPEEDUP:.0f}x faster than Azure's (a {AZURE_START_SECONDS:.0f} s start takes "
                  f"{AZURE_START_SECONDS / SPEEDUP:.0f} s), and so do the demo's idle timeouts, leases and warnings; "
                  f"operator log: {log_file}", file=out)
            for vm in VMS:
                print(f"  {vm.gpuvm:<14} {vm.vm:<14} {vm.size:<25} {vm.story}", file=out)
            metrics_port = free_port()
            flags = [*sandbox.operator_flags(subscription=SUBSCRIPTION, timing=TIMING_FLAGS), "--metrics-port", str(metrics_port)]
            flags[flags.index("--simulator-token-file") + 1] = str(sandbox.token_file(ROLE_TOKEN))
            sandbox.start_operator(flags)
            world = DemoWorld(sandbox, workdir=workdir, say=screen.note)
            window = _create_gpuvms(cluster, now=dt.datetime.now(dt.timezone.utc))
            screen.note(f"schedule: a10-office is wanted {window['days']} {window['start']}-{window['end']} {OFFICE_ZONE}: "
                        f"a window that opened at {window['start']}, this minute (windows are wall-clock minutes; "
                        "the demo does not wait for the next one)")
            stories = [PinnedStory(world), SharedStory(world), SpotStory(world), ScheduleStory(world)]
            seen_events: set[str] = set()
            phases: dict[str, str] = {}
            deadline = started + timeout
            while time.monotonic() < deadline:
                objects = cluster.objects()
                claims = world.claims()
                moment = Moment(objects, claims, time.monotonic())
                for story in stories:
                    story.advance(moment)
                _note_lines(world, screen)
                _note_warnings(cluster, screen, seen_events)
                _note_claims(claims, screen, phases)
                elapsed = time.monotonic() - started
                table = render_table(table_rows(list(objects.values())))
                if claims:
                    table += "\n\n" + render_table(claim_rows(claims), CLAIM_COLUMNS)
                screen.show(table, f"gpuvm-operator demo  {elapsed:5.1f} s  ({time.strftime('%H:%M:%S', time.gmtime())}Z)")
                if (all(s.done for s in stories) and not azure.busy()
                        and all(settled(o) for o in objects.values())
                        and all(j.exit_code is not None for j in world.jobs.values())):
                    converged = True
                    break
                time.sleep(0.25)  # the screen's refresh rate, not a wait for an effect
            _note_lines(world, screen)
            _summary(out, cluster=cluster, azure=azure, world=world, metrics_port=metrics_port,
                     elapsed=time.monotonic() - started, converged=converged, timeout=timeout)
            for problem in world.problems:
                print(f"PROBLEM: {problem}", file=out)
            checked = _check(out, flags, live=live)
        return 0 if converged and checked and not world.problems else 1
    finally:
        if world is not None:
            world.close()
        root.removeHandler(handler)
        handler.close()
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _note_lines(world: DemoWorld, screen: Screen) -> None:
    """The jobs' output: the claim wrapper's progress lines and the work's own."""
    while True:
        try:
            screen.note(world.lines.get_nowait())
        except queue.Empty:
            return


def _note_warnings(cluster: Cluster, screen: Screen, seen: set[str]) -> None:
    """Warning Events about GpuVms as they come: a failure that lasts one back-off still shows,
    and stays shown, whichever moments the table happened to be drawn at."""
    for event in cluster.core.list_namespaced_event(NAMESPACE).items:
        uid = event.metadata.uid
        if event.type == "Warning" and event.involved_object.kind == "GpuVm" and uid not in seen:
            seen.add(uid)
            screen.note(f"event: {event.involved_object.name} {event.reason}: {event.message}")


def _note_claims(claims: Sequence[Mapping[str, Any]], screen: Screen, phases: dict[str, str]) -> None:
    """Each change of a claim's phase, with the reason its Ready condition gives."""
    for obj in claims:
        name, phase = obj["metadata"]["name"], (obj.get("status") or {}).get("phase")
        if phase and phases.get(name) != phase:
            phases[name] = phase
            _, reason, message = ready_of(obj) or ("", "", "")
            screen.note(f"claim {name} ({obj['spec']['gpuVm']}): {phase}, {reason}: {message}")


def _summary(out: TextIO, *, cluster: Cluster, azure: Azure, world: DemoWorld, metrics_port: int, elapsed: float,
             converged: bool, timeout: float) -> None:
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
        extra = ""
        if status.get("demand"):
            extra += f"  decided by {status['demand'].get('decidedBy')}"
        if status.get("evictions"):
            extra += f"  evictions {status['evictions'].get('count')}"
        print(f"  {name:<14} {status.get('powerState', '-'):<12} last: {op.get('action', '-')} {op.get('result', '')} "
              f"({op.get('trigger', '-')}){extra}", file=out)
    print("Claims left (kubectl get gvmc):", file=out)
    for claim in claim_rows(cluster.custom.list_namespaced_custom_object("gpuvm.dev", "v1alpha1", NAMESPACE, "gpuvmclaims")["items"]):
        name, gpuvm, phase, _, reason = claim
        print(f"  claim {name} of {gpuvm}: {phase} ({reason})", file=out)
    # By name: the stories start their jobs in whichever order the operator settles their GpuVms.
    print("Jobs (gpuvm-operator claim): " + ", ".join(f"{n}: {j.ended()}" for n, j in sorted(world.jobs.items())), file=out)
    try:
        samples = scrape(metrics_port)
    except OSError as e:
        print(f"Metrics: not read ({e})", file=out)
        return
    unclaimed = {k.split('name="')[1].split('"')[0]: v for k, v in samples.items()
                 if k.startswith("gpuvm_unclaimed_billed_seconds_total{")}
    print(f"Metrics: gpuvm_idle_deallocations_total {samples.get('gpuvm_idle_deallocations_total', 0):.0f}; "
          "gpuvm_unclaimed_billed_seconds_total (billed while no claim needed it) "
          + ", ".join(f"{n} {v:.1f} s" for n, v in sorted(unclaimed.items())), file=out)


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
    parser.add_argument("--timeout", type=float, default=120.0, help="give up (exit 1) after this many seconds")
    parser.add_argument("--plain", action="store_true", help="print tables as they change instead of redrawing")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    live = sys.stdout.isatty() and not args.plain and os.environ.get("TERM") != "dumb"
    return run_demo(timeout=args.timeout, out=sys.stdout, live=live)
