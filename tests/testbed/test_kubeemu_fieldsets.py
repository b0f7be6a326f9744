"""The pure core of managedFields (testbed/kubeemu/managedfields.py): comparison, FieldsV1, the update rules.

Expectations follow sigs.k8s.io/structured-merge-diff typed/compare.go, typed/tofieldset.go,
fieldpath/serialize.go and serialize-pe.go, and k8s.io/apimachinery/pkg/util/managedfields/internal.
"""

from __future__ import annotations

import pytest

from testbed.kubeemu import managedfields as mf

SCHEMA = {"type": "object", "properties": {
    "spec": {"type": "object", "properties": {
        "tags": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
        "args": {"type": "array", "items": {"type": "string"}},  # atomic: no list-type
        "items": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name", "port"],
                  "items": {"type": "object", "properties": {"name": {"type": "string"}, "port": {"type": "integer", "default": 80},
                                                              "value": {"type": "string"}}}},
        "selector": {"type": "object", "x-kubernetes-map-type": "atomic", "additionalProperties": {"type": "string"}},
        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        "port": {"x-kubernetes-int-or-string": True},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
    }},
}}


def cmp(lhs: dict, rhs: dict) -> tuple[set, set, set]:
    c = mf.compare(lhs, rhs, SCHEMA)
    return set(c.added), set(c.modified), set(c.removed)


def test_a_new_map_and_everything_in_it_is_added() -> None:
    added, modified, removed = cmp({}, {"spec": {"labels": {"a": "1"}, "port": 8080}})
    assert added == {("f:spec",), ("f:spec", "f:labels"), ("f:spec", "f:labels", "f:a"), ("f:spec", "f:port")}
    assert not modified and not removed


def test_an_existing_map_is_not_added_again_and_empty_ones_are_leaves() -> None:
    assert cmp({"spec": {}}, {"spec": {"port": 1}}) == ({("f:spec", "f:port")}, set(), set())
    assert cmp({"spec": {}}, {"spec": {}}) == (set(), set(), set())
    assert cmp({}, {"spec": {}}) == ({("f:spec",)}, set(), set())  # empty: a leaf, added as a whole
    assert cmp({"spec": None}, {"spec": {}}) == (set(), {("f:spec",)}, set())  # null and {} differ as leaves


def test_removed_subtrees_and_modified_leaves() -> None:
    added, modified, removed = cmp({"spec": {"labels": {"a": "1", "b": "2"}, "port": 1}}, {"spec": {"port": "x"}})
    assert removed == {("f:spec", "f:labels"), ("f:spec", "f:labels", "f:a"), ("f:spec", "f:labels", "f:b")}
    assert modified == {("f:spec", "f:port")} and not added


def test_list_types() -> None:
    base = {"spec": {"tags": ["a"], "args": ["x"], "items": [{"name": "n", "port": 1, "value": "v"}], "selector": {"k": "v"}}}
    new = {"spec": {"tags": ["a", "b"], "args": ["x", "y"], "items": [{"name": "n", "port": 1, "value": "w"}, {"name": "m"}],
                    "selector": {"k": "v", "l": "w"}}}
    added, modified, removed = cmp(base, new)
    m = 'k:{"name":"m","port":80}'  # a missing key field takes the schema's default
    assert added == {("f:spec", "f:tags", 'v:"b"'), ("f:spec", "f:items", m), ("f:spec", "f:items", m, "f:name")}
    assert modified == {("f:spec", "f:args"), ("f:spec", "f:items", 'k:{"name":"n","port":1}', "f:value"), ("f:spec", "f:selector")}
    assert not removed


def test_duplicate_items_are_compared_as_one() -> None:
    dup = {"spec": {"items": [{"name": "n", "port": 1}, {"name": "n", "port": 1, "value": "v"}]}}
    added, _, _ = cmp({"spec": {"items": []}}, dup)
    assert added == {("f:spec", "f:items", 'k:{"name":"n","port":1}')}


def test_deduced_fields_maps_granular_lists_atomic() -> None:
    added, modified, _ = cmp({"spec": {"free": {"a": {"b": [1]}}}}, {"spec": {"free": {"a": {"b": [2], "c": 1}}}})
    assert added == {("f:spec", "f:free", "f:a", "f:c")}
    assert modified == {("f:spec", "f:free", "f:a", "f:b")}


def test_metadata_is_object_meta() -> None:
    added, _, _ = cmp({"metadata": {}}, {"metadata": {"finalizers": ["x/y"], "ownerReferences": [
        {"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": "u1"}]}})
    assert ("f:metadata", "f:finalizers", 'v:"x/y"') in added
    assert ("f:metadata", "f:ownerReferences", 'k:{"uid":"u1"}', "f:kind") in added


