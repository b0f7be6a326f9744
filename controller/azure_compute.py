"""The Azure adapter: every call to the Compute SDK, and every translation of its errors.

Nothing else in the operator imports ``azure.mgmt``. Callers get ``Observation`` values or an
``AzureFailureError`` carrying a ``Failure`` whose reason and message a user can act on; SDK
exceptions, tracebacks and raw credential-chain dumps never leave this module.

Errors are classified by Azure's ``error.code`` first (the SDK's exception types are misleading:
a 409 arrives as ``ResourceExistsError``, a failed start as an ``HttpResponseError`` with status
200), then by HTTP status.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import html
import json
import logging
import random
import re
import ssl
import urllib.request
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    DecodeError,
    DeserializationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
    TooManyRedirectsError,
)
from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import AsyncHTTPPolicy, AsyncRetryPolicy
from azure.core.pipeline.transport import AioHttpTransport
from azure.core.rest import HttpRequest
from azure.identity import CredentialUnavailableError
from azure.mgmt.compute.aio import ComputeManagementClient
from azure.mgmt.core.policies import AsyncARMChallengeAuthenticationPolicy
from azure.mgmt.core.polling.async_arm_polling import AsyncARMPolling
from azure.mgmt.resource.resources.aio import ResourceManagementClient

from controller.credentials import CredentialMode, diagnose
from controller.gpuvm import VmRef
from controller.metrics import Metrics, operation_name
from controller.pacing import Kind, PacingSettings, SubscriptionPacer, current_reading
from controller.power import (
    Action,
    Observation,
    ProvisioningState,
    VmFacts,
    parse_statuses,
)
from controller.reasons import ALLOCATION_CODES, QUOTA_CODES, RESUME_CODE, SPOT_PRICE_CODES, Failure, Reason

log = logging.getLogger(__name__)

PUBLIC_ARM = "https://management.azure.com"
ROLE_NAME = "GpuVm Power Operator"
ROLE_FILE = "deploy/azure/gpuvm-power-operator.role.json"

_AUTH_CODES = frozenset(
    {
        "AuthenticationFailed",
        "InvalidAuthenticationToken",
        "InvalidAuthenticationTokenAudience",
        "InvalidAuthenticationTokenTenant",
        "ExpiredAuthenticationToken",
    }
)
_NOT_FOUND_CODES = frozenset({"ResourceNotFound", "ResourceGroupNotFound", "NotFound", "SubscriptionNotFound"})
_BUSY_CODES = frozenset({"OperationNotAllowed", "Conflict", "OperationPreempted", "RetryableError"})
_ACTION_IN_MESSAGE = re.compile(r"action '([^']+)'")
_AADSTS = re.compile(r"(AADSTS\d+:[^\r\n]*)")
_CHALLENGE_ERROR = re.compile(r'\berror="?invalid_token\b', re.I)
_HTML_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.I | re.S)
UNREADABLE = "InvalidResponse"  # the code of a failure whose answer was not what ARM sends


class _NoSdkTraceback(logging.Filter):
    """The SDK logs a WARNING with a traceback whenever an error answer is not ARM's JSON (an
    HTML 502 page from a gateway). The failure is translated and reported anyway; a traceback
    per such answer would bury the log. Kept, without the traceback, at --verbose only."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info, record.exc_text = None, None
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


for _name in ("azure.mgmt.compute._utils.model_base", "azure.mgmt.compute._utils.serialization",
              "azure.mgmt.resource.resources._utils.model_base", "azure.mgmt.resource.resources._utils.serialization"):
    logging.getLogger(_name).addFilter(_NoSdkTraceback())


class TokenRequestFailed(ClientAuthenticationError):
    """Getting a token failed for a reason other than Entra ID saying no (network, IMDS, …).

    A ClientAuthenticationError on purpose: azure-core retries neither it nor the ARM call it
    interrupts, so a broken identity shows within seconds instead of after minutes of retries.
    """


