"""The benchmark's processes: the emulator, the simulators and the operators, each on its own.

Separate processes so that no two share a GIL and each one's CPU time and memory can be read
from ``/proc`` alone. Every process is started in a session of its own (a Ctrl-C in the
terminal reaches only the benchmark, which then stops them in order) and with a parent-death
signal, so that even a benchmark killed with SIGKILL leaves nothing running behind.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PR_SET_PDEATHSIG = 1
_OPERATOR = [sys.executable, "-m", "controller"]  # what the gpuvm-operator script runs


try:  # looked up once here: the child, between fork and exec, only calls it
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux: the Processes context in the benchmark still stops them
    _PRCTL = None


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the benchmark process goes away, however it ends."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def shown_command(argv: Sequence[str], env: dict[str, str] | None = None) -> str:
    """A command line as one would type it: ``python`` for this interpreter, ``gpuvm-operator``
    for ``python -m controller``, paths relative to the repository, secrets left out."""
    root = str(Path(__file__).resolve().parents[1]) + "/"
    argv = ["python" if a == sys.executable else a.replace(root, "") for a in argv]
    if argv[:3] == ["python", "-m", "controller"]:
        argv = ["gpuvm-operator", *argv[3:]]
    shown = {k: ("<token>" if "TOKEN" in k else v.replace(root, "")) for k, v in (env or {}).items()}
    return " ".join([*(f"{k}={shlex.quote(v)}" for k, v in shown.items()), shlex.join(argv)])


@dataclass(frozen=True)
class Usage:
    """CPU seconds (user + system, all threads) and resident memory of one process at one moment."""

    at: float  # time.monotonic()
    cpu: float
    rss_mib: float


def usage(pid: int) -> Usage:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime (fields 14, 15 of stat)
    rss = 0.0
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
                break
    return Usage(time.monotonic(), cpu, rss)


def cpu_percent(before: Usage, after: Usage) -> float:
    """Share of one core used between two readings, in percent."""
    return 100 * (after.cpu - before.cpu) / max(after.at - before.at, 1e-9)


@dataclass
class Proc:
    name: str
    argv: list[str]
    log_path: Path
    popen: subprocess.Popen[bytes]
    env: dict[str, str] = field(default_factory=dict)  # set on top of the benchmark's environment
    peak_rss_mib: float = 0.0

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def command(self) -> str:
        return shown_command(self.argv, self.env)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def usage(self) -> Usage:
        u = usage(self.pid)
        self.peak_rss_mib = max(self.peak_rss_mib, u.rss_mib)
        return u

    def log_stats(self, marker: str = "azure.core.pipeline") -> dict[str, int]:
        """The process's log so far: lines, bytes, log records (lines starting with '['), the lines of
        records from the logger ``marker`` (with their continuation lines), operations reported failed."""
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return {}
        lines = data.split(b"\n")
        records = marker_records = marker_lines = 0
        in_marker = False
        for line in lines:
            if line.startswith(b"["):
                records += 1
                in_marker = marker.encode() in line[:60]
                marker_records += in_marker
            marker_lines += in_marker
        return {
            "lines": data.count(b"\n"), "bytes": len(data), "records": records,
            "marker": marker, "marker_records": marker_records, "marker_lines": marker_lines,
            "operations_reported_failed": data.count(b" failed: "),
            "operations_reported_failed_throttled": data.count(b" failed: SubscriptionRequestsThrottled")
            + data.count(b" failed: TooManyRequests"),
        }

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def check(self) -> None:
        if not self.alive():
            raise RuntimeError(f"{self.name} exited with {self.popen.returncode}; last lines of {self.log_path}:\n{self.log_tail()}")

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (a pod being stopped), then SIGKILL after ``timeout`` seconds."""
        if self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)


