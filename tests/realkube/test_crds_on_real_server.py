"""The shipped CRDs (deploy/crds/) on a real kube-apiserver v1.36, and the emulator beside it.

What a user meets when they apply a bad GpuVm or GpuVmClaim, and what the operator relies on
(defaulting, pruning of status fields the schema does not declare, the status subresource,
managedFields, 409 on a stale write) is the API server's own behaviour, driven by the CRD: the
emulator (testbed/kubeemu) re-implements it, so every test here asks the real server first and
holds the emulator's answer to it. Where the two differ on purpose, the test says so, and
docs/testing.md lists it.

Cause lists are compared as sets: the real server orders them by Go map iteration (its order
changes between two identical requests), the emulator by field path.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config

from controller.kube import StatusWriter
from tests.realkube.conftest import ROOT, Pair
from tests.realkube.endpoints import API, Answer, Endpoint, claim, gpuvm, kubectl, rid

GPUVMS = API + "/namespaces/{ns}/gpuvms"
CLAIMS = API + "/namespaces/{ns}/gpuvmclaims"
MERGE = "application/merge-patch+json"
NOT_CHECKED = ("FieldValueInvalid", "<nil>", "Invalid value: null: some validation rules were not checked because "
               "the object was invalid; correct the existing errors to complete validation")


def crd(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "deploy" / "crds" / f"{name}.gpuvm.dev.yaml").read_text())


def schema_of(name: str) -> dict[str, Any]:
    return crd(name)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


GPUVM_SPEC = schema_of("gpuvms")["properties"]["spec"]["properties"]
CLAIM_SPEC = schema_of("gpuvmclaims")["properties"]["spec"]["properties"]
VM_RULE = GPUVM_SPEC["vm"]["x-kubernetes-validations"][0]["message"]
GPUVM_RULE = CLAIM_SPEC["gpuVm"]["x-kubernetes-validations"][0]["message"]


def should_match(path: str, value: str, pattern: str) -> tuple[str, str, str]:
    return ("FieldValueInvalid", path, f"Invalid value: {json.dumps(value)}: {path} in body should match '{pattern}'")


def causes(answer: Answer) -> set[tuple[str, str, str]]:
    return {(c["reason"], c["field"], c["message"]) for c in answer.body["details"]["causes"]}


def assert_invalid(answer: Answer, kind: str, name: str, expected: set[tuple[str, str, str]]) -> None:
    """A 422 Invalid whose causes are ``expected`` and whose message, the line kubectl prints,
    names each of them."""
    assert (answer.status, answer.body["reason"], answer.body["details"]["kind"]) == (422, "Invalid", kind), answer
    assert causes(answer) == expected
    head = f'{kind}.gpuvm.dev "{name}" is invalid: '
    parts = [f"{field}: {message}" for _, field, message in expected]
    if len(parts) == 1:
        assert answer.body["message"] == head + parts[0]
    else:  # "[a, b, ...]" in the order of the causes, whichever that is
        message = answer.body["message"]
        assert message.startswith(head + "[") and message.endswith("]"), message
        inner = message[len(head) + 1:-1]
        assert all(part in inner for part in parts) and len(inner) == len(", ".join(parts)), message


# ------------------------------------------------------------------------------ schema validation
REJECTED: list[tuple[str, str, dict[str, Any], set[tuple[str, str, str]]]] = [
    ("enum", "GpuVm", {"vm": {"resourceId": rid()}, "desiredState": "Stopped"},
     {("FieldValueNotSupported", "spec.desiredState",
       'Unsupported value: "Stopped": supported values: "Running", "Deallocated", "Auto"'), NOT_CHECKED}),
    ("required", "GpuVm", {}, {("FieldValueRequired", "spec.vm", "Required value"), NOT_CHECKED}),
    # A pattern is not a blocking error: the CEL rule on spec.vm still runs (and passes here).
    ("pattern", "GpuVm", {"vm": {"resourceId": "/subscriptions/nope"}},
     {should_match("spec.vm.resourceId", "/subscriptions/nope", GPUVM_SPEC["vm"]["properties"]["resourceId"]["pattern"])}),
    # A string reports its first failure only: minLength, not the pattern "x" also fails.
    ("min-length", "GpuVm", {"vm": {"resourceId": rid()}, "idleTimeout": "x"},
     {("FieldValueInvalid", "spec.idleTimeout", 'Invalid value: "x": spec.idleTimeout in body should be at least 2 chars long')}),
    ("max-length", "GpuVm", {"vm": {"resourceId": rid()}, "idleTimeout": "1" * 22},
     {("FieldValueTooLong", "spec.idleTimeout", "Too long: may not be more than 21 bytes"), NOT_CHECKED}),
    ("window", "GpuVm", {"vm": {"resourceId": rid()}, "schedule": {"windows": [{"days": "Monday", "start": "8:00"}]}},
     {should_match("spec.schedule.windows[0].days", "Monday", GPUVM_SPEC["schedule"]["properties"]["windows"]["items"]["properties"]["days"]["pattern"]),
      should_match("spec.schedule.windows[0].start", "8:00", "^([01][0-9]|2[0-3]):[0-5][0-9]$"),
      ("FieldValueRequired", "spec.schedule.windows[0].end", "Required value"), NOT_CHECKED}),
    ("max-items", "GpuVm", {"vm": {"resourceId": rid()}, "schedule": {"windows": [{"days": "Mon", "start": "08:00", "end": "09:00"}] * 33}},
     {("FieldValueTooMany", "spec.schedule.windows", "Too many: 33: must have at most 32 items"), NOT_CHECKED}),
    # A pattern error and a failed CEL rule are both reported.
    ("pattern-and-rule", "GpuVm", {"vm": {"resourceGroup": "rg!!"}},
     {should_match("spec.vm.resourceGroup", "rg!!", GPUVM_SPEC["vm"]["properties"]["resourceGroup"]["pattern"]),
      ("FieldValueInvalid", "spec.vm", f"Invalid value: {VM_RULE}")}),
    ("minimum", "GpuVmClaim", {"gpuVm": "a", "leaseDurationSeconds": 0},
     {("FieldValueInvalid", "spec.leaseDurationSeconds",
       "Invalid value: 0: spec.leaseDurationSeconds in body should be greater than or equal to 1")}),
    ("format", "GpuVmClaim", {"gpuVm": "a", "expiresAt": "tomorrow"},
     {("FieldValueTypeInvalid", "spec.expiresAt", 'Invalid value: "tomorrow": spec.expiresAt in body must be of type date-time: "tomorrow"'),
      NOT_CHECKED}),
    ("name-pattern", "GpuVmClaim", {"gpuVm": "Bad_Name"}, {should_match("spec.gpuVm", "Bad_Name", CLAIM_SPEC["gpuVm"]["pattern"])}),
]


@pytest.mark.parametrize(("kind", "spec", "expected"), [c[1:] for c in REJECTED], ids=[c[0] for c in REJECTED])
def test_a_bad_spec_is_rejected_with_the_message_a_user_sees(pair: Pair, kind: str, spec: dict[str, Any],
                                                              expected: set[tuple[str, str, str]]) -> None:
    """Each kind of schema error, with the text kubectl shows; the emulator answers the same."""
    path, body = (GPUVMS, gpuvm("bad", spec)) if kind == "GpuVm" else (CLAIMS, claim("bad", spec))
    answers = pair.both("POST", path, body)
    assert_invalid(answers["real"], kind, "bad", expected)
    assert_invalid(answers["emulator"], kind, "bad", expected)


def test_a_wrong_type_is_reported_twice_by_the_real_server_once_by_the_emulator(pair: Pair) -> None:
    """A known difference (docs/testing.md): kube-openapi reports the type and then the enum for
    the same value; the emulator stops at the type. Both refuse, with the same first cause."""
    answers = pair.both("POST", GPUVMS, gpuvm("bad", {"vm": {"resourceId": rid()}, "desiredState": 5}))
    wrong_type = ("FieldValueTypeInvalid", "spec.desiredState",
                  'Invalid value: "integer": spec.desiredState in body must be of type string: "integer"')
    enum = ("FieldValueNotSupported", "spec.desiredState", 'Unsupported value: 5: supported values: "Running", "Deallocated", "Auto"')
    assert causes(answers["real"]) == {wrong_type, enum, NOT_CHECKED}
    assert causes(answers["emulator"]) == {wrong_type, NOT_CHECKED}


def test_a_nameless_object_is_refused_before_its_schema_matters(pair: Pair) -> None:
    body = gpuvm("", {"vm": {"resourceId": rid()}})
    del body["metadata"]["name"]
    answers = pair.both("POST", GPUVMS, body)
    for answer in answers.values():
        assert answer.status == 422 and "name" not in answer.body["details"]  # StatusDetails.name is omitempty
        assert causes(answer) == {("FieldValueRequired", "metadata.name", "Required value: name or generateName is required"),
                                  NOT_CHECKED}


# ------------------------------------------------------------------------------ CEL rules
VM_SHAPES: list[tuple[dict[str, Any], bool]] = [
    ({"resourceId": rid()}, True),
    ({"resourceGroup": "rg-gpu", "name": "vm-1"}, True),
    ({"subscriptionId": "00000000-0000-0000-0000-000000000002", "resourceGroup": "rg-gpu", "name": "vm-1"}, True),
    ({"resourceId": rid(), "resourceGroup": "rg-gpu"}, False),
    ({"resourceId": rid(), "subscriptionId": "00000000-0000-0000-0000-000000000002"}, False),
    ({"resourceId": rid(), "name": "vm-1"}, False),
    ({"resourceGroup": "rg-gpu"}, False),
    ({"name": "vm-1"}, False),
    ({}, False),
]


def test_every_cel_rule_rejects_what_it_should_and_accepts_the_rest(pair: Pair) -> None:
    """The CRDs' two x-kubernetes-validations (found in the YAML, so a new rule fails this test
    until it is covered): spec.vm's one-way-to-name-the-VM rule and GpuVmClaim's immutable spec.gpuVm."""
    rules = [r["rule"] for r in GPUVM_SPEC["vm"]["x-kubernetes-validations"] + CLAIM_SPEC["gpuVm"]["x-kubernetes-validations"]]
    everywhere = re.findall(r"^\s*- rule:", (ROOT / "deploy/crds/gpuvms.gpuvm.dev.yaml").read_text()
                            + (ROOT / "deploy/crds/gpuvmclaims.gpuvm.dev.yaml").read_text(), re.M)
    assert len(everywhere) == len(rules) == 2, "a CEL rule was added: test it here"

    for i, (vm, valid) in enumerate(VM_SHAPES):
        answers = pair.both("POST", GPUVMS, gpuvm(f"vm-{i}", {"vm": vm}))
        for answer in answers.values():
            if valid:
                assert answer.status == 201 and answer.body["spec"]["vm"] == vm, (vm, answer)
            else:
                assert_invalid(answer, "GpuVm", f"vm-{i}", {("FieldValueInvalid", "spec.vm", f"Invalid value: {VM_RULE}")})

    # spec.gpuVm == oldSelf: a transition rule, so it holds on updates only; the value is shown
    # (a scalar), unlike the object of the rule above.
    for answer in pair.both("POST", CLAIMS, claim("c", {"gpuVm": "a"})).values():
        assert answer.status == 201
    for answer in pair.both("PATCH", CLAIMS + "/c", {"spec": {"gpuVm": "b"}}, content_type=MERGE).values():
        assert_invalid(answer, "GpuVmClaim", "c", {("FieldValueInvalid", "spec.gpuVm", f'Invalid value: "b": {GPUVM_RULE}')})
    for answer in pair.both("PATCH", CLAIMS + "/c", {"spec": {"gpuVm": "B"}}, content_type=MERGE).values():
        assert_invalid(answer, "GpuVmClaim", "c", {should_match("spec.gpuVm", "B", CLAIM_SPEC["gpuVm"]["pattern"]),
                                                   ("FieldValueInvalid", "spec.gpuVm", f'Invalid value: "B": {GPUVM_RULE}')})
    for answer in pair.both("PATCH", CLAIMS + "/c", {"spec": {"gpuVm": "a", "leaseDurationSeconds": 60}}, content_type=MERGE).values():
        assert answer.status == 200 and answer.body["spec"] == {"gpuVm": "a", "leaseDurationSeconds": 60}


# ------------------------------------------------------------------------------ defaulting, pruning
def test_defaults_are_filled_in_and_unknown_fields_pruned_with_a_warning(pair: Pair) -> None:
    """What the operator reads is the defaulted spec; status fields the schema does not declare
    are dropped (so the operator's status must be declared in the CRD), with one Warning each."""
    sent = gpuvm("d", {"vm": {"resourceId": rid(), "extra": 1}, "bogus": True,
                       "schedule": {"windows": [{"days": "Mon", "start": "08:00", "end": "09:00", "x": 1}]}},
                 status={"powerState": "Running", "bogus": 1})
    created = pair.both("POST", GPUVMS, sent)
    for answer in created.values():
        assert answer.status == 201
        assert answer.body["spec"] == {"vm": {"resourceId": rid()}, "desiredState": "Deallocated", "driftPolicy": "Enforce",
                                       "deletionPolicy": "Retain",
                                       "schedule": {"timeZone": "UTC", "windows": [{"days": "Mon", "start": "08:00", "end": "09:00"}]}}
        assert "status" not in answer.body  # a create does not write status when there is a status subresource
        assert answer.warnings == tuple(f'299 - "unknown field \\"{p}\\""' for p in
                                        ("spec.bogus", "spec.schedule.windows[0].x", "spec.vm.extra", "status.bogus"))
    # The real server returns custom resources with sorted keys; the emulator keeps insertion order.
    assert list(created["real"].body["spec"]) == sorted(created["real"].body["spec"])

    status = {"status": {"powerState": "Running", "bogus": 1, "vm": {"name": "vm-1", "junk": 2}}}
    for answer in pair.both("PATCH", GPUVMS + "/d/status", status, content_type=MERGE).values():
        assert answer.status == 200 and answer.body["status"] == {"powerState": "Running", "vm": {"name": "vm-1"}}
        assert answer.warnings == ('299 - "unknown field \\"status.bogus\\""', '299 - "unknown field \\"status.vm.junk\\""')

    strict = pair.both("POST", GPUVMS + "?fieldValidation=Strict", gpuvm("s", {"vm": {"resourceId": rid()}, "more": 1, "bogus": 2}))
    assert strict["real"] == strict["emulator"]
    assert (strict["real"].status, strict["real"].body["message"]) == (400, (
        'GpuVm in version "v1alpha1" cannot be handled as a GpuVm: strict decoding error: '
        'unknown field "spec.bogus", unknown field "spec.more"'))


# ------------------------------------------------------------------------------ printer columns
def readme_columns() -> dict[str, list[str]]:
    """The columns README.md promises: ``kubectl get gvm`` shows ..., ``-o wide`` adds ..., ``kubectl get gvmc`` shows ...."""
    text = " ".join((ROOT / "README.md").read_text().split())
    gvm = re.search(r"`kubectl get gvm` shows ([A-Z, -]+?); `-o wide` adds (.+?)\. `kubectl get gvmc` shows the claims: (.+?)\.", text)
    assert gvm, "README.md no longer says which columns kubectl get shows"

    def names(s: str) -> list[str]:
        s = re.sub(r"\([^)]*\)", "", s).replace(" and ", ", ")
        return [w.strip() for w in s.split(",") if w.strip()]

    return {"gvm": names(gvm.group(1)), "wide": names(gvm.group(2)), "gvmc": names(gvm.group(3))}


def table(kubeconfig: Path, *args: str) -> list[dict[str, str]]:
    """kubectl's table as rows of {header: cell}, cells cut at the header's column."""
    lines = kubectl(kubeconfig, "get", *args).stdout.splitlines()
    starts = [m.start() for m in re.finditer(r"\S+", lines[0])]
    headers = lines[0].split()
    return [{h: line[s:e].strip() for h, s, e in zip(headers, starts, starts[1:] + [None])} for line in lines[1:]]


def test_kubectl_get_shows_the_columns_the_readme_promises(pair: Pair) -> None:
    """The CRDs' additionalPrinterColumns, as kubectl prints them from the real server's Table.
    The emulator serves no Table (kubectl then shows NAME and AGE only): that is checked here too."""
    ns, real = pair.namespace, pair.real
    kubeconfig = real.kubeconfig
    assert real.call("POST", GPUVMS.format(ns=ns), gpuvm("a100-trainer", {"vm": {"resourceId": rid()}, "desiredState": "Auto"})).status == 201
    status = {"powerState": "Deallocated", "vm": {"name": "vm-a100-01"},
              "demand": {"decidedBy": "Claims", "activeClaims": 1,
                         "nextTransitions": [{"at": "2026-12-08T09:00:00Z", "to": "Running", "by": "Schedule"}]},
              "conditions": [{"type": "Ready", "status": "False", "reason": "AllocationFailed", "message": "no capacity in eastus",
                              "lastTransitionTime": "2026-12-08T00:00:00Z"}]}
    assert real.call("PATCH", GPUVMS.format(ns=ns) + "/a100-trainer/status", {"status": status}, content_type=MERGE).status == 200
    assert real.call("POST", CLAIMS.format(ns=ns), claim("train-7f2c", {"gpuVm": "a100-trainer"})).status == 201
    claim_status = {"phase": "Bound", "conditions": [{"type": "Ready", "status": "True", "reason": "Running",
                                                       "message": "the VM is running", "lastTransitionTime": "2026-12-08T00:00:00Z"}]}
    assert real.call("PATCH", CLAIMS.format(ns=ns) + "/train-7f2c/status", {"status": claim_status}, content_type=MERGE).status == 200

    promised = readme_columns()
    [row] = table(kubeconfig, "gvm", "-n", ns)
    assert list(row) == promised["gvm"] == ["NAME", "DESIRED", "POWER", "READY", "CLAIMS", "REASON", "VM", "AGE"]
    assert {k: v for k, v in row.items() if k != "AGE"} == {"NAME": "a100-trainer", "DESIRED": "Auto", "POWER": "Deallocated",
                                                            "READY": "False", "CLAIMS": "1", "REASON": "AllocationFailed",
                                                            "VM": "vm-a100-01"}
    [wide] = table(kubeconfig, "gvm", "-n", ns, "-o", "wide")
    assert list(wide) == promised["gvm"] + promised["wide"]
    assert [wide[c] for c in promised["wide"]] == ["Claims", "Running", "2026-12-08T09:00:00Z", "no capacity in eastus"]
    [claim_row] = table(kubeconfig, "gvmc", "-n", ns)
    assert list(claim_row) == promised["gvmc"]
    assert [claim_row[c] for c in promised["gvmc"][:-1]] == ["train-7f2c", "a100-trainer", "Bound", "True", "Running"]
    # The README's own example table has the same header as kubectl's.
    readme = (ROOT / "README.md").read_text()
    assert re.search(r"^NAME +DESIRED +POWER +READY +CLAIMS +REASON +VM +AGE$", readme, re.M)

    emulated = pair.emulator
    assert emulated.call("POST", GPUVMS.format(ns=ns), gpuvm("a100-trainer", {"vm": {"resourceId": rid()}})).status == 201
    assert list(table(emulated.kubeconfig, "gvm", "-n", ns)[0]) == ["NAME", "AGE"]


# ------------------------------------------------------------------------------ status subresource
@pytest.mark.parametrize("server", ["real", "emulator"])
def test_spec_and_status_are_written_apart_and_only_spec_bumps_the_generation(pair: Pair, server: str) -> None:
    """The main endpoint ignores status, /status ignores spec, and metadata.generation counts spec
    changes only: what the operator's observedGeneration and its status writes rely on."""
    e: Endpoint = getattr(pair, server)
    path = GPUVMS.format(ns=pair.namespace) + "/s"
    created = e.call("POST", path.rsplit("/", 1)[0], gpuvm("s", {"vm": {"resourceId": rid()}}))
    assert created.body["metadata"]["generation"] == 1
    main = e.call("PATCH", path, {"spec": {"desiredState": "Running"}, "status": {"powerState": "Running"}}, content_type=MERGE)
    assert (main.status, main.body["spec"]["desiredState"], "status" in main.body, main.body["metadata"]["generation"]) == (
        200, "Running", False, 2)
    sub = e.call("PATCH", path + "/status", {"spec": {"desiredState": "Auto"}, "status": {"powerState": "Starting"}}, content_type=MERGE)
    assert (sub.status, sub.body["spec"]["desiredState"], sub.body["status"], sub.body["metadata"]["generation"]) == (
        200, "Running", {"powerState": "Starting"}, 2)
    labels = e.call("PATCH", path, {"metadata": {"labels": {"team": "ml"}}}, content_type=MERGE)
    assert labels.body["metadata"]["generation"] == 2
    assert int(labels.body["metadata"]["resourceVersion"]) > int(sub.body["metadata"]["resourceVersion"]) > int(
        main.body["metadata"]["resourceVersion"])


# ------------------------------------------------------------------------------ managedFields
def _api_client(e: Endpoint) -> client.ApiClient:
    if e.name == "real":
        return config.new_client_from_config(str(e.kubeconfig))
    configuration = client.Configuration()
    configuration.host = e.url
    return client.ApiClient(configuration)


def test_kubectl_apply_and_the_operators_status_writer_own_their_fields(pair: Pair, tmp_path: Path) -> None:
    """``kubectl apply`` leaves the client-side-apply manager; the operator's own status writer
    (controller.kube.StatusWriter, its User-Agent gpuvm-operator/<version>) appears as manager
    ``gpuvm-operator`` on the status subresource. Both servers record the same entries."""
    manifest = tmp_path / "g.yaml"
    manifest.write_text(yaml.safe_dump(gpuvm("m", {"vm": {"resourceId": rid()}, "desiredState": "Auto"}) | {
        "metadata": {"name": "m", "namespace": pair.namespace, "labels": {"team": "ml"}}}))
    status = {"observedGeneration": 1, "powerState": "Running",
              "conditions": [{"type": "Ready", "status": "True", "reason": "Reconciled", "message": "VM is Running",
                              "lastTransitionTime": "2026-12-08T00:00:00Z", "observedGeneration": 1}]}
    seen: dict[str, list[dict[str, Any]]] = {}
    for e in (pair.real, pair.emulator):
        # --validate=false for the emulator only: it serves no OpenAPI document for kubectl's client-side check.
        kubectl(e.kubeconfig, "apply", *(["--validate=false"] if e.name == "emulator" else []), "-f", str(manifest))
        writer = StatusWriter(_api_client(e))
        try:
            stored = asyncio.run(writer.replace_status(pair.namespace, "m", status))
        finally:
            writer.close()
        assert stored.status == status
        entries = e.call("GET", GPUVMS.format(ns=pair.namespace) + "/m").body["metadata"]["managedFields"]
        # Entries are sorted by operation, time, manager: in the same second, by manager. Times aside, by manager.
        seen[e.name] = sorted(({k: v for k, v in entry.items() if k != "time"} for entry in entries), key=lambda m: m["manager"])

    assert [(m["manager"], m["operation"], m.get("subresource", "")) for m in seen["real"]] == [
        ("gpuvm-operator", "Update", "status"), ("kubectl-client-side-apply", "Update", "")]
    last_applied = "kubectl.kubernetes.io/last-applied-configuration"
    assert seen["real"][1]["fieldsV1"] == {
        "f:metadata": {"f:annotations": {".": {}, f"f:{last_applied}": {}}, "f:labels": {".": {}, "f:team": {}}},
        "f:spec": {".": {}, "f:deletionPolicy": {}, "f:desiredState": {}, "f:driftPolicy": {}, "f:vm": {".": {}, "f:resourceId": {}}}}
    assert seen["real"][0]["fieldsV1"] == {"f:status": {".": {}, "f:conditions": {".": {}, 'k:{"type":"Ready"}': {
        ".": {}, "f:lastTransitionTime": {}, "f:message": {}, "f:observedGeneration": {}, "f:reason": {}, "f:status": {},
        "f:type": {}}}, "f:observedGeneration": {}, "f:powerState": {}}}
    assert seen["emulator"] == seen["real"]


# ------------------------------------------------------------------------------ conflicts
def test_a_write_from_a_stale_resource_version_is_a_409_conflict(pair: Pair) -> None:
    """Optimistic concurrency: a PUT or a merge patch carrying an old resourceVersion is refused
    with 409 Conflict, and a JSON patch whose ``test`` of it fails with 422 (kopf guards its
    finalizer patch that way). Same bodies from both servers."""
    for answer in pair.both("POST", GPUVMS, gpuvm("c", {"vm": {"resourceId": rid()}})).values():
        assert answer.status == 201
    old = {name: answer.body for name, answer in pair.both("GET", GPUVMS + "/c").items()}
    for answer in pair.both("PATCH", GPUVMS + "/c", {"metadata": {"labels": {"a": "b"}}}, content_type=MERGE).values():
        assert answer.status == 200
    conflict = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "Conflict", "code": 409,
                "message": 'Operation cannot be fulfilled on gpuvms.gpuvm.dev "c": the object has been modified; '
                           "please apply your changes to the latest version and try again",
                "details": {"name": "c", "group": "gpuvm.dev", "kind": "gpuvms"}}
    for e in (pair.real, pair.emulator):
        stale = copy.deepcopy(old[e.name])
        stale["spec"]["desiredState"] = "Running"
        path = GPUVMS.format(ns=pair.namespace) + "/c"
        put = e.call("PUT", path, stale)
        assert (put.status, put.body) == (409, conflict), e.name
        merge = e.call("PATCH", path, {"metadata": {"resourceVersion": stale["metadata"]["resourceVersion"]},
                                       "spec": {"desiredState": "Running"}}, content_type=MERGE)
        assert (merge.status, merge.body) == (409, conflict), e.name
        test_op = e.call("PATCH", path, [{"op": "test", "path": "/metadata/resourceVersion", "value": stale["metadata"]["resourceVersion"]},
                                         {"op": "replace", "path": "/spec/desiredState", "value": "Running"}],
                         content_type="application/json-patch+json")
        assert (test_op.status, test_op.body) == (422, {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "Invalid", "code": 422,
            "message": "the server rejected our request due to an error in our request", "details": {}}), e.name
        assert e.call("GET", path).body["spec"]["desiredState"] == "Deallocated"