class GuardedCredential:
    """Wraps the operator's credential so every token failure is recognisably one."""

    def __init__(self, inner: AsyncTokenCredential) -> None:
        self._inner = inner

    async def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        try:
            return await self._inner.get_token(*scopes, **kwargs)
        except ClientAuthenticationError:
            raise
        except Exception as e:  # noqa: BLE001 - every failure to get a token is one
            raise TokenRequestFailed(message=_one_line(str(e) or type(e).__name__, 300)) from e

    async def close(self) -> None:
        await self._inner.close()

    async def __aenter__(self) -> "GuardedCredential":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class AzureFailureError(Exception):
    """A translated failure; ``failure`` is what status and events show."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(f"{failure.reason.value}: {failure.message}")
        self.failure = failure


def _one_line(text: str, limit: int = 400) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def classify(
    *,
    status: int | None,
    code: str | None,
    message: str,
    retry_after: float | None = None,
    vm: VmRef | None = None,
) -> Failure:
    """Azure's answer -> the reason a user sees, with a message saying what to do about it."""
    code = code or (f"HTTP{status}" if status else "Unknown")
    text = _one_line(message or code)
    if code == "AuthorizationFailed" or status == 403:
        match = _ACTION_IN_MESSAGE.search(message or "")
        action = match.group(1) if match else "the required action"
        return Failure(
            Reason.AUTHORIZATION_FAILED,
            code,
            f"the operator's Azure identity may not perform {action}. Assign the custom role "
            f"'{ROLE_NAME}' ({ROLE_FILE}) to it at the VM's resource group; it grants exactly the actions the "
            f"operator uses (built-in 'Virtual Machine Contributor' also works but can delete VMs). Azure said: {text}",
        )
    if code in _AUTH_CODES or status == 401:
        hint = (
            " The token is from another tenant than the subscription's: use an identity of that tenant."
            if code == "InvalidAuthenticationTokenTenant"
            else ""
        )
        return Failure(Reason.AUTHENTICATION_FAILED, code, f"Azure Resource Manager rejected the operator's token ({code}).{hint} Azure said: {text}")
    if code in _NOT_FOUND_CODES or status == 404:
        if code == "ResourceGroupNotFound" and vm is not None:
            what = f"resource group {vm.resource_group} does not exist in subscription {vm.subscription_id}"
        elif code == "SubscriptionNotFound" and vm is not None:
            what = f"subscription {vm.subscription_id} was not found (or the identity cannot see it)"
        elif vm is not None:
            what = f"VM {vm.name} was not found in resource group {vm.resource_group} of subscription {vm.subscription_id}"
        else:
            what = text
        return Failure(Reason.VM_NOT_FOUND, code, f"{what}; check spec.vm")
    if code in SPOT_PRICE_CODES:
        return Failure(
            Reason.SPOT_PRICE_ABOVE_MAX,
            code,
            f"the Spot price of this VM size is above the VM's max price ({code}); retrying with back-off in case "
            "it falls. Raise the max price (billingProfile.maxPrice, changeable while the VM is deallocated; -1 pays "
            f"up to the pay-as-you-go price) or use Regular priority. Azure said: {text}",
        )
    if code == RESUME_CODE:
        return Failure(
            Reason.ALLOCATION_FAILED,
            code,
            f"Azure cannot resume this hibernated VM on the capacity it needs right now ({code}); retrying with "
            "back-off. Deallocating it without hibernation (its memory is then lost) lets the next start look for "
            f"capacity without the resume's constraints. Azure said: {text}",
        )
    if code == "SkuNotAvailable":
        return Failure(
            Reason.ALLOCATION_FAILED,
            code,
            f"this VM size is not available here right now ({code}; for a Spot VM: no Spot capacity); retrying with "
            f"back-off. Another size or region, or Regular priority for a Spot VM, avoids this. Azure said: {text}",
        )
    if code in ALLOCATION_CODES:
        return Failure(
            Reason.ALLOCATION_FAILED,
            code,
            f"Azure has no capacity for this VM size right now ({code}); retrying with back-off. "
            f"A capacity reservation, another zone or another size avoids this. Azure said: {text}",
        )
    if _refuses_hibernation(code, message):
        return Failure(
            Reason.HIBERNATION_NOT_SUPPORTED,
            code,
            f"Azure refused to hibernate the VM ({code}): hibernation needs a running VM created with "
            "additionalCapabilities.hibernationEnabled (never a Spot VM) and a guest set up for it; a plain "
            f"deallocate still switches it off (spec.stopMode: Deallocate asks for that). Azure said: {text}",
        )
    if code in QUOTA_CODES and "quota" in (message or "").lower():
        return Failure(
            Reason.QUOTA_EXCEEDED,
            code,
            f"starting the VM would exceed a cores quota; request a quota increase for this VM family and region. Azure said: {text}",
        )
    if code in ("TooManyRequests", "SubscriptionRequestsThrottled") or status == 429:
        return Failure(Reason.THROTTLED, code, f"Azure throttled the request; waiting {retry_after or 'a while'} s as asked", retry_after)
    if code in _BUSY_CODES or status == 409:
        return Failure(Reason.WAITING_FOR_TRANSITION, code, f"Azure is busy with another operation on the VM: {text}")
    return Failure(Reason.AZURE_ERROR, code, f"Azure answered {status or ''} {code}: {text}".replace("  ", " "), retry_after)


