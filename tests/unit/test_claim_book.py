"""The claims the operator keeps: indexing, what wakes whom, owner Pod phases from both sources."""

from __future__ import annotations

import datetime as dt
from typing import Any

from controller.claims import ClaimBook

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.timezone.utc)


def claim(name: str, gpuvm: str, *, uid: str = "", owner: tuple[str, str] | None = None, rv: int = 1,
          status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "ml", "uid": uid or f"uid-{name}", "generation": 1,
                            "resourceVersion": str(rv), "creationTimestamp": "2026-11-25T11:00:00Z"}
    if owner is not None:
        meta["ownerReferences"] = [{"apiVersion": "v1", "kind": "Pod", "name": owner[0], "uid": owner[1]}]
    return {"metadata": meta, "spec": {"gpuVm": gpuvm, **spec}, "status": status or {}}


def test_claims_are_indexed_by_their_gpuvm_and_only_demand_changes_wake_it() -> None:
    book = ClaimBook()
    c, affected = book.seen(claim("a", "trainer"))
    assert affected == {("ml", "trainer")} and [x.name for x in book.of(("ml", "trainer"))] == ["a"]
    _, affected = book.seen(claim("a", "trainer", rv=2, status={"phase": "Bound"}))  # our own status write
    assert affected == set()
    _, affected = book.seen(claim("a", "trainer", rv=3, expiresAt="2026-11-25T13:00:00Z"))
    assert affected == {("ml", "trainer")}
    assert [lc.name for lc in book.live(("ml", "trainer"), NOW)] == ["a"]
    assert book.gone("ml", "a") == {("ml", "trainer")} and book.count(("ml", "trainer")) == 0


def test_an_owner_phase_listed_before_its_claim_is_not_lost() -> None:
    book = ClaimBook()
    book.watched = {"pod-uid": "Failed"}  # the claimant watch listed the Pod first (a restart)
    c, _ = book.seen(claim("job", "trainer", owner=("job-0", "pod-uid")))
    live = book.liveness(c, NOW)
    assert live is not None and not live.live and "job-0 has finished (phase Failed)" in live.message
    assert book.reads_due(c, now=0.0, every=60.0) == []  # watched: no GET needed


def test_unwatched_owners_are_read_once_per_interval_and_their_changes_wake_their_claims() -> None:
    book = ClaimBook()
    c, _ = book.seen(claim("job", "trainer", owner=("job-0", "pod-uid")))
    assert book.reads_due(c, now=100.0, every=60.0) == [("job-0", "pod-uid")]
    assert book.reads_due(c, now=130.0, every=60.0) == []
    assert book.pod_phase("pod-uid", "Running") == {c.key}
    assert book.pod_phase("pod-uid", "Running") == set()  # no change
    assert book.pod_phase("other-uid", "Failed") == set()  # owns no claim
    assert book.pod_phase("pod-uid", "Succeeded") == {c.key}
    assert book.reads_due(c, now=200.0, every=60.0) == []  # finished: nothing more to learn
    assert not book.liveness(c, NOW).live
