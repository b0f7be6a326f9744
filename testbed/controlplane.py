"""A real Kubernetes control plane on loopback: etcd, kube-apiserver and kube-controller-manager.

The emulator (testbed/kubeemu) is fast to start and lets tests inject faults, but it is our own
reading of the API's semantics, and it is slow where a real server is fast: a first adoption of
10,000 GpuVms took 410 MiB against it and 2.7 GiB against a real API server, because a real one
hands over the list and the watch events of the operator's own writes at once. So whatever
depends on the server's behaviour or speed is also tested here, on the real binaries.

The binaries come the way controller-runtime's envtest takes them (``KUBEBUILDER_ASSETS``): a
directory named by ``GPUVM_KUBE_ASSETS`` holding ``kube-apiserver`` and ``etcd`` (and optionally
``kube-controller-manager``), plain or ``.xz``-packed; packed ones are unpacked once into a cache
keyed by their checksum. No registry ships them, so a fresh clone has none: ``assets()`` then
says why, and the tests of that tier skip with that reason.

Flags are those of the assets' reference start script (RBAC on, ServiceAccount token signing,
front-proxy certificates so the controller manager stays quiet, ``--endpoint-reconciler-type=none``
because the advertise address is 127.0.0.1). Certificates are made in-process (trustme and
cryptography, both already dependencies of the test bed), so nothing but the binaries is needed.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import lzma
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import trustme
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

ENV = "GPUVM_KUBE_ASSETS"
REQUIRED = ("etcd", "kube-apiserver")
CONTROLLER_MANAGER = "kube-controller-manager"


class AssetsMissing(RuntimeError):
    """No usable binaries: the message says which and how to provide them."""


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path(tempfile.gettempdir()))
    return Path(base) / "gpuvm-kube-assets"


def _binary(directory: Path, name: str) -> Path | None:
    """``directory/name`` if executable, else ``directory/name.xz`` unpacked into the cache."""
    plain = directory / name
    if plain.is_file() and os.access(plain, os.X_OK):
        return plain
    packed = directory / f"{name}.xz"
    if not packed.is_file():
        return None
    digest = hashlib.sha256()
    with packed.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    target = _cache_dir() / digest.hexdigest()[:16] / name
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_suffix(f".part{os.getpid()}")
    with lzma.open(packed) as src, part.open("wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    part.chmod(0o755)
    part.replace(target)  # atomic: two test sessions unpacking at once both end with a whole file
    return target


def assets(directory: str | os.PathLike[str] | None = None) -> dict[str, Path]:
    """The binaries from ``directory`` (default: ``$GPUVM_KUBE_ASSETS``), by name.

    Raises AssetsMissing with the reason a test tier shows when it skips.
    """
    where = directory if directory is not None else os.environ.get(ENV)
    if not where:
        raise AssetsMissing(f"{ENV} is not set: it names a directory with kube-apiserver and etcd "
                            "(envtest's assets, or ../shared/tools/kube-assets/bin)")
    path = Path(where)
    if not path.is_dir():
        raise AssetsMissing(f"{ENV}={where} is not a directory")
    found: dict[str, Path] = {}
    for name in (*REQUIRED, CONTROLLER_MANAGER):
        binary = _binary(path, name)
        if binary is not None:
            found[name] = binary
    missing = [name for name in REQUIRED if name not in found]
    if missing:
        raise AssetsMissing(f"{ENV}={where} has no {' or '.join(missing)} (plain or .xz)")
    return found


def _takes_flag(binary: Path, flag: str) -> bool:
    """Whether ``binary --help`` mentions ``flag``."""
    result = subprocess.run([str(binary), "--help"], capture_output=True, timeout=30)
    return flag.encode() in result.stdout + result.stderr


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ControlPlane:
    """etcd + kube-apiserver (+ kube-controller-manager) in ``workdir``, on free loopback ports.

    ``start()`` blocks until the API server is ready (and, with the controller manager, until the
    ServiceAccount controller made the ``default`` ServiceAccount, i.e. the controllers run).
    ``kubeconfig`` is an admin (``system:masters``) kubeconfig with client certificates.
    """

    workdir: Path
    with_controller_manager: bool = True
    binaries: dict[str, Path] = field(default_factory=assets)
    extra_apiserver_flags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        self.certs = self.workdir / "certs"
        self.logs = self.workdir / "logs"
        self.kubeconfig = self.workdir / "kubeconfig"
        self.api_port = _free_port()
        self.etcd_port = _free_port()
        self.etcd_peer_port = _free_port()
        self.kcm_port = _free_port()
        self.url = f"https://127.0.0.1:{self.api_port}"
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._args: dict[str, tuple[str, ...]] = {}
        if self.with_controller_manager and CONTROLLER_MANAGER not in self.binaries:
            raise AssetsMissing(f"no {CONTROLLER_MANAGER} among the assets: ownerReference garbage collection "
                                "and ServiceAccounts need it")

    # -- certificates ---------------------------------------------------------------------------

    def _certificates(self) -> None:
        self.certs.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA(organization_name="gpuvm-testbed", organization_unit_name="kube-ca")
        proxy_ca = trustme.CA(organization_name="gpuvm-testbed", organization_unit_name="front-proxy-ca")
        server = ca.issue_cert("127.0.0.1", "localhost", "kubernetes", "kubernetes.default",
                               "kubernetes.default.svc", "kubernetes.default.svc.cluster.local",
                               common_name="kube-apiserver")
        admin = ca.issue_cert("admin", common_name="admin", organization_name="system:masters")
        proxy_client = proxy_ca.issue_cert("front-proxy-client", common_name="front-proxy-client")
        ca.cert_pem.write_to_path(str(self.certs / "ca.crt"))
        (self.certs / "ca.key").write_bytes(ca.private_key_pem.bytes())
        proxy_ca.cert_pem.write_to_path(str(self.certs / "front-proxy-ca.crt"))
        for name, cert in (("apiserver", server), ("admin", admin), ("front-proxy-client", proxy_client)):
            cert.cert_chain_pems[0].write_to_path(str(self.certs / f"{name}.crt"))
            cert.private_key_pem.write_to_path(str(self.certs / f"{name}.key"))
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        (self.certs / "sa.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()))
        (self.certs / "sa.pub").write_bytes(key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        for path in self.certs.glob("*.key"):
            path.chmod(0o600)

    def _write_kubeconfig(self) -> None:
        def b64(name: str) -> str:
            return base64.b64encode((self.certs / name).read_bytes()).decode()

        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "admin@local",
            "clusters": [{"name": "local", "cluster": {"server": self.url, "certificate-authority-data": b64("ca.crt")}}],
            "users": [{"name": "admin", "user": {"client-certificate-data": b64("admin.crt"),
                                                 "client-key-data": b64("admin.key")}}],
            "contexts": [{"name": "admin@local", "context": {"cluster": "local", "user": "admin"}}],
        }
        self.kubeconfig.write_text(yaml.safe_dump(config))
        self.kubeconfig.chmod(0o600)

    def token_kubeconfig(self, path: Path, token: str, *, namespace: str = "default") -> Path:
        """A kubeconfig that authenticates with a bearer ``token`` (a ServiceAccount's), as a pod's
        in-cluster configuration does."""
        ca = base64.b64encode((self.certs / "ca.crt").read_bytes()).decode()
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "sa",
            "clusters": [{"name": "local", "cluster": {"server": self.url, "certificate-authority-data": ca}}],
            "users": [{"name": "sa", "user": {"token": token}}],
            "contexts": [{"name": "sa", "context": {"cluster": "local", "user": "sa", "namespace": namespace}}],
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    # -- processes ------------------------------------------------------------------------------

    def _spawn(self, name: str, *args: str) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        self._args[name] = args
        log = (self.logs / f"{name}.log").open("ab")
        self._procs[name] = subprocess.Popen(
            [str(self.binaries[name]), *args], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C of the test run reaches it through stop(), not twice
        )
        log.close()

    def _await(self, name: str, check: "callable[[], bool]", timeout: float) -> None:  # type: ignore[valid-type]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            proc = self._procs[name]
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited ({proc.returncode}); its log ends:\n{self.log_tail(name)}")
            time.sleep(0.2)
        raise RuntimeError(f"{name} not ready after {timeout:.0f} s; its log ends:\n{self.log_tail(name)}")

    def log_tail(self, name: str, lines: int = 20) -> str:
        path = self.logs / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def _get(self, url: str, *, admin: bool = True) -> tuple[int, bytes]:
        context = ssl.create_default_context(cafile=str(self.certs / "ca.crt"))
        if admin:
            context.load_cert_chain(str(self.certs / "admin.crt"), str(self.certs / "admin.key"))
        else:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        try:
            with urllib.request.urlopen(url, timeout=3, context=context) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as e:
            return e.code, b""
        except (urllib.error.URLError, OSError):
            return 0, b""

    def start(self, *, timeout: float = 180.0) -> "ControlPlane":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._certificates()
        self._write_kubeconfig()
        etcd_url = f"http://127.0.0.1:{self.etcd_port}"
        data = self.workdir / "etcd-data"
        shutil.rmtree(data, ignore_errors=True)  # a fresh, empty cluster each start
        data.mkdir(mode=0o700)
        peer_url = f"http://127.0.0.1:{self.etcd_peer_port}"
        flags = ["--name", "local", "--data-dir", str(data), "--listen-client-urls", etcd_url,
                 "--listen-peer-urls", peer_url, "--log-level", "warn", "--unsafe-no-fsync"]
        if _takes_flag(self.binaries["etcd"], "advertise-client-urls"):
            # Upstream etcd (envtest's) insists on advertised URLs once listen URLs are set; the
            # kube-assets' embedded etcd knows only the flags above.
            flags += ["--advertise-client-urls", etcd_url, "--initial-advertise-peer-urls", peer_url,
                      "--initial-cluster", f"local={peer_url}"]
        self._spawn("etcd", *flags)
        self._await("etcd", lambda: b'"health":"true"' in self._get(f"{etcd_url}/health")[1], 60)
        c = self.certs
        self._spawn(
            "kube-apiserver", f"--etcd-servers={etcd_url}", "--bind-address=127.0.0.1", f"--secure-port={self.api_port}",
            "--advertise-address=127.0.0.1", "--endpoint-reconciler-type=none",
            f"--tls-cert-file={c / 'apiserver.crt'}", f"--tls-private-key-file={c / 'apiserver.key'}",
            f"--client-ca-file={c / 'ca.crt'}", "--authorization-mode=RBAC",
            f"--requestheader-client-ca-file={c / 'front-proxy-ca.crt'}", "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User", "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={c / 'front-proxy-client.crt'}", f"--proxy-client-key-file={c / 'front-proxy-client.key'}",
            f"--service-account-key-file={c / 'sa.pub'}", f"--service-account-signing-key-file={c / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--service-cluster-ip-range=10.96.0.0/16", f"--cert-dir={c / 'apiserver-generated'}", "--profiling=false",
            "--v=1", *self.extra_apiserver_flags,
        )
        self._await("kube-apiserver", lambda: self._get(f"{self.url}/readyz")[1] == b"ok", timeout)
        if self.with_controller_manager:
            k = str(self.kubeconfig)
            self._spawn(
                CONTROLLER_MANAGER, f"--kubeconfig={k}", f"--authentication-kubeconfig={k}", f"--authorization-kubeconfig={k}",
                "--bind-address=127.0.0.1", f"--secure-port={self.kcm_port}", f"--cert-dir={c / 'kcm-generated'}",
                "--controllers=*", "--use-service-account-credentials=true", f"--service-account-private-key-file={c / 'sa.key'}",
                f"--root-ca-file={c / 'ca.crt'}", f"--cluster-signing-cert-file={c / 'ca.crt'}",
                f"--cluster-signing-key-file={c / 'ca.key'}", "--service-cluster-ip-range=10.96.0.0/16",
                "--allocate-node-cidrs=false", "--leader-elect=false", "--profiling=false", "--v=1",
            )
            self._await(CONTROLLER_MANAGER,
                        lambda: self._get(f"https://127.0.0.1:{self.kcm_port}/healthz", admin=False)[1] == b"ok", 120)
            # /healthz answers before the controllers run; the default ServiceAccount is their first work.
            self._await(CONTROLLER_MANAGER,
                        lambda: self._get(f"{self.url}/api/v1/namespaces/default/serviceaccounts/default")[0] == 200, 60)
        return self

    def restart_apiserver(self, *, grace: float = 5.0, timeout: float = 180.0) -> None:
        """Stop kube-apiserver and start it again with the same flags, etcd untouched, as a rolling
        upgrade of a control plane does; returns once it is ready. Its watch cache starts afresh at
        etcd's current revision, so a client resuming a watch from an older resourceVersion of a
        resource gets ``410 Gone`` (the way an operator meets it on a real cluster).

        SIGTERM makes it stop listening at once; while clients hold watches open it does not exit,
        so after ``grace`` seconds it is killed, as the kubelet does after a pod's grace period."""
        self._terminate(self._procs.pop("kube-apiserver"), grace=grace)
        self._spawn("kube-apiserver", *self._args["kube-apiserver"])
        self._await("kube-apiserver", lambda: self._get(f"{self.url}/readyz")[1] == b"ok", timeout)

    def pid(self, name: str) -> int:
        return self._procs[name].pid

    @staticmethod
    def _terminate(proc: subprocess.Popen[bytes], *, grace: float = 15.0) -> None:
        """SIGTERM, and SIGKILL if it has not exited ``grace`` seconds later."""
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)

    def stop(self) -> None:
        """Stop what was started, the controller manager first and etcd last."""
        for name in (CONTROLLER_MANAGER, "kube-apiserver", "etcd"):
            proc = self._procs.pop(name, None)
            if proc is not None:
                self._terminate(proc)

    def __enter__(self) -> "ControlPlane":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