def _refuses_hibernation(code: str, message: str | None) -> bool:
    """Azure will not hibernate this VM (hibernate-resume-troubleshooting): OperationNotAllowed
    naming hibernation ("…can only be triggered on a VM that is enabled for hibernation…", the
    hibernation extension failed) or VMHibernateNotSupported — but not a VM merely busy with
    another operation, which the next attempt may hibernate."""
    text = (message or "").lower()
    if code == "VMHibernateNotSupported":
        return True
    return code == "OperationNotAllowed" and "hibernat" in text and "another operation is in progress" not in text


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    if not headers:
        return None
    value = headers.get("Retry-After") or headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _unexpected_body(response: Any) -> str | None:
    """What an answer that is not ARM's JSON error was, in a few words (None when it is JSON)."""
    if response is None:
        return None
    headers = getattr(response, "headers", None) or {}
    kind = (headers.get("Content-Type") or headers.get("content-type") or "").split(";")[0].strip().lower()
    try:
        text = response.text() or ""
    except Exception:  # noqa: BLE001 - a body that cannot even be decoded
        text = ""
    if "html" in kind or text.lstrip()[:15].lower().startswith(("<!doctype html", "<html")):
        title = _HTML_TITLE.search(text)
        shown = f': "{_one_line(html.unescape(title.group(1)), 160)}"' if title else ""
        return f"an HTML page, not ARM's JSON (a proxy or gateway between the operator and ARM?){shown}"
    if not text.strip():
        return "an empty body"
    return None


def unreadable(what: str, detail: str = "") -> Failure:
    """An answer the operator cannot read: nothing in it can be trusted, so it is retried."""
    more = f" ({_one_line(detail, 160)})" if detail else ""
    return Failure(Reason.AZURE_ERROR, UNREADABLE, f"Azure Resource Manager's answer to {what} could not be read{more}; retrying")


def translate(exc: BaseException, *, mode: CredentialMode, vm: VmRef | None = None, endpoint: str = "") -> Failure:
    """Any exception from a credential or SDK call -> a Failure. Never re-raises, never a traceback."""
    if isinstance(exc, AzureFailureError):
        return exc.failure
    what = f"a request about VM {vm.name}" if vm is not None else "a request"
    if isinstance(exc, TooManyRedirectsError):
        history = getattr(exc, "history", None) or []
        return Failure(Reason.AZURE_ERROR, "TooManyRedirects",
                       f"Azure Resource Manager redirected {what} {len(history) or 'too many'} times without answering; retrying")
    if isinstance(exc, (DecodeError, json.JSONDecodeError, DeserializationError)):
        # Truncated or empty JSON: azure-core's DecodeError, or a bare JSONDecodeError from the SDK.
        return unreadable(what, "not valid JSON: cut short or empty")
    if isinstance(exc, CredentialUnavailableError):
        return Failure(Reason.AUTHENTICATION_FAILED, "CredentialUnavailable", diagnose(mode))
    if isinstance(exc, TokenRequestFailed):
        return Failure(
            Reason.AUTHENTICATION_FAILED,
            "TokenRequestFailed",
            f"could not get a token for the '{mode.value}' identity (the sign-in endpoint, not Azure Resource "
            f"Manager, failed): {exc.message}",
        )
    if isinstance(exc, ClientAuthenticationError) and getattr(exc, "response", None) is None:
        # The token request itself failed (Entra ID answered, or no credential in the chain worked).
        aad = _AADSTS.search(str(exc))
        if aad:
            return Failure(
                Reason.AUTHENTICATION_FAILED,
                "TokenRequestFailed",
                f"Microsoft Entra ID refused the '{mode.value}' credential: {_one_line(aad.group(1), 300)}",
            )
        return Failure(Reason.AUTHENTICATION_FAILED, "CredentialUnavailable", diagnose(mode))
    if isinstance(exc, HttpResponseError):
        error = getattr(exc, "error", None)
        code = getattr(error, "code", None)
        response = getattr(exc, "response", None)
        odd = None if code else _unexpected_body(response)
        message = odd or getattr(error, "message", None) or exc.message or str(exc)
        status = exc.status_code
        if status is not None and 300 <= status < 400:
            location = urlsplit((response.headers.get("Location") or "") if response is not None else "").netloc
            return Failure(Reason.AZURE_ERROR, f"HTTP{status}",
                           f"Azure Resource Manager answered {what} with a redirect ({status}"
                           f"{' to ' + location if location else ''}) instead of an answer; retrying")
        headers = response.headers if response is not None else None
        # A failed long-running operation arrives with the status call's own 200.
        return classify(status=None if status == 200 else status, code=code, message=message, retry_after=_retry_after(headers), vm=vm)
    if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
        return Failure(Reason.AZURE_ERROR, "ConnectionError", f"could not reach Azure Resource Manager at {endpoint}: {_one_line(str(exc), 200)}")
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return Failure(Reason.AZURE_ERROR, "Timeout", f"Azure did not answer in time ({endpoint})")
    return Failure(Reason.AZURE_ERROR, type(exc).__name__, _one_line(str(exc) or type(exc).__name__, 300))


