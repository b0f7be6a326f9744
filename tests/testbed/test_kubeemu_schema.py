"""CRD schema behaviour: pruning, defaulting, nullable, types, limits, formats, CEL rules."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client

from tests.testbed.conftest import NOT_CHECKED, RawHttp

G, V = "test.kubeemu.dev", "v1"
W = f"/apis/{G}/{V}/namespaces/default/widgets"
NIL = ("FieldValueInvalid", "<nil>")  # CEL rules not checked (NOT_CHECKED)


def create(co: client.CustomObjectsApi, spec: dict[str, Any], name: str = "w") -> dict[str, Any]:
    return co.create_namespaced_custom_object(G, V, "default", "widgets", {
        "apiVersion": f"{G}/{V}", "kind": "Widget", "metadata": {"name": name}, "spec": spec})


def rejected(co: client.CustomObjectsApi, spec: dict[str, Any]) -> dict[str, Any]:
    with pytest.raises(client.ApiException) as e:
        create(co, spec, "bad")
    assert e.value.status == 422
    body = json.loads(e.value.body)
    assert body["reason"] == "Invalid" and body["details"]["kind"] == "Widget"
    return body


def causes(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [(c["reason"], c["field"]) for c in body["details"]["causes"]]


def test_pruning_defaulting_and_nulls(co: client.CustomObjectsApi, kube_raw: RawHttp) -> None:
    w = create(co, {"size": 2, "unknown": 1, "nested": {"keep": "k", "drop": 1}, "free": {"any": {"x": 1}, "known": 2},
                    "note": None, "nullableNote": None, "template": {"apiVersion": "v1", "kind": "Pod", "x": 1},
                    "items": [{"name": "a", "junk": True}]})
    spec = w["spec"]
    assert "unknown" not in spec and spec["nested"] == {"keep": "k", "deep": {"x": 7}}
    assert spec["free"] == {"any": {"x": 1}, "known": 2} and spec["items"] == [{"name": "a"}]
    assert "note" not in spec and spec["nullableNote"] is None
    assert spec["mode"] == "Slow" and spec["defaultedNote"] == "hello"
    assert spec["template"] == {"apiVersion": "v1", "kind": "Pod", "x": 1}
    r = kube_raw("POST", W, {"apiVersion": f"{G}/{V}", "kind": "Widget", "metadata": {"name": "x"},
                             "spec": {"size": 1, "bogus": 1}})
    assert r.status == 201 and r.headers.get("Warning") == '299 - "unknown field \\"spec.bogus\\""'
    r = kube_raw("POST", f"{W}?fieldValidation=Strict", {"apiVersion": f"{G}/{V}", "kind": "Widget",
                                                        "metadata": {"name": "y"}, "spec": {"size": 1, "bogus": 1}})
    assert r.status == 400 and r.body["reason"] == "BadRequest" and 'unknown field "spec.bogus"' in r.body["message"]


def test_enum_required_and_types(co: client.CustomObjectsApi) -> None:
    body = rejected(co, {"mode": "Turbo"})
    # Blocking errors (enum, required, type, too long, too many) keep the CEL rules from running: NIL.
    assert causes(body) == [("FieldValueNotSupported", "spec.mode"), ("FieldValueRequired", "spec.size"), NIL]
    assert body["message"] == ('Widget.test.kubeemu.dev "bad" is invalid: [spec.mode: Unsupported value: "Turbo": '
                               f'supported values: "Fast", "Slow", spec.size: Required value, <nil>: {NOT_CHECKED}]')
    body = rejected(co, {"size": "big"})
    assert causes(body) == [("FieldValueTypeInvalid", "spec.size"), NIL]
    assert body["details"]["causes"][0]["message"] == 'Invalid value: "string": spec.size in body must be of type integer: "string"'
    assert causes(rejected(co, {"size": 1.5})) == [("FieldValueTypeInvalid", "spec.size"), NIL]
    assert create(co, {"size": 2.0, "ratio": 3})["spec"]["ratio"] == 3
    assert causes(rejected(co, {"size": 1, "port": True})) == [("FieldValueTypeInvalid", "spec.port"), NIL]
    assert create(co, {"size": 1, "port": "http"}, "p1") and create(co, {"size": 1, "port": 80}, "p2")


def test_limits_pattern_format(co: client.CustomObjectsApi) -> None:
    assert causes(rejected(co, {"size": 11})) == [("FieldValueInvalid", "spec.size")]
    body = rejected(co, {"size": 0})
    assert body["details"]["causes"][0]["message"] == "Invalid value: 0: spec.size in body should be greater than or equal to 1"
    body = rejected(co, {"size": 1, "name": "abcdefghijkl"})
    assert causes(body) == [("FieldValueTooLong", "spec.name"), NIL]  # the first failure only, not the pattern too
    assert causes(rejected(co, {"size": 1, "name": "ab"})) == [("FieldValueInvalid", "spec.name")]
    assert causes(rejected(co, {"size": 1, "name": "ABC"})) == [("FieldValueInvalid", "spec.name")]
    body = rejected(co, {"size": 1, "tags": ["a", "b", "c", "d"]})
    assert causes(body) == [("FieldValueTooMany", "spec.tags"), NIL]
    assert body["details"]["causes"][0]["message"] == "Too many: 4: must have at most 3 items"
    assert causes(rejected(co, {"size": 1, "tags": []})) == [("FieldValueInvalid", "spec.tags")]
    assert causes(rejected(co, {"size": 1, "tags": ["a", "a"]})) == [("FieldValueDuplicate", "spec.tags[1]")]
    assert causes(rejected(co, {"size": 1, "labels": {"a": "1", "b": "2", "c": "3"}})) == [("FieldValueTooMany", "spec.labels"), NIL]
    assert causes(rejected(co, {"size": 1, "labels": {"a": "toolong"}})) == [("FieldValueTooLong", "spec.labels.a"), NIL]
    body = rejected(co, {"size": 1, "createdAt": "yesterday"})
    assert causes(body) == [("FieldValueTypeInvalid", "spec.createdAt"), NIL]
    assert body["details"]["causes"][0]["message"].endswith('spec.createdAt in body must be of type date-time: "yesterday"')
    assert create(co, {"size": 1, "createdAt": "2024-05-01T10:00:00Z"})
    assert causes(rejected(co, {"size": 1, "items": [{"value": 1}]})) == [("FieldValueRequired", "spec.items[0].name"), NIL]
    assert causes(rejected(co, {"size": 1, "items": [{"name": "a"}, {"name": "a"}]})) == [("FieldValueDuplicate", "spec.items[1]")]
    assert causes(rejected(co, {"size": 1, "template": {"kind": "Pod"}})) == [("FieldValueRequired", "spec.template.apiVersion"), NIL]


def test_cel_rules(co: client.CustomObjectsApi) -> None:
    body = rejected(co, {"size": 1, "replicas": 1, "minReplicas": 2})
    assert body["details"]["causes"] == [{"reason": "FieldValueInvalid", "field": "spec.minReplicas",
                                         "message": "Invalid value: minReplicas must not exceed replicas"}]
    # v1.36 shows no value for an object (or list) and none for a messageExpression's message ...
    body = rejected(co, {"size": 9})
    assert body["details"]["causes"][0]["message"] == "Invalid value: size 9 is unlucky"
    body = rejected(co, {"size": 1, "ratio": 150})
    assert causes(body) == [("FieldValueForbidden", "spec")]
    w = create(co, {"size": 1, "immutableId": "one"})
    w["spec"]["immutableId"] = "two"
    with pytest.raises(client.ApiException) as e:
        co.replace_namespaced_custom_object(G, V, "default", "widgets", "w", w)
    body = json.loads(e.value.body)
    assert e.value.status == 422 and causes(body) == [("FieldValueInvalid", "spec.immutableId")]
    assert body["details"]["causes"][0]["message"] == 'Invalid value: "two": immutableId is immutable'  # ... but a scalar's
    w["spec"]["immutableId"] = "one"
    w["spec"]["size"] = 2
    assert co.replace_namespaced_custom_object(G, V, "default", "widgets", "w", w)["spec"]["size"] == 2


def test_project_crd_cel_rule(co: client.CustomObjectsApi) -> None:
    with pytest.raises(client.ApiException) as e:
        co.create_namespaced_custom_object("gpuvm.dev", "v1alpha1", "default", "gpuvms", {
            "apiVersion": "gpuvm.dev/v1alpha1", "kind": "GpuVm", "metadata": {"name": "g"},
            "spec": {"vm": {"resourceGroup": "rg"}}})
    body = json.loads(e.value.body)
    assert e.value.status == 422 and [c["field"] for c in body["details"]["causes"]] == ["spec.vm"]
