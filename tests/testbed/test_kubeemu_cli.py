"""``gpuvm-operator kube-emulator``: serves until SIGTERM; bad input is one line and exit 2."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from controller.cli import main
from tests.testbed.conftest import DATA


def test_serves_until_sigterm() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "controller", "kube-emulator", "--crds", str(DATA)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()  # type: ignore[union-attr]
        assert url.startswith("http://127.0.0.1:")
        assert "ready" in proc.stdout.readline()  # type: ignore[union-attr]
        with urllib.request.urlopen(f"{url}/apis/test.kubeemu.dev/v1", timeout=30) as r:
            assert json.load(r)["groupVersion"] == "test.kubeemu.dev/v1"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["kube-emulator", "--crds", str(tmp_path / "missing.yaml")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"gpuvm-operator kube-emulator: error: CRD file not found: {tmp_path / 'missing.yaml'}")
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: [unclosed\n")
    assert main(["kube-emulator", "--crds", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"gpuvm-operator kube-emulator: error: {bad}: invalid YAML") and "\n" not in err
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["kube-emulator", "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"gpuvm-operator kube-emulator: error: cannot listen on 127.0.0.1:{port}") and "\n" not in err
