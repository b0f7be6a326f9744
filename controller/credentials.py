"""Which Azure identity the operator uses, and what to tell a human when it has none.

The scripts this project replaces failed with DefaultAzureCredential's wall of text listing
eight credentials nobody configured. Here a failure names the settings each supported identity
needs and which of them are present or missing — by *name* only: values (secrets, tokens, even
client ids) are never logged or written to status.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from dataclasses import dataclass

from azure.core.credentials_async import AsyncTokenCredential


class CredentialMode(str, enum.Enum):
    AUTO = "auto"  # DefaultAzureCredential
    WORKLOAD_IDENTITY = "workload-identity"
    MANAGED_IDENTITY = "managed-identity"
    ENVIRONMENT = "environment"  # service principal: secret or certificate
    SIMULATOR_TOKEN = "simulator-token"  # a fixed bearer token, for the Azure simulator only


SIMULATOR_TOKEN_ENV = "GPUVM_SIMULATOR_TOKEN"

WORKLOAD_IDENTITY_HELP = (
    "workload identity (AKS): label the pod azure.workload.identity/use=true and annotate its ServiceAccount "
    "azure.workload.identity/client-id=<client id>; the webhook then sets AZURE_CLIENT_ID, AZURE_TENANT_ID "
    "and AZURE_FEDERATED_TOKEN_FILE"
)
MANAGED_IDENTITY_HELP = (
    "managed identity: run on an Azure VM or AKS node with an identity assigned "
    "(set AZURE_CLIENT_ID to pick a user-assigned one)"
)
SECRET_HELP = "service principal with a secret: AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET"
CERTIFICATE_HELP = (
    "service principal with a certificate: AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_CERTIFICATE_PATH "
    "(and AZURE_CLIENT_CERTIFICATE_PASSWORD if the PEM/PFX is encrypted)"
)


class CredentialConfigError(Exception):
    """The selected identity cannot even be constructed from the configuration given."""


def _presence(env: Mapping[str, str], *names: str) -> str:
    """'AZURE_CLIENT_ID set, AZURE_TENANT_ID missing' — names only, never values."""
    return ", ".join(f"{n} {'set' if env.get(n) else 'missing'}" for n in names)


def diagnose(mode: CredentialMode, env: Mapping[str, str] | None = None) -> str:
    """An actionable explanation of why ``mode`` has no usable credential in this environment."""
    env = os.environ if env is None else env
    if mode is CredentialMode.WORKLOAD_IDENTITY:
        token_file = env.get("AZURE_FEDERATED_TOKEN_FILE")
        detail = _presence(env, "AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_FEDERATED_TOKEN_FILE")
        if token_file and not os.path.exists(token_file):
            detail += "; the AZURE_FEDERATED_TOKEN_FILE path does not exist"
        return f"workload identity is not usable ({detail}). Set it up: {WORKLOAD_IDENTITY_HELP}"
    if mode is CredentialMode.ENVIRONMENT:
        detail = _presence(env, "AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH")
        return f"no service principal in the environment ({detail}). Provide one of: {SECRET_HELP}; or {CERTIFICATE_HELP}"
    if mode is CredentialMode.MANAGED_IDENTITY:
        return (
            "managed identity is not available here (no Azure instance metadata endpoint answered). "
            f"Use {MANAGED_IDENTITY_HELP}, or choose another --credential"
        )
    if mode is CredentialMode.SIMULATOR_TOKEN:
        return f"--credential simulator-token needs the simulator's bearer token in {SIMULATOR_TOKEN_ENV} (or --simulator-token-file)"
    seen = _presence(
        env,
        "AZURE_CLIENT_ID",
        "AZURE_TENANT_ID",
        "AZURE_FEDERATED_TOKEN_FILE",
        "AZURE_CLIENT_SECRET",
        "AZURE_CLIENT_CERTIFICATE_PATH",
    )
    return (
        f"no Azure identity is configured ({seen}; no managed identity endpoint answered). Provide one of: "
        f"{WORKLOAD_IDENTITY_HELP} | {MANAGED_IDENTITY_HELP} | {SECRET_HELP} | {CERTIFICATE_HELP}"
    )


def precedence_warning(mode: CredentialMode, env: Mapping[str, str] | None = None) -> str | None:
    """DefaultAzureCredential tries EnvironmentCredential first: a stray secret beats Workload Identity."""
    env = os.environ if env is None else env
    if mode is CredentialMode.AUTO and env.get("AZURE_FEDERATED_TOKEN_FILE") and (
        env.get("AZURE_CLIENT_SECRET") or env.get("AZURE_CLIENT_CERTIFICATE_PATH")
    ):
        return (
            "both a service principal (AZURE_CLIENT_SECRET or AZURE_CLIENT_CERTIFICATE_PATH) and workload identity "
            "(AZURE_FEDERATED_TOKEN_FILE) are configured; --credential auto uses the service principal. "
            "Remove one, or pick explicitly with --credential workload-identity|environment"
        )
    return None


@dataclass(frozen=True)
class CredentialSettings:
    mode: CredentialMode = CredentialMode.AUTO
    authority_host: str | None = None  # sovereign clouds: e.g. https://login.microsoftonline.us
    simulator_token: str | None = None
    simulator_token_file: str | None = None  # read on every token request (rotation without restart)


def build_credential(settings: CredentialSettings, env: Mapping[str, str] | None = None) -> AsyncTokenCredential:
    """Construct the asyncio credential for ``settings.mode``; no network traffic happens here."""
    env = os.environ if env is None else env
    mode = settings.mode
    authority = {"authority": settings.authority_host} if settings.authority_host else {}
    if mode is CredentialMode.SIMULATOR_TOKEN:
        from controller.static_token import AsyncFileTokenCredential, AsyncStaticTokenCredential

        if settings.simulator_token_file:
            return AsyncFileTokenCredential(settings.simulator_token_file)
        token = settings.simulator_token or env.get(SIMULATOR_TOKEN_ENV)
        if not token:
            raise CredentialConfigError(diagnose(mode, env))
        return AsyncStaticTokenCredential(token)
    if mode is CredentialMode.WORKLOAD_IDENTITY:
        from azure.identity.aio import WorkloadIdentityCredential

        needed = ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_FEDERATED_TOKEN_FILE")
        if not all(env.get(n) for n in needed):
            raise CredentialConfigError(diagnose(mode, env))
        return WorkloadIdentityCredential(
            tenant_id=env["AZURE_TENANT_ID"],
            client_id=env["AZURE_CLIENT_ID"],
            token_file_path=env["AZURE_FEDERATED_TOKEN_FILE"],
            **authority,
        )
    if mode is CredentialMode.MANAGED_IDENTITY:
        from azure.identity.aio import ManagedIdentityCredential

        client_id = env.get("AZURE_CLIENT_ID")
        return ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()
    if mode is CredentialMode.ENVIRONMENT:
        from azure.identity.aio import CertificateCredential, ClientSecretCredential

        tenant, client = env.get("AZURE_TENANT_ID"), env.get("AZURE_CLIENT_ID")
        if tenant and client and env.get("AZURE_CLIENT_SECRET"):
            return ClientSecretCredential(tenant, client, env["AZURE_CLIENT_SECRET"], **authority)
        if tenant and client and env.get("AZURE_CLIENT_CERTIFICATE_PATH"):
            path = env["AZURE_CLIENT_CERTIFICATE_PATH"]
            if not os.path.exists(path):
                raise CredentialConfigError(f"AZURE_CLIENT_CERTIFICATE_PATH points to a file that does not exist: {path}")
            password = env.get("AZURE_CLIENT_CERTIFICATE_PASSWORD")
            return CertificateCredential(tenant, client, certificate_path=path, password=password, **authority)
        raise CredentialConfigError(diagnose(mode, env))
    from azure.identity.aio import DefaultAzureCredential

    return DefaultAzureCredential(**authority)
