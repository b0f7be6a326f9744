"""A fixed bearer token as an Azure credential: ``--credential simulator-token``.

Why a credential at all: the real SDK only sends ``Authorization: Bearer …`` through its
bearer-token policy, which asks a credential for a token. Pointing the unmodified SDK at the
simulator therefore needs a credential that hands out the one token the simulator accepts.
Both the classic ``get_token`` and the newer ``get_token_info`` protocols are implemented, so
whichever one azure-core prefers works.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from azure.core.credentials import AccessToken, AccessTokenInfo
from azure.core.exceptions import ClientAuthenticationError

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

    def _read(self) -> str:
        return self._token

    async def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        return AccessToken(self._read(), int(time.time()) + _LIFETIME_S)

    async def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        return AccessTokenInfo(self._read(), int(time.time()) + _LIFETIME_S)

    async def close(self) -> None:
        pass

    async def __aenter__(self) -> "AsyncStaticTokenCredential":
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass


class AsyncFileTokenCredential(AsyncStaticTokenCredential):
    """``--simulator-token-file``: the token in a file, read each time a token is asked for.

    azure-core's bearer policy caches the token it got and asks again only near its expiry or
    after ARM refused it (401). Reading the file then, instead of once at start-up, is what lets
    a rotated token (a credential expiry in a soak, a re-mounted secret) take effect within a
    request, without a restart. The value is never logged; a file that cannot be read is a
    failed token request.
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__("")
        self._path = Path(path)

    def _read(self) -> str:
        try:
            token = self._path.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise ClientAuthenticationError(message=f"cannot read the token file {self._path}: {e.strerror}") from None
        if not token:
            raise ClientAuthenticationError(message=f"the token file {self._path} is empty")
        return token