def _poll_failed(exc: BaseException) -> bool:
    """The status request failed (throttled, server error, network, an answer that cannot be
    read), not the operation: only the operation's own verdict may end it as failed."""
    if isinstance(exc, (ServiceRequestError, ServiceResponseError, DecodeError, TooManyRedirectsError)):
        return True
    if isinstance(exc, (json.JSONDecodeError, DeserializationError)):
        return True  # the SDK's own, bare
    if isinstance(exc, HttpResponseError) and getattr(getattr(exc, "error", None), "code", None) is None:
        # azure-core wraps an unreadable status answer (no body, no status field) as an
        # HttpResponseError without an ARM error code: there was no verdict in it.
        cause = exc.error if isinstance(getattr(exc, "error", None), Exception) else exc.__cause__
        if cause is not None and type(cause).__name__ in ("BadResponse", "BadStatus", "DecodeError", "JSONDecodeError"):
            return True
    status = getattr(exc, "status_code", None) if isinstance(exc, HttpResponseError) else None
    return status in (408, 429, 500, 502, 503, 504)


class _OwnThrottlingRetryPolicy(AsyncRetryPolicy):
    """azure-core's retries, minus 429: throttling is paced per subscription by the operator.

    Left to azure-core, every throttled call would sleep its own Retry-After and retry blindly;
    the operator instead turns a 429 into a ``Throttled`` failure and backs off as a whole.
    """

    def is_retry(self, settings: dict[str, Any], response: Any) -> bool:
        if response.http_response.status_code == 429:
            return False
        return super().is_retry(settings, response)


class _FreshTokenOnRejection(AsyncARMChallengeAuthenticationPolicy):
    """The SDK's ARM bearer policy, plus one retry with a fresh token when ARM rejects the token.

    azure-core answers a 401 only to a CAE claims challenge; any other rejection (an expired or
    revoked token: ``error="invalid_token"``) surfaced as AuthenticationFailed until the cached
    token's lifetime ran out. Here the credential is asked once more and the request retried
    once, if that gives a different token (asking a credential that hands back its cached
    token again would only double the 401s).
    """

    def __init__(self, adapter: "AzureCompute", scope: str) -> None:
        super().__init__(adapter._credential, scope)
        self._adapter = adapter

    def on_response(self, request: PipelineRequest, response: PipelineResponse) -> None:
        self._adapter._token_answered(response.http_response.status_code)

    async def on_challenge(self, request: PipelineRequest, response: PipelineResponse) -> bool:
        if await super().on_challenge(request, response):
            return True
        challenge = response.http_response.headers.get("WWW-Authenticate") or ""
        if not challenge.lower().startswith("bearer") or _CHALLENGE_ERROR.search(challenge) is None:
            return False
        rejected = request.http_request.headers.get("Authorization")
        await self.authorize_request(request, *self._scopes)
        return request.http_request.headers.get("Authorization") != rejected


_SUBSCRIPTION_IN_PATH = re.compile(r"^/subscriptions/([^/]+)", re.I)


def _kind(operation: str) -> Kind | None:
    """Which budget a request spends; power operations took theirs in the engine's fair queue."""
    if operation == "Operations.Get":
        return Kind.POLL
    if operation in ("VirtualMachines.List", "VirtualMachines.ListAll"):
        return Kind.LIST
    if operation.startswith("Tags.") and operation != "Tags.Get":
        return Kind.WRITE
    if operation.startswith("VirtualMachines.") and operation not in ("VirtualMachines.Get", "VirtualMachines.InstanceView"):
        return None
    return Kind.READ


class _BudgetPolicy(AsyncHTTPPolicy):
    """Every HTTP attempt to ARM waits for the subscription's budget and is counted.

    It sits among the per-retry policies, so azure-core's own retries, list pages and LRO
    status polls are paced and counted too; a 429 pauses that kind of request for the whole
    subscription for Retry-After.
    """

    def __init__(self, adapter: "AzureCompute") -> None:
        super().__init__()
        self._adapter = adapter

    async def send(self, request: PipelineRequest) -> PipelineResponse:
        http = request.http_request
        path = urlsplit(http.url).path
        operation = operation_name(http.method, path)
        kind = _kind(operation)
        match = _SUBSCRIPTION_IN_PATH.search(path)
        pacer = self._adapter.pacer(match.group(1).lower()) if match else None
        if pacer is not None and kind is not None:
            await pacer.take(kind)
        try:
            response = await self.next.send(request)
        except Exception:
            self._adapter.count(operation, "error")
            raise
        status = response.http_response.status_code
        self._adapter.count(operation, str(status))
        if kind in (Kind.READ, Kind.LIST, Kind.POLL):
            self._adapter.count_read(current_reading(kind)[1])
        if status == 429 and pacer is not None:
            pacer.throttled(kind or Kind.WRITE, _retry_after(response.http_response.headers))
        return response


