"""The VM YAML format and the ``azure-sim`` subcommand (bad input, and a real run as a subprocess)."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from azure.mgmt.compute import ComputeManagementClient

import controller.cli
from testbed.azuresim import (
    PowerState,
    StaticTokenCredential,
    VmFileError,
    load_vms_yaml,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "examples" / "azure-sim-vms.yaml"
# Only this subcommand is registered, so these tests do not depend on the other subcommands' modules.


def test_example_file_loads() -> None:
    vms = load_vms_yaml(EXAMPLE)
    by_name = {v.name: v for v in vms}
    assert len(vms) == 9
    assert by_name["train-a100-2"].power_state is PowerState.RUNNING
    assert by_name["train-a100-1"].tags == {"env": "demo", "team": "vision"}
    assert by_name["infer-a10-1"].hibernation_enabled and by_name["infer-a10-1"].timings == {"start": 45.0}
    assert by_name["notebook-t4-1"].resource_group == "gpu-notebooks"
    spot = by_name["spot-a100-1"]
    assert (spot.priority, spot.eviction_policy, spot.max_price) == ("Spot", "Deallocate", -1.0)
    assert [v.name for v in vms if v.resource_group == "gpu-batch"] == ["batch-01", "batch-02", "batch-03", "batch-04"]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "vms.yaml"
    path.write_text(textwrap.dedent(text))
    return path


GOOD_DEFAULTS = "defaults: {subscription_id: s1, resource_group: rg}\n"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("vms: [\n  - name: a\n", "not valid YAML at line"),
        ("- a\n- b\n", "must be a mapping with a 'vms' list"),
        ("vms: []\n", "vms: must be a non-empty list"),
        ("vmz: []\n", "unknown top-level key(s) vmz"),
        (GOOD_DEFAULTS + "vms: [{name: a, power_sate: running}]\n", "vms[0]: unknown key(s) power_sate"),
        (GOOD_DEFAULTS + "vms: [{name: a}, {name: b, power_state: on}]\n", "vms[1].power_state: True is not one of"),
        (GOOD_DEFAULTS + "vms: [{name: a, power_state: starting}]\n", "'starting' is not one of running, stopped, deallocated"),
        ("vms: [{name: a, resource_group: rg}]\n", "vms[0].subscription_id: required"),
        (GOOD_DEFAULTS + "vms: [{name: a}, {name: A}]\n", "defined twice"),
        (GOOD_DEFAULTS + "vms: [{name: a, tags: {x: 1}}]\n", "vms[0].tags: must be a mapping of strings to strings"),
        (GOOD_DEFAULTS + "vms: [{name: a, tags: {'a/b': x}}]\n", "vms[0].tags: InvalidTagNameCharacters"),
        (GOOD_DEFAULTS + "vms: [{name: a, timings: {boot: 3}}]\n", "vms[0].timings.boot: unknown"),
        (GOOD_DEFAULTS + "vms: [{name: a, timings: {start: -1}}]\n", "vms[0].timings.start: must be a number"),
        (GOOD_DEFAULTS + "vms: [{name: a, vm_id: nope}]\n", "vms[0].vm_id: 'nope' is not a UUID"),
        (GOOD_DEFAULTS + "vms: [{name: a, count: 3}]\n", "must contain {i}"),
        (GOOD_DEFAULTS + "vms: [{name: 'a{i}', count: 0}]\n", "vms[0].count: must be a whole number >= 1"),
        (GOOD_DEFAULTS + "vms: [{name: a, hibernation_enabled: maybe}]\n", "hibernation_enabled: must be true or false"),
        (GOOD_DEFAULTS + "vms: [{name: a, priority: Low}]\n", "vms[0]: SimVm.priority must be 'Regular' or 'Spot'"),
        (GOOD_DEFAULTS + "vms: [{name: a, priority: Spot, hibernation_enabled: true}]\n",
         "vms[0]: OperationNotAllowed: Hibernation capability isn't supported for Spot VMs."),
        (GOOD_DEFAULTS + "vms: [{name: a, eviction_policy: Deallocate}]\n", "EvictionPolicyCanBeSetOnlyOnAzureSpotVirtualMachines"),
        (GOOD_DEFAULTS + "vms: [{name: a, priority: Spot, eviction_policy: Delete}]\n", "only 'Deallocate' is simulated"),
        (GOOD_DEFAULTS + "vms: [{name: a, priority: Spot, max_price: 0}]\n", "MaxPriceValueInvalid"),
        (GOOD_DEFAULTS + "vms: [{name: a, priority: Spot, max_price: cheap}]\n", "vms[0].max_price: must be a number"),
        (GOOD_DEFAULTS + "vms: [{name: a, max_price: 0.5}]\n", "MaxPriceIsSupportedOnlyForAzureSpotVirtualMachines"),
    ],
)
def test_bad_vm_files_say_where_and_why(tmp_path: Path, text: str, fragment: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(VmFileError) as e:
        load_vms_yaml(path)
    assert str(e.value).startswith(f"{path}: ")
    assert fragment in str(e.value)
    assert "\n" not in str(e.value)


def test_count_expands_and_defaults_merge(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD_DEFAULTS + "vms: [{name: 'gpu-{i:04d}', count: 1000, power_state: running}]\n")
    vms = load_vms_yaml(path)
    assert len(vms) == 1000 and vms[0].name == "gpu-0001" and vms[-1].name == "gpu-1000"
    assert {v.resource_group for v in vms} == {"rg"}


def _main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = controller.cli.main(["azure-sim", *argv])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--vms", "/nonexistent/vms.yaml"], "/nonexistent/vms.yaml: no such file"),
        (["--vms", str(EXAMPLE), "--fault", "op=start oops"], "--fault 'op=start oops': 'oops' is not key=value"),
        (["--vms", str(EXAMPLE), "--fault", "kind=fail op=get error=X"], "power operations only"),
        (["--vms", str(EXAMPLE), "--retry-after", "-1"], "--retry-after -1: must be >= 0"),
        (["--vms", str(EXAMPLE), "--start-seconds", "-5"], "timing 'start' must be a number of seconds >= 0"),
        (["--vms", str(EXAMPLE), "--port", "70000"], "--port 70000: must be between 0 and 65535"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, argv: list[str], fragment: str) -> None:
    code, err = _main(capsys, *argv)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("gpuvm-operator azure-sim: error: ")
    assert fragment in err


def test_invalid_yaml_is_one_line(capsys, tmp_path: Path) -> None:
    code, err = _main(capsys, "--vms", str(_write(tmp_path, "vms: [\n")))
    assert code == 2 and err.count("\n") == 1 and "not valid YAML" in err


def test_port_in_use(capsys) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, err = _main(capsys, "--vms", str(EXAMPLE), "--port", str(port))
    assert code == 2 and err.count("\n") == 1
    assert f"cannot listen on 127.0.0.1:{port}" in err


def _read_until(proc: subprocess.Popen, marker: str, timeout: float, stderr: Path) -> str:
    """Read the child's stdout (unbuffered, so select() sees every byte) until ``marker`` shows up."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    out = b""
    deadline = time.monotonic() + timeout
    while marker.encode() not in out:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or proc.poll() is not None:
            pytest.fail(f"no {marker!r} from azure-sim (exit code {proc.poll()}); output so far:\n{out.decode()}\nstderr:\n{stderr.read_text()}")
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            out += os.read(fd, 65536)
    return out.decode()


