"""Start-up mistakes of `gpuvm-operator run` end in one line on stderr and an exit code of their own.

Each test runs the installed command as a user would, with one thing wrong, and asserts the exit
code of README.md's table, exactly one line on stderr, and no traceback anywhere.
"""

from __future__ import annotations

import copy
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from controller.check import EXIT_API_UNREACHABLE, EXIT_CRD, EXIT_KUBECONFIG, EXIT_PORT, EXIT_RBAC, EXIT_USAGE
from testbed.kubeemu import KubeEmulator
from testbed.sandbox import Sandbox, wait_for, write_kubeconfig
from testbed.serving import ServerThread
from tests.integration.cli import (
    COMMAND,
    Ran,
    base_env,
    emulator_identity,
    free_port,
    gpuvm_operator,
    silent_server,
    with_flag,
)
from tests.integration.conftest import SUB

ROOT = Path(__file__).parents[2]
CRD = yaml.safe_load((ROOT / "deploy" / "crds" / "gpuvms.gpuvm.dev.yaml").read_text())


@pytest.fixture
def run_flags(world: Sandbox) -> list[str]:
    return world.operator_flags(subscription=SUB)


def one_line(ran: Ran, code: int) -> str:
    assert "Traceback" not in ran.stderr + ran.stdout, ran.stderr
    lines = ran.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{ran.stderr}"
    assert ran.returncode == code, f"exit {ran.returncode}, expected {code}: {ran.stderr}"
    # argparse reports an unknown flag from the top-level parser: "gpuvm-operator: error: ..."
    assert lines[0].startswith(("gpuvm-operator run: error: ", "gpuvm-operator: error: "))
    return lines[0].split(": error: ", 1)[1]


def run(*flags: str, env: dict[str, str]) -> Ran:
    return gpuvm_operator("run", *flags, env=env, timeout=120)


def test_missing_kubeconfig(tmp_path: Path) -> None:
    line = one_line(run(env=base_env(tmp_path, KUBECONFIG="/nonexistent")), EXIT_KUBECONFIG)
    assert line == "kubeconfig /nonexistent does not exist (from --kubeconfig or KUBECONFIG)"


