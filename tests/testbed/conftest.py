"""Shared fixtures of the testbed: servers in their own threads, clients pointed at them.

Kubernetes emulator fixtures: ``kube_emulator`` (a started ``KubeEmulator`` with the test CRDs
and the project's CRDs, in a ``ServerThread``), ``kube_thread`` (that thread, to read the
emulator's state on its loop), ``kube_api`` (an official ``kubernetes`` ApiClient for it),
``kube_raw`` (raw HTTP for what the client cannot express), ``co``/``core`` (CustomObjectsApi, CoreV1Api
on it), and ``wait_for``.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import urllib3
from kubernetes import client

from testbed.kubeemu import KubeEmulator
from testbed.sandbox import crd_files, wait_for
from testbed.serving import ServerThread

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).parents[2]
KUBEEMU_CRDS = [DATA / "kubeemu-widgets.yaml"]
PROJECT_CRDS = crd_files(ROOT / "deploy" / "crds") + crd_files(ROOT / "deploy" / "crds" / "kopf-peering")
# The cause kube-apiserver adds (field "<nil>") when a blocking schema error (enum, required, type,
# too long, too many) kept a CRD's CEL rules from running; tests/realkube checks the text on a real one.
NOT_CHECKED = ("Invalid value: null: some validation rules were not checked because the object was invalid; "
               "correct the existing errors to complete validation")


@pytest.fixture
def kube_thread() -> Iterator[ServerThread]:
    emu = KubeEmulator(KUBEEMU_CRDS + PROJECT_CRDS, watch_history=50, bookmark_interval=0.2)
    thread = ServerThread(emu, name="kube-emulator").start()
    try:
        yield thread
    finally:
        thread.stop()


@pytest.fixture
def kube_emulator(kube_thread: ServerThread) -> KubeEmulator:
    return kube_thread.server  # type: ignore[return-value]


@pytest.fixture
def kube_api(kube_emulator: KubeEmulator) -> Iterator[client.ApiClient]:
    config = client.Configuration()
    config.host = kube_emulator.url
    api = client.ApiClient(config)
    try:
        yield api
    finally:
        api.close()


@pytest.fixture
def co(kube_api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(kube_api)


@pytest.fixture
def core(kube_api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(kube_api)


@dataclass(frozen=True)
class RawResponse:
    status: int
    body: Any
    headers: Any
    text: str


class RawHttp:
    """Plain HTTP to the emulator, for content types and query strings the client hides."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.pool = urllib3.PoolManager()

    def __call__(self, method: str, path: str, body: Any = None, *, content_type: str = "application/json",
                 raw: bytes | None = None, timeout: float = 10.0) -> RawResponse:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        r = self.pool.request(method, self.url + path, body=data, headers={"Content-Type": content_type},
                              timeout=timeout, preload_content=True)
        text = r.data.decode()
        try:
            parsed = json.loads(text) if text.strip() else None
        except ValueError:
            parsed = None
        return RawResponse(r.status, parsed, r.headers, text)

    def stream(self, path: str, *, timeout: float = 10.0) -> Iterator[dict[str, Any]]:
        """Yield watch events from a streamed GET until the server ends the stream."""
        r = self.pool.request("GET", self.url + path, preload_content=False, timeout=timeout)
        buf = b""
        try:
            for chunk in r.stream(1024, decode_content=True):
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
        finally:
            r.release_conn()


@pytest.fixture
def kube_raw(kube_emulator: KubeEmulator) -> RawHttp:
    return RawHttp(kube_emulator.url)


@pytest.fixture(name="wait_for")
def wait_for_fixture() -> Callable[..., Any]:
    return wait_for


@contextlib.contextmanager
def emulator_process(*args: str) -> Iterator[str]:
    """``gpuvm-operator kube-emulator ARGS`` as a process: yields its URL, then SIGTERM must end it with 0."""
    proc = subprocess.Popen([sys.executable, "-m", "controller", "kube-emulator", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()  # type: ignore[union-attr]
        assert url.startswith("http://127.0.0.1:"), proc.stderr.read() if proc.poll() is not None else url  # type: ignore[union-attr]
        assert "ready" in proc.stdout.readline()  # type: ignore[union-attr]
        yield url
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