@dataclass(frozen=True)
class AzureSettings:
    endpoint: str = PUBLIC_ARM
    credential_scope: str | None = None  # default: <endpoint>/.default
    ca_bundle: str | None = None
    credential_mode: CredentialMode = CredentialMode.AUTO
    polling_interval: float = 10.0  # LRO status polls; Azure's Retry-After overrides it
    request_timeout: float = 30.0
    operation_timeout: float = 1800.0  # a start that has not finished in 30 min is reported, not awaited forever
    retry_total: int = 3
    pacing: PacingSettings = PacingSettings()
    connections: int = 32  # kept-alive HTTPS connections to ARM, shared by every client

    @property
    def scope(self) -> str:
        return self.credential_scope or f"{self.endpoint.rstrip('/')}/.default"


# The Compute API version of azure-mgmt-compute's own calls (39.x), for the pages read as JSON.
COMPUTE_API_VERSION = "2026-04-01"
SUBSCRIPTIONS_API_VERSION = "2022-12-01"
_NO_SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
_MAX_GRANTS = 1000  # role assignments at one scope: far more than any identity has


@dataclass(frozen=True)
class Grant:
    """One role assignment's permissions at a scope: an action is granted when it matches one of
    ``actions`` and none of ``not_actions`` (wildcards, case-insensitive), as Azure evaluates them."""

    actions: tuple[str, ...]
    not_actions: tuple[str, ...] = ()
_MAX_PAGES = 10_000  # a walk is bounded: 10,000 pages are 10 million VMs at ARM's page size


def vm_facts(vm: Mapping[str, Any], *, full: bool = True) -> VmFacts:
    """What does not change with power, from a VM as ARM sends it. ``full``: the whole model (a
    GET, a plain list page), not a statusOnly page, which lacks the size and capabilities.
    Malformed values (a proxy's or a broken endpoint's) read as unknown, never as a crash."""
    properties = _mapping(vm.get("properties"))
    capabilities = properties.get("additionalCapabilities")
    hibernation = capabilities.get("hibernationEnabled") if isinstance(capabilities, Mapping) else None
    return VmFacts(
        resource_id=_text(vm.get("id")),
        name=_text(vm.get("name")),
        vm_id=_text(properties.get("vmId")),
        size=_text(_mapping(properties.get("hardwareProfile")).get("vmSize")),
        location=_text(vm.get("location")),
        priority=_text(properties.get("priority")),
        # A VM created without the capability carries no additionalCapabilities at all.
        hibernation_enabled=bool(hibernation) if full else None,
    )


def observation_from_rest(vm: Mapping[str, Any], *, now: dt.datetime, source: str) -> Observation:
    """Build an Observation from a VM as ARM sends it (GET with instanceView, or a list page item).

    Plain JSON rather than SDK models: a walk reads every VM of a subscription twice a second
    while operations run, and building models for those pages was the largest share of the
    operator's CPU in a 1,000-start burst (17 % of a py-spy profile).
    """
    properties = _mapping(vm.get("properties"))  # absent, or anything but an object: nothing known
    statuses = _mapping(properties.get("instanceView")).get("statuses")
    statuses = [s for s in statuses if isinstance(s, Mapping)] if isinstance(statuses, list) else []
    parsed = parse_statuses(code if isinstance(code := s.get("code"), str) else None for s in statuses)
    failure = None
    if parsed.provisioning_state is ProvisioningState.FAILED and parsed.provisioning_error:
        detail = next((s.get("message") or s.get("displayStatus") for s in statuses
                       if str(s.get("code") or "").lower().startswith("provisioningstate/failed")), "")
        failure = classify(status=None, code=parsed.provisioning_error, message=str(detail or parsed.provisioning_error))
    tags = vm.get("tags")
    return Observation(
        power_state=parsed.power_state,
        provisioning_state=parsed.provisioning_state,
        observed_at=now,
        facts=vm_facts(vm, full=source == "get"),
        tags=({str(k): str(v) for k, v in tags.items()} if isinstance(tags, Mapping) else {}) if source == "get" else None,
        provisioning_failure=failure,
        source=source,
        power_code=parsed.unknown_power_code,
    )


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _text(value: Any) -> str | None:
    """A string field as ARM sends it; anything else (null, a number, an object) is not known."""
    return value if isinstance(value, str) and value else None