def test_no_configuration_at_all(tmp_path: Path) -> None:
    line = one_line(run(env=base_env(tmp_path)), EXIT_KUBECONFIG)
    assert line.startswith("no Kubernetes configuration: not in a cluster (")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("clusters: [\n", "is not valid YAML: "),
        (
            "apiVersion: v1\nkind: Config\nclusters: []\nusers: []\ncontexts: []\ncurrent-context: gone\n",
            "is not usable: ",
        ),
    ],
    ids=["not-yaml", "no-such-context"],
)
def test_invalid_kubeconfig(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(content)
    line = one_line(run(env=base_env(tmp_path, KUBECONFIG=str(path))), EXIT_KUBECONFIG)
    assert line.startswith(f"kubeconfig {path} {expected}")


def test_api_server_unreachable_after_a_bounded_wait(tmp_path: Path) -> None:
    port = free_port()
    started = time.monotonic()
    line = one_line(
        run("--kube-server", f"http://127.0.0.1:{port}", "--connect-timeout", "2", env=base_env(tmp_path)),
        EXIT_API_UNREACHABLE,
    )
    elapsed = time.monotonic() - started
    assert (
        line
        == f"cannot reach the API server at http://127.0.0.1:{port}: connection refused "
        "(gave up after 2 s, --connect-timeout)"
    )
    assert 1.5 < elapsed < 60, f"waited {elapsed:.1f} s"


def test_api_server_that_never_answers(tmp_path: Path) -> None:
    with silent_server() as url:
        line = one_line(
            run("--kube-server", url, "--connect-timeout", "2", env=base_env(tmp_path)), EXIT_API_UNREACHABLE
        )
    assert line == f"cannot reach the API server at {url}: no answer in time (gave up after 2 s, --connect-timeout)"


@pytest.fixture
def bare_emulator() -> Iterator[ServerThread]:
    thread = ServerThread(KubeEmulator([]), name="bare-emulator").start()
    yield thread
    thread.stop()


def test_crd_not_installed(bare_emulator: ServerThread, tmp_path: Path) -> None:
    line = one_line(run("--kube-server", bare_emulator.server.url, env=base_env(tmp_path)), EXIT_CRD)
    assert line.startswith("the CRDs gpuvmclaims.gpuvm.dev and gpuvms.gpuvm.dev are not installed: kubectl apply -f deploy/crds/")


def test_crd_of_another_version(tmp_path: Path) -> None:
    other = copy.deepcopy(CRD)
    other["spec"]["versions"][0]["name"] = "v1beta1"
    thread = ServerThread(KubeEmulator([other]), name="other-crd").start()
    try:
        line = one_line(run("--kube-server", thread.server.url, env=base_env(tmp_path)), EXIT_CRD)
    finally:
        thread.stop()
    assert line.startswith(
        "the API server serves gpuvm.dev v1beta1, not v1alpha1 gpuvms, which this operator uses; "
        "the CRD gpuvmclaims.gpuvm.dev is not installed: kubectl apply -f deploy/crds/"
    )


def test_rbac_forbids_listing_gpuvms(world: Sandbox, run_flags: list[str], tmp_path: Path) -> None:
    assert world.cluster is not None
    token = emulator_identity(world.cluster, user="nobody", rules=[])
    kubeconfig = write_kubeconfig(tmp_path / "nobody", world.cluster.url, token=token)
    line = one_line(
        run(*with_flag(run_flags, "--kube-server", None), env=base_env(tmp_path, KUBECONFIG=str(kubeconfig))), EXIT_RBAC
    )
    assert line.startswith("RBAC forbids listing GpuVms: 403 Forbidden: ")
    assert 'cannot list resource "gpuvms" in API group "gpuvm.dev" at the cluster scope' in line


def test_rbac_forbids_watching_gpuvms(world: Sandbox, run_flags: list[str], tmp_path: Path) -> None:
    assert world.cluster is not None
    token = emulator_identity(
        world.cluster,
        user="lister",
        rules=[{"apiGroups": ["gpuvm.dev"], "resources": ["gpuvms"], "verbs": ["list"]}],
    )
    kubeconfig = write_kubeconfig(tmp_path / "lister", world.cluster.url, token=token)
    line = one_line(
        run(*with_flag(run_flags, "--kube-server", None), env=base_env(tmp_path, KUBECONFIG=str(kubeconfig))), EXIT_RBAC
    )
    assert line == ("RBAC forbids the watches kopf needs: watch gpuvm.dev/gpuvms in all namespaces, "
                    "watch gpuvm.dev/gpuvmclaims in all namespaces")


@pytest.mark.parametrize(("flag", "host"), [("--metrics-port", "0.0.0.0"), ("--liveness", "127.0.0.1")])
def test_port_in_use(world: Sandbox, run_flags: list[str], tmp_path: Path, flag: str, host: str) -> None:
    with socket.socket() as taken:  # metrics listen on every address, liveness where its URL says
        taken.bind((host, 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        value = str(port) if flag == "--metrics-port" else f"http://{host}:{port}/healthz"
        line = one_line(run(*run_flags, flag, value, env=base_env(tmp_path)), EXIT_PORT)
    what = "metrics" if flag == "--metrics-port" else "liveness"
    assert (
        line
        == f"cannot serve {what} on {host}:{port}: Address already in use; stop what listens there or change {flag}"
    )


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["--cloud", "AzureMoon"], {}, "argument --cloud: invalid choice: 'AzureMoon' (choose from "),
        (["--credential", "password"], {}, "argument --credential: invalid choice: 'password' (choose from "),
        (["--log-format", "xml"], {}, "argument --log-format: invalid choice: 'xml'"),
        (
            [],
            {"GPUVM_RESYNC_SECONDS": "often"},
            "argument --resync-interval: 'often' is not a number (given by the flag or by GPUVM_RESYNC_SECONDS)",
        ),
        (
            ["--max-operations", "many"],
            {},
            "argument --max-operations: 'many' is not a whole number (given by the flag or by GPUVM_MAX_OPERATIONS)",
        ),
        (
            ["--liveness", "tcp://0.0.0.0:8080"],
            {},
            "--liveness must be an http:// URL such as http://0.0.0.0:8080/healthz",
        ),
        (["--no-such-flag"], {}, "unrecognized arguments: --no-such-flag"),
    ],
)
def test_unknown_flag_values(tmp_path: Path, args: list[str], env: dict[str, str], expected: str) -> None:
    line = one_line(run(*args, env=base_env(tmp_path, **env)), EXIT_USAGE)
    assert expected in line


