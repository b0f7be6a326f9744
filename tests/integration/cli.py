"""Running ``gpuvm-operator`` as a user does: the installed command, in a process of its own,
with an environment that holds only what the test gives it (no KUBECONFIG, no AZURE_* of the
machine running the tests)."""

from __future__ import annotations

import json
import os
import pty
import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.kubeemu import Identity, Rule
from testbed.sandbox import Cluster, admin_identity

COMMAND = str(Path(sys.executable).parent / "gpuvm-operator")


def emulator_identity(cluster: Cluster, *, user: str, rules: Sequence[Mapping[str, Any]]) -> str:
    """A new bearer token of ``cluster``'s emulator for ``user``, holding exactly ``rules`` (RBAC
    PolicyRules, cluster-wide), registered next to the identities the emulator already has.

    The first identity turns RBAC on: from then on a request without a token is system:anonymous.
    ``cluster``'s own client keeps working as ``admin_identity`` (its token), registered with it.
    """
    admin_token = cluster.token
    if admin_token is None:
        raise ValueError("the cluster's own client needs a token to keep working once RBAC is on")
    token = secrets.token_urlsafe(16)
    identity = Identity(user, token=token, rules=[Rule.from_policy_rule(rule) for rule in rules])
    emulator = cluster.emulator

    def register() -> None:  # on the emulator's loop: its state is only touched from there
        current = emulator.identities()
        emulator.set_identities([*(current if current is not None else [admin_identity(admin_token)]), identity])

    cluster.thread.run_sync(register)
    return token


def base_env(home: Path, **extra: str) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), **extra}


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str

    @property
    def checks(self) -> dict[str, dict[str, Any]]:
        """``check --output json``'s checks by name."""
        try:
            document = json.loads(self.stdout)
        except ValueError:
            raise AssertionError(f"not JSON (exit {self.returncode}): {self.stdout!r}; stderr: {self.stderr!r}") from None
        return {c["name"]: c for c in document["checks"]}

    def status(self, name: str) -> str:
        return self.checks[name]["status"]


def gpuvm_operator(*args: str, env: Mapping[str, str], timeout: float = 120) -> Ran:
    done = subprocess.run([COMMAND, *args], env=dict(env), capture_output=True, text=True, timeout=timeout)
    return Ran(done.returncode, done.stdout, done.stderr)


def on_a_terminal(*args: str, env: Mapping[str, str], timeout: float = 120) -> Ran:
    """The command with its standard output on a pseudo-terminal, as in an interactive shell."""
    main, child = pty.openpty()
    try:
        process = subprocess.Popen([COMMAND, *args], env=dict(env), stdout=child, stderr=subprocess.PIPE)
        os.close(child)
        chunks = []
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: the terminal's other end is closed
                break
            if not chunk:
                break
            chunks.append(chunk)
        _, err = process.communicate(timeout=timeout)
    finally:
        os.close(main)
    return Ran(process.returncode, b"".join(chunks).decode().replace("\r\n", "\n"), err.decode())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def silent_server() -> Iterator[str]:
    """A TCP port that accepts connections and never answers: a black-holed API server."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


def with_flag(flags: Sequence[str], name: str, value: str | None) -> list[str]:
    """The same flags with one option's value changed, added, or (value None) removed."""
    out = list(flags)
    if name in out:
        at = out.index(name)
        del out[at : at + 2]
    return out if value is None else [*out, name, value]