def test_an_item_without_its_key_is_an_error() -> None:
    with pytest.raises(mf.FieldsError, match='omits key field "name"'):
        mf.compare({}, {"spec": {"items": [{"port": 1}]}}, SCHEMA)


def test_fields_v1_round_trip_and_normalisation() -> None:
    paths = {("f:spec",), ("f:spec", "f:a"), ("f:spec", "f:items", 'k:{"name":"n","port":1}'),
             ("f:spec", "f:items", 'k:{"name":"n","port":1}', "f:value"), ("f:metadata", "f:finalizers", 'v:"x"')}
    encoded = mf.encode(paths)
    assert encoded == {"f:metadata": {"f:finalizers": {'v:"x"': {}}},
                       "f:spec": {".": {}, "f:a": {}, "f:items": {'k:{"name":"n","port":1}': {".": {}, "f:value": {}}}}}
    assert mf.decode(encoded) == paths
    assert list(encoded["f:spec"]) == [".", "f:a", "f:items"]
    # Keys are re-serialised (sorted, compact); unknown element types are dropped; "." alone is a member.
    assert mf.decode({'k:{ "port": 1, "name": "n" }': {".": {}}, "z:what": {}, "f:x": {".": {}}}) == {
        ('k:{"name":"n","port":1}',), ("f:x",)}
    for bad in ({"spec": {}}, {"f:a": []}, {"v:{nope": {}}, {"i:x": {}}):
        with pytest.raises(mf.FieldsError):
            mf.decode(bad)
    added = mf.compare({"spec": {}}, {"spec": {"tags": ["<b>"]}}, SCHEMA).added  # jsoniter escapes HTML characters
    assert ("f:spec", "f:tags", 'v:"\\u003cb\\u003e"') in added


def test_manager_from_user_agent() -> None:
    assert mf.manager_from_user_agent("kubectl/v1.36.4 (linux/amd64) kubernetes/bb826b1") == "kubectl"
    assert mf.manager_from_user_agent("My\x07Tool\u200b/1") == "MyTool"  # unprintable runes dropped
    assert mf.manager_from_user_agent("é" * 70) == "é" * 64  # 128 bytes, never half a rune
    assert mf.manager_from_user_agent("") == ""
    assert mf.field_manager_problems("ok") == [] and mf.field_manager_problems("x" * 129) == ["too-long"]
    assert mf.field_manager_problems("a\tb") == ["invalid character U+0009 (at position 1)"]


def test_field_set_of_an_applied_configuration() -> None:
    applied = {"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "n", "labels": {"a": "1"}},
               "spec": {"items": [{"name": "n", "port": 1}], "labels": {}, "free": {"k": {"j": 1}}}}
    got = mf.field_set(applied, SCHEMA)
    assert got - mf.STRIP == {
        ("f:metadata", "f:labels", "f:a"), ("f:spec", "f:labels"),
        ("f:spec", "f:items", 'k:{"name":"n","port":1}'), ("f:spec", "f:items", 'k:{"name":"n","port":1}', "f:name"),
        ("f:spec", "f:items", 'k:{"name":"n","port":1}', "f:port"),
        ("f:spec", "f:free", "f:k"), ("f:spec", "f:free", "f:k", "f:j")}


def test_path_string() -> None:
    assert mf.path_string(("f:spec", "f:items", 'k:{"name":"n","port":1}', "f:value")) == '.spec.items[name="n",port=1].value'
    assert mf.path_string(("f:metadata", "f:finalizers", 'v:"x"')) == '.metadata.finalizers[="x"]'


WRITE = mf.Write(manager="me", api_version="x/v1", now="2026-01-01T00:00:05Z")


def test_update_rules() -> None:
    obj = {"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "n", "uid": "u"}, "spec": {"labels": {"a": "1"}}}
    created = mf.update(None, obj, WRITE, SCHEMA)
    assert created == [{"manager": "me", "operation": "Update", "apiVersion": "x/v1", "time": "2026-01-01T00:00:05Z",
                        "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {".": {}, "f:labels": {".": {}, "f:a": {}}}}}]
    live = {**obj, "metadata": {**obj["metadata"], "managedFields": created}}
    # Another manager removes the label: the creator loses it, the remover gains nothing and gets no entry.
    removed = {**live, "spec": {"labels": {}}}
    later = mf.Write(manager="other", api_version="x/v1", now="2026-01-01T00:00:09Z")
    assert mf.update(live, removed, later, SCHEMA) == [{**created[0], "fieldsV1": {"f:spec": {".": {}, "f:labels": {}}}}]
    # An update never starts tracking an object that has no managedFields.
    untracked = {**obj}
    assert mf.update(untracked, {**obj, "spec": {"port": 1}}, WRITE, SCHEMA) is None
    # A write the typed comparison cannot handle keeps the live managedFields.
    assert mf.update(live, {**live, "spec": {"items": [{"port": 1}]}}, later, SCHEMA) == created