class AzureCompute:
    """One long-lived adapter per operator: clients per subscription over one credential."""

    def __init__(
        self,
        credential: AsyncTokenCredential,
        settings: AzureSettings,
        *,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc),
        metrics: Metrics | None = None,
    ) -> None:
        self._credential = GuardedCredential(credential)
        self.settings = settings
        self._clock = clock
        self.metrics = metrics
        self._clients: dict[str, ComputeManagementClient] = {}
        self._tag_clients: dict[str, ResourceManagementClient] = {}
        self._pacers: dict[str, SubscriptionPacer] = {}
        self._session: aiohttp.ClientSession | None = None
        self._transport: AioHttpTransport | None = None
        self._token_refused = False
        # Called when ARM accepts a token again after refusing one (an expiry, then a rotation):
        # what failed on the old token need not wait out its --denied-retry.
        self.on_token_renewed: Callable[[], None] | None = None

    def _token_answered(self, status: int) -> None:
        """Every ARM answer, for the authentication state: a 401 refuses the token, anything
        else means ARM got past authentication with it."""
        if status == 401:
            self._token_refused = True
        elif self._token_refused:
            self._token_refused = False
            log.info("Azure Resource Manager accepts the operator's token again")
            if self.on_token_renewed is not None:
                self.on_token_renewed()

    def pacer(self, subscription_id: str) -> SubscriptionPacer:
        """The request budget of one subscription (created on first use, on the running loop)."""
        pacer = self._pacers.get(subscription_id)
        if pacer is None:
            on_wait = (lambda kind, s: self.metrics.throttle_wait.labels(kind.value).inc(s)) if self.metrics else None
            pacer = self._pacers[subscription_id] = SubscriptionPacer(self.settings.pacing, on_wait=on_wait)
        return pacer

    def count(self, operation: str, code: str) -> None:
        if self.metrics is not None:
            self.metrics.azure_requests.labels(operation, code).inc()

    def count_read(self, purpose: str) -> None:
        if self.metrics is not None:
            self.metrics.azure_reads.labels(purpose).inc()

    def _shared_transport(self) -> AioHttpTransport:
        """One connection pool with one TLS context for every client and subscription.

        Left to itself, azure-core builds a new SSLContext for every request when given a CA
        file, and aiohttp pools connections per SSLContext: each request then paid a fresh TLS
        handshake and left a connection with a 256 KiB buffer behind (about 150 MiB and a busy
        core for a thousand GpuVms). A connector that owns the context, and verify=True in the
        clients, keeps a bounded set of connections alive and reuses them.

        ``trust_env`` (HTTPS_PROXY/NO_PROXY, as the SDK's own transport honours them) costs two
        thread-pool hops per request in aiohttp (proxy and .netrc lookups, the file read each
        time): 1,000 starts were sent in 7.7-7.9 s without them against 8.8 s with them. It is on
        only when the environment names a proxy at all.
        """
        if self._transport is None:
            context = ssl.create_default_context(cafile=self.settings.ca_bundle)
            connector = aiohttp.TCPConnector(ssl=context, limit=self.settings.connections)
            self._session = aiohttp.ClientSession(
                connector=connector, trust_env=bool(urllib.request.getproxies()), cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
            )
            self._transport = AioHttpTransport(session=self._session, session_owner=False)
        return self._transport

    def _options(self) -> dict[str, Any]:
        s = self.settings
        return dict(
            base_url=s.endpoint,
            credential_scopes=[s.scope],
            transport=self._shared_transport(),
            connection_verify=True,  # the shared connector verifies against the CA bundle
            polling_interval=s.polling_interval,
            retry_policy=_OwnThrottlingRetryPolicy(retry_total=s.retry_total, retry_backoff_max=10),
            authentication_policy=_FreshTokenOnRejection(self, s.scope),
            per_retry_policies=[_BudgetPolicy(self)],
            connection_timeout=min(10.0, s.request_timeout),
            read_timeout=s.request_timeout,
            logging_enable=False,
        )

    def _client(self, subscription_id: str) -> ComputeManagementClient:
        client = self._clients.get(subscription_id)
        if client is None:
            client = self._clients[subscription_id] = ComputeManagementClient(self._credential, subscription_id, **self._options())
        return client

    def _tags(self, subscription_id: str) -> Any:
        """The Tags API: writing one tag needs only Microsoft.Resources/tags/write, not VM write."""
        client = self._tag_clients.get(subscription_id)
        if client is None:
            client = self._tag_clients[subscription_id] = ResourceManagementClient(self._credential, subscription_id, **self._options())
        return client.tags

    def _fail(self, exc: BaseException, vm: VmRef | None = None) -> AzureFailureError:
        failure = translate(exc, mode=self.settings.credential_mode, vm=vm, endpoint=self.settings.endpoint)
        log.debug("Azure call failed: %s %s", failure.reason.value, failure.code)
        return AzureFailureError(failure)

    async def check_credential(self) -> dt.datetime:
        """Acquire one token for the ARM scope; returns its expiry. Raises AzureFailureError."""
        try:
            token = await self._credential.get_token(self.settings.scope)
        except Exception as exc:  # noqa: BLE001 - every credential failure is translated
            raise self._fail(exc) from None
        return dt.datetime.fromtimestamp(token.expires_on, dt.timezone.utc)

    async def observe(self, vm: VmRef) -> Observation:
        """GET the VM with its instance view: power, provisioning, facts and tags in one read."""
        try:
            model = await self._client(vm.subscription_id).virtual_machines.get(
                vm.resource_group, vm.name, expand="instanceView"
            )
        except Exception as exc:  # noqa: BLE001
            raise self._fail(exc, vm) from None
        if model is None:  # a 200 without a body: the SDK hands back nothing
            raise AzureFailureError(unreadable(f"a request about VM {vm.name}", "an empty body"))
        return observation_from_rest(model.as_dict(), now=self._clock(), source="get")

    async def _vm_page(
        self, subscription_id: str, resource_group: str | None, next_link: str | None, *, status_only: bool
    ) -> tuple[list[Mapping[str, Any]], str | None]:
        """One page of a subscription's (or resource group's) VMs as ARM sends it, and where the
        next page starts (None after the last).

        The request goes through the client's pipeline (credential, retries, the budget policy)
        as the SDK's own ``list_all`` sends it; the page is read as JSON, not as SDK models
        (see observation_from_rest). Errors are raised untranslated, for the caller's ``_fail``.
        """
        if next_link:
            request = HttpRequest("GET", next_link)
        else:
            scope = f"/subscriptions/{subscription_id}" + (f"/resourceGroups/{resource_group}" if resource_group else "")
            params = {"api-version": COMPUTE_API_VERSION, **({"statusOnly": "true"} if status_only else {})}
            request = HttpRequest("GET", f"{scope}/providers/Microsoft.Compute/virtualMachines", params=params)
        response = await self._client(subscription_id).send_request(request)
        response.raise_for_status()
        page = response.json()
        values = page.get("value") if isinstance(page, Mapping) else None
        if not isinstance(values, list):
            raise AzureFailureError(unreadable("a page of the VM list", "no list of VMs in it"))
        items = [item for item in values if isinstance(item, Mapping) and isinstance(item.get("id"), str)]
        next_link = page.get("nextLink")
        return items, next_link if isinstance(next_link, str) and next_link else None

    async def list_observations(
        self, subscription_id: str, resource_group: str | None = None
    ) -> AsyncIterator[tuple[str, Observation, int]]:
        """Every VM of a subscription (or of one resource group, for identities that can only
        read those) with its power state and the number of the page it came on (from 1): one
        request per page thanks to statusOnly."""
        next_link: str | None = None
        try:
            for page in range(1, _MAX_PAGES + 1):
                items, next_link = await self._vm_page(subscription_id, resource_group, next_link, status_only=True)
                now = self._clock()
                for item in items:
                    yield str(item["id"]).lower(), observation_from_rest(item, now=now, source="list"), page
                if next_link is None:
                    return
        except Exception as exc:  # noqa: BLE001
            raise self._fail(exc) from None
        where = f"resource group {resource_group}" if resource_group else f"subscription {subscription_id}"
        raise self._fail(RuntimeError(f"more than {_MAX_PAGES} pages of VMs in {where}; the walk stopped there"))

    async def list_tags_page(
        self, subscription_id: str, resource_group: str | None, continuation: str | None
    ) -> tuple[dict[str, tuple[dict[str, str], VmFacts]], str | None]:
        """One page of the VMs of a subscription (or resource group) with their tags and facts
        (size, vmId, location) — statusOnly pages lack both — and where the next page starts
        (None after the last)."""
        try:
            items, next_link = await self._vm_page(subscription_id, resource_group, continuation, status_only=False)
        except Exception as exc:  # noqa: BLE001
            raise self._fail(exc) from None
        return {str(item["id"]).lower(): (dict(item.get("tags") or {}), vm_facts(item)) for item in items}, next_link

    async def begin(self, vm: VmRef, action: Action, *, hibernate: bool = False) -> Any:
        """Send the power operation; returns the poller once Azure accepted it (202).

        ``hibernate`` makes a deallocate ``deallocate?hibernate=true``. Azure refuses it at once
        for a VM without the capability (a Failure with reason HibernationNotSupported): the
        caller may then deallocate without it.
        """
        operations = self._client(vm.subscription_id).virtual_machines
        if hibernate and action is not Action.DEALLOCATE:
            raise ValueError("only a deallocate can hibernate")
        polling = self._polling()
        try:
            if action is Action.START:
                poller = await operations.begin_start(vm.resource_group, vm.name, polling=polling)
            elif hibernate:
                poller = await operations.begin_deallocate(vm.resource_group, vm.name, hibernate=True, polling=polling)
            else:
                poller = await operations.begin_deallocate(vm.resource_group, vm.name, polling=polling)
        except Exception as exc:  # noqa: BLE001
            raise self._fail(exc, vm) from None
        if str(poller.status()).lower() != "inprogress":
            # ARM accepts a power operation with 202 and an operation to follow. An answer the SDK
            # takes as "done" at once (a 200 without a body from a proxy) proves nothing: say so,
            # and let the next observation tell where the VM is, instead of assuming its target.
            raise AzureFailureError(unreadable(f"the {action.verb} request of VM {vm.name}", "no operation to follow"))
        return poller

    def _polling(self) -> AsyncARMPolling:
        """How an accepted power operation is followed: its Azure-AsyncOperation status, and no more.

        Compute answers a start or deallocate with both Azure-AsyncOperation and Location. The
        SDK's default polling GETs the Location once more after the status said Succeeded, for a
        result that is empty for these POSTs: an ARM read per operation for nothing (100 flips
        at once spent a third of their poll budget on them). ``final-state-via:
        azure-async-operation`` makes the operation's own status the end.
        """
        return AsyncARMPolling(self.settings.polling_interval, lro_options={"final-state-via": "azure-async-operation"},
                               path_format_arguments={"endpoint": self.settings.endpoint})

    async def finish(self, poller: Any, vm: VmRef, action: Action) -> None:
        """Follow an accepted operation to its end (bounded); raises AzureFailureError if it failed.

        A status poll that fails on its own (429, 5xx, a dropped connection) says nothing about
        the operation: polling resumes from the poller's continuation token after a pause, so
        only the operation's own verdict ever ends it as failed.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.operation_timeout
        operations = self._client(vm.subscription_id).virtual_machines
        resume = operations.begin_start if action is Action.START else operations.begin_deallocate
        pause = 1.0
        while True:
            try:
                await asyncio.wait_for(poller.result(), timeout=max(0.0, deadline - loop.time()))
                return
            except Exception as exc:  # noqa: BLE001
                if not _poll_failed(exc) or loop.time() + pause >= deadline:
                    raise self._fail(exc, vm) from None
                retry_after = _retry_after(getattr(getattr(exc, "response", None), "headers", None))
                log.debug("status poll for %s failed (%s); resuming", vm.name, type(exc).__name__)
            # Jittered and growing: a thousand pollers throttled together must not return together.
            await asyncio.sleep(max(retry_after or 0.0, pause) * (1 + random.random()))
            pause = min(pause * 2, 60.0)
            poller = await resume(vm.resource_group, vm.name, continuation_token=poller.continuation_token(),
                                  polling=self._polling())

    async def update_tags(self, vm: VmRef, operation: str, tags: Mapping[str, str]) -> dict[str, str]:
        """Merge or Delete tags on the VM through the Tags API; returns the VM's tags after it."""
        body = {"operation": operation, "properties": {"tags": dict(tags)}}
        try:
            poller = await self._tags(vm.subscription_id).begin_update_at_scope(vm.resource_id, body)
            result = await asyncio.wait_for(poller.result(), timeout=self.settings.request_timeout * 2)
        except Exception as exc:  # noqa: BLE001
            raise self._fail(exc, vm) from None
        properties = getattr(result, "properties", None)
        return dict(getattr(properties, "tags", None) or {})

    async def read_tags(self, vm: VmRef) -> dict[str, str]:
        try:
            result = await self._tags(vm.subscription_id).get_at_scope(vm.resource_id)
        except Exception as exc:  # noqa: BLE001
            raise self._fail(exc, vm) from None
        properties = getattr(result, "properties", None)
        return dict(getattr(properties, "tags", None) or {})

    # ---- what `gpuvm-operator check` asks besides the operator's own calls ----

    async def list_subscriptions(self) -> list[str]:
        """The subscriptions ARM shows this identity (Subscriptions - List, tenant level, no
        action needed): proves the endpoint answers and takes the token. First page only."""
        # A tenant-level request needs a pipeline (credential, retries, transport), not a
        # subscription: any subscription's client has that pipeline.
        client = self._client(_NO_SUBSCRIPTION)
        request = HttpRequest("GET", "/subscriptions", params={"api-version": SUBSCRIPTIONS_API_VERSION})
        try:
            response = await client.send_request(request)
            response.raise_for_status()
        except Exception as exc:  # noqa: BLE001
            raise self._fail(exc) from None
        return [str(s.get("subscriptionId")) for s in response.json().get("value") or [] if isinstance(s, Mapping)]

    async def permissions_at(self, subscription_id: str, resource_group: str) -> list[Grant]:
        """The identity's effective permissions at a resource group, one Grant per role
        assignment (Permissions - List For Resource Group; needs Microsoft.Authorization/permissions/read)."""
        from azure.mgmt.authorization.aio import AuthorizationManagementClient  # only `check` needs it

        grants: list[Grant] = []
        try:
            async with AuthorizationManagementClient(self._credential, subscription_id, **self._options()) as client:
                async for permission in client.permissions.list_for_resource_group(resource_group):
                    grants.append(Grant(tuple(permission.actions or ()), tuple(permission.not_actions or ())))
                    if len(grants) >= _MAX_GRANTS:
                        break
        except Exception as exc:  # noqa: BLE001
            raise self._fail(exc) from None
        return grants

    async def close(self) -> None:
        for client in [*self._clients.values(), *self._tag_clients.values()]:
            await client.close()
        self._clients.clear()
        self._tag_clients.clear()
        if self._session is not None:
            await self._session.close()
            self._session, self._transport = None, None
        await self._credential.close()
