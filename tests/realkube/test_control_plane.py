"""The test bed's real control plane itself: it starts, serves with RBAC on, and its controllers run."""

from __future__ import annotations

import pytest
from kubernetes import client

from testbed.controlplane import ENV, AssetsMissing, assets


def test_the_api_server_answers_as_v1_36_with_rbac_enforced(control_plane, admin_api) -> None:
    version = client.VersionApi(admin_api).get_code()
    assert (version.major, version.minor) == ("1", "36")
    anonymous = client.Configuration()
    anonymous.host = control_plane.url
    anonymous.ssl_ca_cert = str(control_plane.certs / "ca.crt")
    with client.ApiClient(anonymous) as api:
        with pytest.raises(client.ApiException) as denied:
            client.CoreV1Api(api).list_namespace()
    assert denied.value.status in (401, 403)


def test_the_controller_manager_makes_service_accounts_in_new_namespaces(namespace, admin_api) -> None:
    from testbed.sandbox import wait_for

    core = client.CoreV1Api(admin_api)
    wait_for(lambda: any(sa.metadata.name == "default" for sa in core.list_namespaced_service_account(namespace).items),
             60, what=f"the default ServiceAccount of {namespace}")


def test_assets_say_what_is_missing(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    with pytest.raises(AssetsMissing, match=f"{ENV} is not set"):
        assets()
    (tmp_path / "etcd").write_text("#!/bin/sh\n")
    (tmp_path / "etcd").chmod(0o755)
    with pytest.raises(AssetsMissing, match="no kube-apiserver"):
        assets(tmp_path)
