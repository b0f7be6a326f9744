"""Kubernetes-side fault injection (testbed/kubeemu/faults.py), and kopf surviving each fault."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import urllib3
from kubernetes import client

from controller.cli import main
from testbed.kubeemu.faults import Fault, FaultKind, FaultSpecError
from testbed.serving import ServerThread
from tests.testbed.conftest import DATA, RawHttp, emulator_process, wait_for
from tests.testbed.kopf_operator import GROUP, PLURAL, VERSION, assert_every_change_seen, running_operator, widget

W = f"/apis/{GROUP}/{VERSION}/namespaces/default/{PLURAL}"


def test_specs_parse_or_say_why_not() -> None:
    f = Fault.parse("kind=conflict resource=gpuvms/status times=2")
    assert (f.kind, f.resource, f.verbs, f.times) == (FaultKind.CONFLICT, "gpuvms/status", frozenset({"update", "patch"}), 2)
    f = Fault.parse("kind=watch-cut resource=gpuvms every=2.5 end=clean")
    assert (f.every, f.abort, f.verbs) == (2.5, False, frozenset({"watch"}))
    f = Fault.parse("kind=http status=503 verb=list,get retry-after=2 p=0.5 seed=3 namespace=ml")
    assert (f.status, f.verbs, f.retry_after, f.probability, f.seed, f.namespace) == (503, frozenset({"list", "get"}), 2.0, 0.5, 3, "ml")
    assert f.matches("list", "gpuvm.dev", "gpuvms", "ml", "") and not f.matches("list", "gpuvm.dev", "gpuvms", "prod", "")
    assert not Fault.parse("kind=http resource=gpuvms").matches("patch", "", "gpuvms/status", "", "x")
    for spec, message in (
        ("", "empty fault spec"),
        ("resource=x", "kind= is required (watch-cut, watch-gone, conflict, http)"),
        ("kind=boom", "unknown kind 'boom' (known: watch-cut, watch-gone, conflict, http)"),
        ("kind=http status=200", "status must be an HTTP error status (400-599), not 200"),
        ("kind=http p=2", "p must be between 0 and 1, not 2.0"),
        ("kind=http times=0", "times must be >= 1, not 0"),
        ("kind=http verb=fly", "unknown verb(s) fly (known: create, delete, deletecollection, get, list, patch, update, watch)"),
        ("kind=watch-gone verb=get", "a watch-gone fault applies to watches only"),
        ("kind=conflict every=1", "every= applies to watch-cut faults only"),
        ("kind=watch-cut end=later", "end must be abort or clean, not 'later'"),
        ("kind=http colour=red", "unknown key(s) colour (known: end, every, group, kind, name, namespace, p, resource, retry-after, "
                                 "seed, status, times, verb)"),
        ("kind=http status=x", "status='x' is not a whole number"),
    ):
        with pytest.raises(FaultSpecError) as e:
            Fault.parse(spec)
        assert str(e.value) == message


def _widgets(raw: RawHttp, *names: str) -> None:
    for name in names:
        assert raw("POST", W, widget(name, 0)).status == 201


def test_requests_answer_injected_errors(kube_thread: ServerThread, kube_raw: RawHttp) -> None:
    emu: Any = kube_thread.server
    _widgets(kube_raw, "a")
    no_retries = urllib3.PoolManager(retries=False)
    kube_thread.run_sync(lambda: emu.add_fault("kind=conflict resource=widgets/status times=2"))
    kube_thread.run_sync(lambda: emu.add_fault("kind=http status=503 retry-after=2 resource=widgets verb=get times=1"))
    status = {"status": {"count": 1}}
    for _ in range(2):
        r = kube_raw("PATCH", W + "/a/status", status, content_type="application/merge-patch+json")
        assert (r.status, r.body["reason"], r.body["message"]) == (409, "Conflict", (
            'Operation cannot be fulfilled on widgets.test.kubeemu.dev "a": the object has been modified; '
            "please apply your changes to the latest version and try again"))
    assert kube_raw("PATCH", W + "/a", {"spec": {"replicas": 2}}, content_type="application/merge-patch+json").status == 200
    assert kube_raw("PATCH", W + "/a/status", status, content_type="application/merge-patch+json").status == 200
    r = no_retries.request("GET", kube_raw.url + W + "/a")
    assert (r.status, r.headers["Retry-After"], json.loads(r.data)["reason"]) == (503, "2", "ServiceUnavailable")
    assert no_retries.request("GET", kube_raw.url + W + "/a").status == 200
    assert emu.stats()["faults"] == {"conflict": 2, "http": 1}


def test_the_same_seed_misbehaves_the_same_way(kube_thread: ServerThread, kube_raw: RawHttp) -> None:
    emu: Any = kube_thread.server
    _widgets(kube_raw, "s")

    def pattern() -> list[int]:
        fid = kube_thread.run_sync(lambda: emu.add_fault("kind=http status=500 resource=widgets/status p=0.5 seed=42"))
        codes = [kube_raw("PATCH", W + "/s/status", {"status": {"count": i}}, content_type="application/merge-patch+json").status
                 for i in range(20)]
        kube_thread.run_sync(lambda: emu.remove_fault(fid))
        return codes

    first = pattern()
    assert set(first) == {200, 500} and pattern() == first


def test_watch_faults(kube_thread: ServerThread, kube_raw: RawHttp) -> None:
    emu: Any = kube_thread.server
    _widgets(kube_raw, "w1", "w2", "w3")
    rv = kube_raw("GET", W).body["metadata"]["resourceVersion"]
    since = str(int(rv) - 3)
    # Cut before the second event: the stream ends early, and a resume from the last event seen replays the rest.
    kube_thread.run_sync(lambda: emu.add_fault("kind=watch-cut resource=widgets p=0.5 seed=2 times=1"))
    seen: list[dict[str, Any]] = []
    with pytest.raises(urllib3.exceptions.ProtocolError):
        for event in kube_raw.stream(W + f"?watch=true&resourceVersion={since}"):
            seen.append(event)
    assert 0 < len(seen) < 3
    resumed = [e["object"]["metadata"]["name"] for e in kube_raw.stream(
        W + f"?watch=true&timeoutSeconds=1&resourceVersion={seen[-1]['object']['metadata']['resourceVersion']}")]
    assert [e["object"]["metadata"]["name"] for e in seen] + resumed == ["w1", "w2", "w3"]
    # every=: the stream ends by itself after that long, here cleanly (as a server timeout does).
    kube_thread.run_sync(lambda: emu.add_fault("kind=watch-cut resource=widgets every=0.3 end=clean times=1"))
    began = time.monotonic()
    assert len(list(kube_raw.stream(W + f"?watch=true&resourceVersion={rv}&timeoutSeconds=30", timeout=20))) == 0
    assert time.monotonic() - began < 15
    # watch-gone: a resume answers 410 Expired; a watch without a resourceVersion is not a resume.
    kube_thread.run_sync(lambda: emu.add_fault("kind=watch-gone resource=widgets times=1"))
    assert [e["type"] for e in kube_raw.stream(W + "?watch=true&timeoutSeconds=1")] == ["ADDED"] * 3
    events = list(kube_raw.stream(W + f"?watch=true&resourceVersion={rv}&timeoutSeconds=1"))
    assert [(e["type"], e["object"]["code"], e["object"]["reason"]) for e in events] == [("ERROR", 410, "Expired")]
    assert emu.stats()["faults"] == {"watch-cut": 2, "watch-gone": 1}


def test_admin_endpoint_and_cli_flag(capsys: Any) -> None:
    with emulator_process("--crds", str(DATA), "--fault", "kind=http status=500 resource=widgets verb=list times=1") as url:
        pool = urllib3.PoolManager(retries=False)
        assert pool.request("GET", url + W).status == 500
        assert pool.request("GET", url + W).status == 200
        r = pool.request("POST", url + "/_emu/faults", body=b"kind=conflict resource=widgets times=1")
        assert r.status == 201 and json.loads(r.data) == {"id": 2}
        r = pool.request("POST", url + "/_emu/faults", body=b"kind=nope")
        assert r.status == 400 and "unknown kind" in json.loads(r.data)["error"]
        listing = json.loads(pool.request("GET", url + "/_emu/faults").data)
        assert [f["kind"] for f in listing["faults"]] == ["http", "conflict"] and listing["fired"] == {"http": 1}
        assert json.loads(pool.request("DELETE", url + "/_emu/faults/1").data) == {"removed": True}
        assert json.loads(pool.request("DELETE", url + "/_emu/faults").data) == {"cleared": True}
        assert json.loads(pool.request("GET", url + "/_emu/faults").data)["faults"] == []
    assert main(["kube-emulator", "--fault", "kind=http status=99"]) == 2
    assert capsys.readouterr().err.strip() == (
        "gpuvm-operator kube-emulator: error: --fault 'kind=http status=99': status must be an HTTP error status (400-599), not 99")


SCENARIOS = {
    "watch streams cut before events": ["kind=watch-cut resource=widgets p=0.2 seed=11"],
    "watch streams cut every 0.3 s, the first two resumes 410 Gone": [
        "kind=watch-cut resource=widgets every=0.3", "kind=watch-gone resource=widgets times=2"],
    "status writes answer 500": ["kind=http status=500 resource=widgets/status p=0.3 seed=4"],
    "status writes answer 409": ["kind=conflict resource=widgets/status p=0.3 seed=3"],
}


@pytest.mark.parametrize("specs", list(SCENARIOS.values()), ids=list(SCENARIOS))
def test_kopf_survives(specs: list[str], kube_thread: ServerThread, kube_api: client.ApiClient) -> None:
    """A minimal kopf operator still sees every change while faults fire, and writes its status.

    Except one thing kopf does not do: a status patch answered 409 is not retried (kopf stored its
    diff base in the body patch before, so the change counts as handled); that status is written
    with the next change. So with 409s the last status is checked after the faults are cleared.
    """
    emu: Any = kube_thread.server
    api = client.CustomObjectsApi(kube_api)

    def read() -> dict[str, Any]:
        return api.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "w")

    with running_operator(emu.url, error_backoff=0.1) as rec:
        api.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, widget("w", 0))
        wait_for(lambda: any(c[0] == "create" for c in rec.snapshot()), 30, what="create handler")
        # kopf has persisted what it handled: a change made before that would be folded into the creation by kopf
        wait_for(lambda: "kopf.zalando.org/last-handled-configuration" in (read()["metadata"].get("annotations") or {}),
                 30, what="kopf's diff base")
        for spec in specs:
            kube_thread.run_sync(lambda spec=spec: emu.add_fault(spec))
        last = 0
        for burst in range(3):  # bursts, with the operator catching up in between
            cuts = emu.stats()["faults"].get("watch-cut", 0)
            for _ in range(10):
                last += 1
                api.patch_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "w", {"spec": {"replicas": last}})
            wait_for(lambda: (u := rec.updates()) and u[-1][1] == last, 60, what=f"change to {last} handled")
            if any("every=" in spec for spec in specs):  # a timed cut between bursts, so the next burst meets a resumed stream
                wait_for(lambda: emu.stats()["faults"].get("watch-cut", 0) > cuts, 30, what=f"a timed cut after burst {burst}")
        assert_every_change_seen(rec.updates(), first=0, last=last)
        if not any("kind=conflict" in spec for spec in specs):
            wait_for(lambda: read().get("status", {}).get("count") == last, 60, what="the last status written")
        print(f"{specs}: faults fired {emu.stats()['faults']}; kopf handled {len(rec.updates())} changes")
        assert {Fault.parse(spec).kind.value for spec in specs} <= set(emu.stats()["faults"])
        kube_thread.run_sync(emu.clear_faults)
        api.patch_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "w", {"spec": {"replicas": last + 1}})
        wait_for(lambda: read().get("status", {}).get("count") == last + 1, 60, what="status after the faults stop")
        assert_every_change_seen(rec.updates(), first=0, last=last + 1)
