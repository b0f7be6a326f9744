"""What users are told when the operator has no usable Azure identity: settings, never values."""

from __future__ import annotations

import pytest

from controller.credentials import (
    CredentialConfigError,
    CredentialMode,
    CredentialSettings,
    build_credential,
    diagnose,
    precedence_warning,
)

SECRET = "s3cr3t-value-never-shown"


def test_auto_names_every_supported_identity_and_what_is_set() -> None:
    message = diagnose(CredentialMode.AUTO, {"AZURE_CLIENT_ID": "11111111-aaaa", "AZURE_CLIENT_SECRET": SECRET})
    for needed in ("azure.workload.identity/use=true", "azure.workload.identity/client-id", "AZURE_FEDERATED_TOKEN_FILE",
                   "managed identity", "AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH", "AZURE_TENANT_ID"):
        assert needed in message
    assert "AZURE_CLIENT_ID set" in message and "AZURE_TENANT_ID missing" in message
    assert SECRET not in message and "11111111" not in message
    assert "EnvironmentCredential authentication unavailable" not in message  # no raw chain dump


def test_workload_identity_says_which_variable_is_missing() -> None:
    message = diagnose(CredentialMode.WORKLOAD_IDENTITY, {"AZURE_CLIENT_ID": "x", "AZURE_FEDERATED_TOKEN_FILE": "/nope/token"})
    assert "AZURE_TENANT_ID missing" in message and "AZURE_CLIENT_ID set" in message
    assert "path does not exist" in message


def test_environment_mode_offers_secret_and_certificate() -> None:
    message = diagnose(CredentialMode.ENVIRONMENT, {"AZURE_TENANT_ID": "t"})
    assert "AZURE_CLIENT_SECRET" in message and "AZURE_CLIENT_CERTIFICATE_PATH" in message
    assert "AZURE_CLIENT_ID missing" in message


@pytest.mark.parametrize(
    ("mode", "env"),
    [
        (CredentialMode.WORKLOAD_IDENTITY, {"AZURE_CLIENT_ID": "c"}),
        (CredentialMode.ENVIRONMENT, {"AZURE_TENANT_ID": "t", "AZURE_CLIENT_ID": "c"}),
        (CredentialMode.SIMULATOR_TOKEN, {}),
    ],
)
def test_unbuildable_credentials_fail_with_the_diagnosis(mode: CredentialMode, env: dict) -> None:
    with pytest.raises(CredentialConfigError) as e:
        build_credential(CredentialSettings(mode=mode), env)
    assert str(e.value) == diagnose(mode, env)


def test_missing_certificate_file_is_named() -> None:
    env = {"AZURE_TENANT_ID": "t", "AZURE_CLIENT_ID": "c", "AZURE_CLIENT_CERTIFICATE_PATH": "/nope/sp.pem"}
    with pytest.raises(CredentialConfigError, match="/nope/sp.pem"):
        build_credential(CredentialSettings(mode=CredentialMode.ENVIRONMENT), env)


async def test_buildable_credentials(tmp_path) -> None:
    token = tmp_path / "token"
    token.write_text("jwt")
    env = {"AZURE_TENANT_ID": "t", "AZURE_CLIENT_ID": "c", "AZURE_FEDERATED_TOKEN_FILE": str(token), "AZURE_CLIENT_SECRET": SECRET}
    built = [
        build_credential(CredentialSettings(mode=CredentialMode.WORKLOAD_IDENTITY), env),
        build_credential(CredentialSettings(mode=CredentialMode.ENVIRONMENT), env),
        build_credential(CredentialSettings(mode=CredentialMode.MANAGED_IDENTITY), env),
        build_credential(CredentialSettings(mode=CredentialMode.SIMULATOR_TOKEN, simulator_token="tok"), env),
    ]
    names = [type(c).__name__ for c in built]
    assert names == ["WorkloadIdentityCredential", "ClientSecretCredential", "ManagedIdentityCredential", "AsyncStaticTokenCredential"]
    for credential in built:
        await credential.close()


def test_precedence_warning_for_a_stray_secret() -> None:
    env = {"AZURE_FEDERATED_TOKEN_FILE": "/var/run/secrets/azure/tokens/azure-identity-token", "AZURE_CLIENT_SECRET": SECRET}
    warning = precedence_warning(CredentialMode.AUTO, env)
    assert warning is not None and "uses the service principal" in warning and SECRET not in warning
    assert precedence_warning(CredentialMode.WORKLOAD_IDENTITY, env) is None
    assert precedence_warning(CredentialMode.AUTO, {"AZURE_FEDERATED_TOKEN_FILE": "/t"}) is None


async def test_a_token_file_is_read_whenever_a_token_is_asked_for(tmp_path) -> None:
    """--simulator-token-file: a rotated token takes effect on the next request for a token."""
    from azure.core.exceptions import ClientAuthenticationError

    path = tmp_path / "token"
    path.write_text("tok-1\n")
    credential = build_credential(CredentialSettings(mode=CredentialMode.SIMULATOR_TOKEN, simulator_token="tok-1",
                                                     simulator_token_file=str(path)))
    assert type(credential).__name__ == "AsyncFileTokenCredential"
    assert (await credential.get_token("scope")).token == "tok-1"
    path.write_text("tok-2")
    assert (await credential.get_token("scope")).token == "tok-2"
    assert (await credential.get_token_info("scope")).token == "tok-2"
    path.write_text("  \n")
    with pytest.raises(ClientAuthenticationError, match="is empty"):
        await credential.get_token("scope")
    path.unlink()
    with pytest.raises(ClientAuthenticationError, match="cannot read the token file") as e:
        await credential.get_token("scope")
    assert "tok-" not in str(e.value)
    await credential.close()


def test_the_token_file_setting_reaches_the_credential(tmp_path) -> None:
    from controller.config import parse_config

    path = tmp_path / "token"
    path.write_text("tok")
    config = parse_config(["--credential", "simulator-token", "--simulator-token-file", str(path)], {})
    assert config.credential.simulator_token_file == str(path)
