"""A fixed bearer token as an Azure credential: ``--credential simulator-token``.

Why a credential at all: the real SDK only sends ``Authorization: Bearer …`` through its
bearer-token policy, which asks a credential for a token. Pointing the unmodified SDK at the
simulator therefore needs a credential that hands out the one token the simulator accepts.
Both the classic ``get_token`` and the newer ``get_token_info`` protocols are implemented, so
whichever one azure-core prefers works.
"""

from __future__ import annotations

import time
from typing import Any

from azure.core.credentials import AccessToken, AccessTokenInfo

_LIFETIME_S = 3600


class StaticTokenCredential:
    """Sync credential (``azure.core.credentials.TokenCredential``) returning a fixed token."""

    def __init__(self, token: str) -> None:
        self._token = token

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        return AccessToken(self._token, int(time.time()) + _LIFETIME_S)

    def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        return AccessTokenInfo(self._token, int(time.time()) + _LIFETIME_S)

    def close(self) -> None:
        pass

    def __enter__(self) -> "StaticTokenCredential":
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class AsyncStaticTokenCredential:
    """Async credential (``azure.core.credentials_async.AsyncTokenCredential``) returning a fixed token."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        return AccessToken(self._token, int(time.time()) + _LIFETIME_S)

    async def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        return AccessTokenInfo(self._token, int(time.time()) + _LIFETIME_S)

    async def close(self) -> None:
        pass

    async def __aenter__(self) -> "AsyncStaticTokenCredential":
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass
