"""The short chaos soak CI runs (``python -m soak --quick``): 40 GpuVms, 1,000 seeded intents,
10 % of Azure requests faulted, Kubernetes faults, one SIGKILL (while operations are in flight)
and a credential expiry — the real ``gpuvm-operator run`` process against the emulator and the
simulator processes over loopback. Every invariant the full soak asserts is asserted here; a
failure prints the seed, the GpuVms concerned, their minimal history and the replay command.

Every wait inside has a deadline; the pytest timeout is a backstop far above the run's usual
length (about 2-3 minutes on a busy 2-core machine)."""

from __future__ import annotations

from pathlib import Path

import pytest

from soak import report
from soak.__main__ import QUICK, soak
from soak.plan import DisruptionKind

pytestmark = pytest.mark.timeout(900)


async def test_a_short_soak_holds_every_invariant(tmp_path: Path) -> None:
    out, results, data = await soak(QUICK, tmp_path)
    print("\n".join(f"{'ok  ' if r.ok else 'FAIL'} {r.name}: {r.value}" for r in results))
    assert data["passed"], report.failures(out, results)
    # What the run must have exercised for the invariants to mean something.
    assert len(out.applied) == QUICK.intents
    assert [d.kind for d in out.disruptions] == [d.kind.value for d in out.plan.disruptions]
    assert DisruptionKind.KILL_IN_FLIGHT.value in [d.kind for d in out.disruptions]
    kill = next(d for d in out.disruptions if d.kind == DisruptionKind.KILL_IN_FLIGHT.value)
    assert kill.detail["operations_in_flight"] > 0
    fired = sum(f.get("fired") or 0 for f in out.azure_faults)
    assert fired > 0.05 * len(out.requests), (fired, len(out.requests))
    assert sum(((out.kube_faults or {}).get("fired") or {}).values()) > 0
    assert {r.status for r in out.requests} >= {401, 429}