def test_cli_serves_and_prints_how_to_connect(tmp_path: Path) -> None:
    ca_file = tmp_path / "sim-ca.pem"
    env = {**os.environ, "GPUVM_SIMULATOR_TOKEN": "demo-token-123", "PYTHONPATH": str(ROOT)}
    stderr_path = tmp_path / "stderr.txt"
    stderr_file = stderr_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "controller", "azure-sim", "--vms", str(EXAMPLE), "--port", "0", "--ca-file", str(ca_file),
         "--start-seconds", "0.1", "--retry-after", "0.05", "--fault", "kind=no-power-state vm=batch-01"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=stderr_file, bufsize=0,
    )
    try:
        out = _read_until(proc, "Serving until SIGINT/SIGTERM.", timeout=30, stderr=stderr_path)
        endpoint = next(line.split()[-1] for line in out.splitlines() if line.strip().startswith("endpoint:"))
        assert endpoint.startswith("https://127.0.0.1:")
        assert f"CA file:  {ca_file}" in out and ca_file.exists()
        assert "token:    demo-token-123" in out
        assert "export GPUVM_SIMULATOR_TOKEN=demo-token-123" in out
        assert f"gpuvm-operator run --arm-endpoint {endpoint} --ca-bundle {ca_file} --credential simulator-token" in out

        client = ComputeManagementClient(
            StaticTokenCredential("demo-token-123"), "00000000-0000-0000-0000-00000000a100", base_url=endpoint,
            connection_verify=str(ca_file), credential_scopes=["https://management.azure.com/.default"], polling_interval=0.05,
        )
        client.virtual_machines.begin_start("gpu-demo", "train-a100-1").result()
        assert [s.code for s in client.virtual_machines.instance_view("gpu-demo", "train-a100-1").statuses][1] == "PowerState/running"
        assert len(client.virtual_machines.instance_view("gpu-batch", "batch-01").statuses) == 1  # the --fault applies
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        finally:
            stderr_file.close()
    assert code == 0
    assert b"azure-sim: stopped" in proc.stdout.read()