class Processes:
    """Starts processes and stops every one of them, newest first, whatever happens."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[Proc] = []
        workdir.mkdir(parents=True, exist_ok=True)

    def spawn(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> Proc:
        log_path = self.workdir / f"{name}.log"
        with open(log_path, "wb") as log:
            popen = subprocess.Popen(
                list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, preexec_fn=_die_with_parent,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            )
        proc = Proc(name, list(argv), log_path, popen, env=dict(env or {}))
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc) -> None:
        proc.stop()
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        errors = []
        for proc in reversed(list(self.procs)):
            try:
                proc.stop()
            except Exception as e:  # noqa: BLE001 - keep stopping the rest
                errors.append(e)
        self.procs.clear()
        if errors:
            raise errors[0]

    def __enter__(self) -> "Processes":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def wait_until(predicate: Callable[[], object], timeout: float, what: str, *, interval: float = 0.05,
               alive: Sequence[Proc] = ()) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        for proc in alive:
            proc.check()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def _line_after(path: Path, prefix: str) -> str | None:
    try:
        for line in path.read_text(errors="replace").splitlines():
            if line.strip().startswith(prefix):
                return line.strip()[len(prefix):].strip()
    except OSError:
        return None
    return None


@dataclass
class Emulator:
    proc: Proc
    url: str
    ssl_context: None = None  # plain http on loopback

    @property
    def operator_flags(self) -> list[str]:
        return ["--kube-server", self.url]

    @property
    def procs(self) -> list[Proc]:
        return [self.proc]


@dataclass
class RealKube:
    """The real control plane (testbed/controlplane.py): its processes are not ``Proc``s of the
    benchmark's (they are measured by pid), the admin client authenticates with certificates."""

    plane: Any  # testbed.controlplane.ControlPlane
    ssl_context: ssl.SSLContext

    @property
    def url(self) -> str:
        return str(self.plane.url)

    @property
    def operator_flags(self) -> list[str]:
        return ["--kubeconfig", str(self.plane.kubeconfig)]

    @property
    def procs(self) -> list[Proc]:
        return []

    def stop(self, procs: "Processes") -> None:
        self.plane.stop()


def start_real_kube(procs: Processes, *, crds: Sequence[Path], name: str = "kube-real", timeout: float = 180) -> RealKube:
    """kube-apiserver + etcd + kube-controller-manager from ``$GPUVM_KUBE_ASSETS`` with the CRDs
    applied and Established (raises testbed.controlplane.AssetsMissing without the assets)."""
    from testbed.controlplane import ControlPlane

    plane = ControlPlane(procs.workdir / name).start(timeout=timeout)
    try:
        kubectl = Path(sys.executable).parent / "kubectl"
        args = [str(kubectl), "--kubeconfig", str(plane.kubeconfig)]
        subprocess.run([*args, "apply", *(a for c in crds for a in ("-f", str(c)))], check=True, capture_output=True,
                       timeout=120)
        subprocess.run([*args, "wait", "--for=condition=Established", "--timeout=120s", *(
            f"crd/{Path(c).name.removesuffix('.yaml')}" for c in crds)], check=True, capture_output=True, timeout=150)
        # Established is not served yet: the new resource's storage answers 429 "storage is
        # (re)initializing" for a moment.
        for c in crds:
            plural = Path(c).name.split(".", 1)[0]
            wait_until(lambda: subprocess.run([*args, "get", plural, "-A"], capture_output=True, timeout=30).returncode == 0,
                       60, f"{plural} served")
    except BaseException:
        plane.stop()
        raise
    context = ssl.create_default_context(cafile=str(plane.certs / "ca.crt"))
    context.load_cert_chain(str(plane.certs / "admin.crt"), str(plane.certs / "admin.key"))
    return RealKube(plane, context)


def start_emulator(procs: Processes, *, crds: Sequence[Path], name: str = "kube-emulator", timeout: float = 30) -> Emulator:
    argv = [*_OPERATOR, "kube-emulator", "--host", "127.0.0.1", "--port", "0", "--crds", *map(str, crds)]
    proc = procs.spawn(name, argv)
    line = wait_until(lambda: _line_after(proc.log_path, "kube-emulator ready:"), timeout, f"{name} to listen", alive=[proc])
    return Emulator(proc, str(line).split()[0])