def test_a_good_set_up_starts(world: Sandbox, run_flags: list[str], tmp_path: Path) -> None:
    """The control: the pre-flight lets a good set-up through to a live operator."""
    starts(run_flags, tmp_path)


def test_a_restart_among_many_gpuvms_starts(world: Sandbox, run_flags: list[str], tmp_path: Path) -> None:
    """A restart finds GpuVms in the cluster: the pre-flight's listing takes one page of them
    (it once followed the continue tokens with a keyword the generated client refuses, so no
    operator started beside two or more GpuVms), and check reads every page."""
    from controller.kube import connect, list_objects

    assert world.cluster is not None
    world.cluster.namespace("other")
    for name, ns in (("a", None), ("b", None), ("c", "other")):
        world.cluster.create(name, {"vm": {"resourceGroup": "rg", "name": f"vm-{name}"}, "desiredState": "Deallocated"}, ns=ns)
    starts(run_flags, tmp_path)
    conn = connect(server=world.cluster.url)
    assert len(list_objects(conn, "gpuvm.dev", "v1alpha1", "gpuvms", namespace=None, timeout=10, limit=1)) == 3
    assert len(list_objects(conn, "gpuvm.dev", "v1alpha1", "gpuvms", namespace="other", timeout=10, limit=1)) == 1


def starts(run_flags: list[str], tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [COMMAND, "run", *run_flags, "--liveness", f"http://127.0.0.1:{port}/healthz"],
        env=base_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def healthy() -> bool:
        assert process.poll() is None, f"the operator exited with {process.returncode}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
                return response.status == 200
        except OSError:
            return False

    try:
        wait_for(healthy, 60, interval=0.2, what="the operator's liveness endpoint")
    finally:
        process.terminate()
        _, err = process.communicate(timeout=60)
    assert "Traceback" not in err


def test_the_kubeconfig_flag_is_what_kopf_watches_through(world: Sandbox, run_flags: list[str], tmp_path: Path) -> None:
    """``--kubeconfig`` alone (no KUBECONFIG, no ~/.kube/config): kopf's own login would read only
    the default kubeconfig, so the operator must hand kopf the one it was given — shown by a
    GpuVm reconciled through it."""
    assert world.cluster is not None
    kubeconfig = write_kubeconfig(tmp_path / "given", world.cluster.url)
    world.cluster.create("via-flag", {"vm": {"resourceGroup": "rg-gpu", "name": "vm-1"}, "desiredState": "Deallocated"})
    flags = [*with_flag(run_flags, "--kube-server", None), "--kubeconfig", str(kubeconfig)]
    process = subprocess.Popen([COMMAND, "run", *flags], env=base_env(tmp_path), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: process.poll() is None and world.cluster.reason("via-flag") is not None, 60, interval=0.2,
                 what="the GpuVm reconciled by the operator started with --kubeconfig")
    finally:
        process.terminate()
        _, err = process.communicate(timeout=60)
    assert "Traceback" not in err
