"""A claim the operator hears of before its GpuVm: it must wait, not answer GpuVmNotFound.

kopf hands over GpuVms and claims on separate watches, in no particular order. The engine guards
one direction (an Auto GpuVm waits until the claims are listed, test_claims.py); this is the
other: a claim stepped before the GpuVm's watch has delivered it was answered ``GpuVmNotFound:
no GpuVm X in namespace Y`` — and the claim wrapper takes that as final (exit 66, "it was
deleted?"), so a job waiting for its VM failed while its GpuVm existed. The engine now asks the
API server whether the GpuVm is stored before it says it is not. Found on a real API server
(tests/realkube): for the first seconds of a new CRD, kube-apiserver answers its list with 429
"storage is (re)initializing" and kopf retries, while the claims' watch already runs. An operator
restart with a slow GpuVm list does the same to every job waiting at that moment. Here the
emulator fails the operator's first lists of GpuVms, so the order is certain.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

from controller.demand import CLAIM_PLURAL
from controller.gpuvm import GROUP, VERSION
from testbed.sandbox import Cluster, OperatorRunner, Sandbox, wait_for
from tests.integration.conftest import NS, vm_id

CLI = str(Path(sys.executable).parent / "gpuvm-operator")


def test_a_job_waiting_while_the_operator_starts_gets_its_vm_when_the_gpuvm_list_comes_late(
    world: Sandbox, cluster: Cluster, start_operator: Callable[..., OperatorRunner], tmp_path: Path
) -> None:
    cluster.create("a100", {"vm": {"resourceId": vm_id("vm-1")}, "desiredState": "Auto"})
    config = tmp_path / "kubeconfig"
    config.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "emu",
        "clusters": [{"name": "emu", "cluster": {"server": cluster.url}}],
        "users": [{"name": "job", "user": {}}],
        "contexts": [{"name": "emu", "context": {"cluster": "emu", "user": "job", "namespace": NS}}],
    }))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POD_", "KUBERNETES_"))}
    job = subprocess.Popen([CLI, "claim", "a100", "--timeout", "90s", "--", "true"], env={**env, "KUBECONFIG": str(config)},
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: cluster.custom.list_namespaced_custom_object(GROUP, VERSION, NS, CLAIM_PLURAL)["items"], 30,
                 what="the job's claim, waiting for an operator")
        # The operator's first three lists of GpuVms fail (kopf retries them); its claims' list does not.
        cluster.thread.run_sync(lambda: cluster.emulator.add_fault("kind=http status=503 resource=gpuvms verb=list times=3"))
        start_operator()
        _, err = job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 0, err
    assert "GpuVmNotFound" not in err