@dataclass
class Simulator:
    proc: Proc
    endpoint: str
    ca_file: Path
    token: str
    token_file: Path


def start_simulator(
    procs: Processes,
    *,
    vms_file: Path,
    name: str = "azure-sim",
    flags: Sequence[str] = (),
    limits: Sequence[str] = (),
    log_size: int | None = None,
    timeout: float = 30,
) -> Simulator:
    """The shipped ``gpuvm-operator azure-sim``."""
    token = secrets.token_urlsafe(24)
    ca_file = procs.workdir / f"{name}-ca.pem"
    token_file = procs.workdir / f"{name}.token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    common = ["--vms", str(vms_file), "--host", "127.0.0.1", "--port", "0", "--ca-file", str(ca_file), *flags]
    argv = [*_OPERATOR, "azure-sim", *common,
            *(a for limit in limits for a in ("--throttle-limit", limit)),
            *(["--log-size", str(log_size)] if log_size is not None else [])]
    proc = procs.spawn(name, argv, env={"GPUVM_SIMULATOR_TOKEN": token})
    wait_until(lambda: _line_after(proc.log_path, "Serving until") is not None, timeout, f"{name} to listen", alive=[proc])
    endpoint = _line_after(proc.log_path, "endpoint:")
    return Simulator(proc, str(endpoint), ca_file, token, token_file)


@dataclass
class Operator:
    proc: Proc
    metrics_url: str | None
    spawned: float = 0.0  # time.monotonic() just before the process was started
    live: float = 0.0  # time.monotonic() when its liveness endpoint first answered
    health_url: str | None = None  # kopf's liveness endpoint: its probes (``operator``: active, gpuvms)

    def metrics(self) -> str:
        if not self.metrics_url:
            return ""
        with urllib.request.urlopen(self.metrics_url, timeout=30) as r:  # noqa: S310 - loopback
            return r.read().decode()

    def counter(self, name: str, label: str) -> dict[str, float]:
        """One labelled counter of the operator's /metrics, by the value of ``label``
        (``counter("gpuvm_status_writes_total", "cause")`` -> {"change": 12.0, ...})."""
        out: dict[str, float] = {}
        prefix = name + "{"
        for line in self.metrics().splitlines():
            if line.startswith(prefix) and f'{label}="' in line:
                value = line.split(f'{label}="', 1)[1].split('"', 1)[0]
                out[value] = out.get(value, 0.0) + float(line.rsplit(" ", 1)[1])
        return out


def start_operator(
    procs: Processes,
    *,
    emulator: Emulator | RealKube,
    simulator: Simulator,
    subscription: str,
    flags: Sequence[str] = (),
    name: str = "operator",
    metrics: bool = True,
    timeout: float = 60,
) -> Operator:
    """``gpuvm-operator run`` against the emulator and a simulator; ready when kopf's liveness answers."""
    health = free_port()
    metrics_port = free_port() if metrics else None
    argv = [
        *_OPERATOR, "run",
        *emulator.operator_flags,
        "--arm-endpoint", simulator.endpoint,
        "--ca-bundle", str(simulator.ca_file),
        "--credential", "simulator-token",
        "--simulator-token-file", str(simulator.token_file),
        "--subscription-id", subscription,
        "--liveness", f"http://127.0.0.1:{health}/healthz",
        *(["--metrics-port", str(metrics_port)] if metrics_port else []),
        *flags,
    ]
    spawned = time.monotonic()
    proc = procs.spawn(name, argv)

    def live() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{health}/healthz", timeout=2) as r:  # noqa: S310
                return r.status == 200
        except OSError:
            return False

    wait_until(live, timeout, f"{name} liveness", interval=0.1, alive=[proc])
    return Operator(proc, f"http://127.0.0.1:{metrics_port}/metrics" if metrics_port else None, spawned, time.monotonic(),
                    f"http://127.0.0.1:{health}/healthz")
