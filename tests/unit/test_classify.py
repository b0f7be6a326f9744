"""Azure error codes -> reasons users act on. The adapter's translation table, rule by rule."""

from __future__ import annotations

import pytest

from controller.azure_compute import ROLE_NAME, classify
from controller.gpuvm import VmRef
from controller.power import PowerState
from controller.reasons import CAPACITY_REASONS, Reason, capacity_reason

VM = VmRef("3f2c1a7e-0d4b-4c52-9a51-6f0e1d2c3b4a", "rg-gpu", "vm-a100")
AUTHZ = (
    "The client 'c0ffee' with object id 'c0ffee' does not have authorization to perform action "
    "'Microsoft.Compute/virtualMachines/start/action' over scope '/subscriptions/x/resourceGroups/rg-gpu/providers/"
    "Microsoft.Compute/virtualMachines/vm-a100' or the scope is invalid."
)


def test_authorization_names_the_action_and_the_role() -> None:
    f = classify(status=403, code="AuthorizationFailed", message=AUTHZ, vm=VM)
    assert f.reason is Reason.AUTHORIZATION_FAILED and f.code == "AuthorizationFailed"
    assert "Microsoft.Compute/virtualMachines/start/action" in f.message
    assert ROLE_NAME in f.message and "resource group" in f.message


@pytest.mark.parametrize(
    ("code", "fragment"),
    [
        ("ResourceNotFound", "VM vm-a100 was not found in resource group rg-gpu"),
        ("ResourceGroupNotFound", "resource group rg-gpu does not exist"),
        ("SubscriptionNotFound", "subscription 3f2c1a7e-0d4b-4c52-9a51-6f0e1d2c3b4a was not found"),
    ],
)
def test_not_found(code: str, fragment: str) -> None:
    f = classify(status=404, code=code, message="…", vm=VM)
    assert f.reason is Reason.VM_NOT_FOUND and fragment in f.message and "spec.vm" in f.message


@pytest.mark.parametrize("code", ["AllocationFailed", "ZonalAllocationFailed", "OverconstrainedAllocationRequest", "OverconstrainedZonalAllocationRequest"])
def test_capacity_codes(code: str) -> None:
    f = classify(status=None, code=code, message="Allocation failed. We do not have sufficient capacity")
    assert f.reason is Reason.ALLOCATION_FAILED and f.code == code and "back-off" in f.message


@pytest.mark.parametrize(
    ("code", "reason", "fragments"),
    [
        ("SpotPriceGreaterThanProvidedMaxPrice", Reason.SPOT_PRICE_ABOVE_MAX, ["Raise the max price", "Regular priority"]),
        ("SkuNotAvailable", Reason.ALLOCATION_FAILED, ["no Spot capacity", "Regular priority", "Another size"]),
        ("OverconstrainedResumeFromHibernatedStateAllocationRequest", Reason.ALLOCATION_FAILED, ["resume this hibernated VM"]),
        ("AllocationFailed", Reason.ALLOCATION_FAILED, ["capacity reservation"]),
    ],
)
def test_spot_and_resume_codes_are_capacity_reasons_with_their_own_fix(code: str, reason: Reason, fragments: list[str]) -> None:
    f = classify(status=None, code=code, message="Azure's text")
    assert (f.reason, f.code) == (reason, code) and f.reason in CAPACITY_REASONS
    assert "back-off" in f.message and f.message.endswith("Azure said: Azure's text")
    assert all(fragment in f.message for fragment in fragments)
    assert capacity_reason(code) is reason  # what decide shows while the back-off runs


# Azure's wording (hibernate-resume-troubleshooting), and what the simulator answers.
@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("OperationNotAllowed", "The Hibernate-Deallocate Operation can only be triggered on a VM that is enabled for "
                                "hibernation. Enable the property additionalCapabilities.hibernationEnabled during VM creation."),
        ("OperationNotAllowed", "The Hibernate-Deallocate Operation can only be triggered on a VM that is successfully "
                                "provisioned and is running."),
        ("OperationNotAllowed", "Operation 'HibernateAndDeallocate' isn't allowed on VM 'Z0000ZYH000' since VM has "
                                "extension 'AzureHibernateExtension' in failed state"),
        ("VMHibernateNotSupported", "The VM 'Z0000ZYJ000' doesn't support hibernation."),
    ],
)
def test_hibernation_refusals_are_recognisable(code: str, message: str) -> None:
    f = classify(status=409, code=code, message=message)
    assert (f.reason, f.code) == (Reason.HIBERNATION_NOT_SUPPORTED, code)
    assert "hibernationEnabled" in f.message and "spec.stopMode: Deallocate" in f.message
    assert f.reason not in CAPACITY_REASONS


@pytest.mark.parametrize(
    "message",
    [
        "Operation 'HibernateAndDeallocate' is not allowed on VM 'vm-a100' since another operation is in progress.",
        "Operation 'deallocate' is not allowed on VM 'vm-a100' since another operation is in progress.",
    ],
)
def test_a_busy_vm_is_a_wait_even_when_hibernating(message: str) -> None:
    assert classify(status=409, code="OperationNotAllowed", message=message).reason is Reason.WAITING_FOR_TRANSITION


def test_hibernation_failures_that_pass_are_azure_errors() -> None:
    f = classify(status=None, code="VMHibernateFailed", message="Hibernating the VM failed due to an internal error. Retry later.")
    assert f.reason is Reason.AZURE_ERROR


def test_quota_is_not_a_conflict() -> None:
    f = classify(status=409, code="OperationNotAllowed", message="Operation could not be completed as it results in exceeding approved standardNCADSA100v4Family Cores quota.")
    assert f.reason is Reason.QUOTA_EXCEEDED and "quota increase" in f.message


@pytest.mark.parametrize("code", ["OperationNotAllowed", "Conflict"])
def test_operation_in_progress_is_a_wait(code: str) -> None:
    f = classify(status=409, code=code, message="Operation 'start' is not allowed since another operation is in progress.")
    assert f.reason is Reason.WAITING_FOR_TRANSITION


def test_throttling_keeps_retry_after() -> None:
    f = classify(status=429, code="TooManyRequests", message="throttled", retry_after=17.0)
    assert (f.reason, f.retry_after) == (Reason.THROTTLED, 17.0)


@pytest.mark.parametrize("code", ["AuthenticationFailed", "InvalidAuthenticationToken", "ExpiredAuthenticationToken"])
def test_arm_rejects_the_token(code: str) -> None:
    f = classify(status=401, code=code, message="Authentication failed.")
    assert f.reason is Reason.AUTHENTICATION_FAILED and code in f.message


def test_wrong_tenant_hint() -> None:
    f = classify(status=401, code="InvalidAuthenticationTokenTenant", message="wrong issuer")
    assert "another tenant" in f.message


@pytest.mark.parametrize(("status", "code"), [(500, "InternalServerError"), (503, None), (None, None)])
def test_everything_else_is_an_azure_error(status: int | None, code: str | None) -> None:
    f = classify(status=status, code=code, message="something\nspanning\nlines")
    assert f.reason is Reason.AZURE_ERROR
    assert "\n" not in f.message


@pytest.mark.parametrize(("env", "trusted"), [({}, False), ({"HTTPS_PROXY": "http://proxy.corp:3128"}, True)])
async def test_proxy_settings_are_honoured_only_when_the_environment_names_a_proxy(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], trusted: bool
) -> None:
    """trust_env costs two thread-pool hops per request in aiohttp; without a proxy it buys nothing."""
    from controller.azure_compute import AzureCompute, AzureSettings

    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    class NoCredential:
        async def get_token(self, *scopes: str, **kwargs: object) -> None:
            raise AssertionError("no token is needed to build the transport")

        async def close(self) -> None:
            pass

    azure = AzureCompute(NoCredential(), AzureSettings())  # type: ignore[arg-type]
    try:
        azure._shared_transport()
        assert azure._session is not None and azure._session.trust_env is trusted
    finally:
        await azure.close()


def test_pages_read_as_json_use_the_sdks_api_version() -> None:
    """The walk sends its own page requests; they must ask for what the SDK's list_all asks for."""
    from azure.mgmt.compute.operations._operations import build_virtual_machines_list_all_request

    from controller.azure_compute import COMPUTE_API_VERSION

    request = build_virtual_machines_list_all_request(subscription_id="s", status_only="true")
    assert f"api-version={COMPUTE_API_VERSION}" in request.url


def test_observation_from_rest_reads_status_facts_and_provisioning_failures() -> None:
    import datetime as dt

    from controller.azure_compute import observation_from_rest
    from controller.power import PowerState, ProvisioningState

    now = dt.datetime(2026, 11, 25, tzinfo=dt.timezone.utc)
    vm = {
        "id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/gpu-1",
        "name": "gpu-1", "location": "eastus", "tags": {"gpuvm-managed": "true"},
        "properties": {"vmId": "0f0e", "hardwareProfile": {"vmSize": "Standard_NC24ads_A100_v4"},
                       "instanceView": {"statuses": [
                           {"code": "ProvisioningState/failed/AllocationFailed", "message": "no capacity in eastus"},
                           {"code": "PowerState/deallocated"}]}},
    }
    got = observation_from_rest(vm, now=now, source="get")
    assert got.power_state is PowerState.DEALLOCATED and got.provisioning_state is ProvisioningState.FAILED
    assert got.facts.size == "Standard_NC24ads_A100_v4" and got.facts.vm_id == "0f0e" and got.tags == {"gpuvm-managed": "true"}
    assert got.provisioning_failure is not None and got.provisioning_failure.code == "AllocationFailed"
    assert "no capacity" in got.provisioning_failure.message
    listed = observation_from_rest({"id": vm["id"], "properties": {"instanceView": {"statuses": []}}}, now=now, source="list")
    assert listed.tags is None and listed.power_state is PowerState.UNKNOWN and listed.facts.size is None
    assert (got.facts.priority, got.facts.hibernation_enabled) == (None, False)  # neither given: Regular, no hibernation
    assert (listed.facts.priority, listed.facts.hibernation_enabled) == (None, None)  # unknown from a list page


def test_observation_from_rest_reads_hibernation_and_spot() -> None:
    import datetime as dt

    from controller.azure_compute import observation_from_rest
    from controller.power import PowerState

    now = dt.datetime(2026, 11, 25, tzinfo=dt.timezone.utc)
    statuses = [{"code": "ProvisioningState/succeeded"}, {"code": "PowerState/deallocated"},
                {"code": "HibernationState/Hibernated"}]
    vm = {"id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/gpu-1", "name": "gpu-1",
          "properties": {"additionalCapabilities": {"hibernationEnabled": True}, "instanceView": {"statuses": statuses}}}
    got = observation_from_rest(vm, now=now, source="get")
    assert got.power_state is PowerState.HIBERNATED and got.facts.hibernation_enabled is True
    spot = {"id": vm["id"], "properties": {"priority": "Spot", "evictionPolicy": "Deallocate",
                                           "additionalCapabilities": {"hibernationEnabled": False}}}
    got = observation_from_rest(spot, now=now, source="get")
    assert (got.facts.priority, got.facts.hibernation_enabled, got.power_state) == ("Spot", False, PowerState.UNKNOWN)



class _Answer:
    """Just enough of an azure-core response for HttpResponseError: what a gateway sent."""

    def __init__(self, status: int, body: str, content_type: str, reason: str = "Bad Gateway", **headers: str) -> None:
        self.status_code, self.reason, self._body = status, reason, body
        self.headers = {"Content-Type": content_type, **headers}
        self.content_type = content_type

    def text(self, encoding: str | None = None) -> str:
        return self._body

    def body(self) -> bytes:
        return self._body.encode()


def _translate(exc: BaseException):
    from controller.azure_compute import translate
    from controller.credentials import CredentialMode

    return translate(exc, mode=CredentialMode.SIMULATOR_TOKEN, vm=VM, endpoint="https://arm")


def test_an_html_error_page_is_named_as_such_with_its_title() -> None:
    from azure.core.exceptions import HttpResponseError

    page = "<!DOCTYPE html><html><head><title>502 - Bad &amp; gateway</title></head><body><h1>x</h1></body></html>"
    f = _translate(HttpResponseError(response=_Answer(502, page, "text/html")))
    assert f.reason is Reason.AZURE_ERROR and f.code == "HTTP502"
    assert 'an HTML page, not ARM\'s JSON' in f.message and '"502 - Bad & gateway"' in f.message
    assert "<" not in f.message and "\n" not in f.message
    throttled = _translate(HttpResponseError(response=_Answer(429, page, "text/html", "Too Many Requests", **{"Retry-After": "7"})))
    assert throttled.reason is Reason.THROTTLED and throttled.retry_after == 7.0  # the status still decides


def test_unreadable_answers() -> None:
    import json

    from azure.core.exceptions import DecodeError, TooManyRedirectsError

    for exc in (DecodeError("JSON is invalid: Expecting ',' delimiter"), json.JSONDecodeError("Expecting value", "", 0)):
        f = _translate(exc)
        assert (f.reason, f.code) == (Reason.AZURE_ERROR, "InvalidResponse")
        assert f.message == ("Azure Resource Manager's answer to a request about VM vm-a100 could not be read "
                             "(not valid JSON: cut short or empty); retrying")
    f = _translate(TooManyRedirectsError(history=[object()] * 31))
    assert f.code == "TooManyRedirects" and "redirected a request about VM vm-a100 31 times" in f.message


def test_a_redirect_instead_of_an_answer() -> None:
    from azure.core.exceptions import HttpResponseError

    answer = _Answer(302, "", "text/plain", "Found", Location="https://login.example.net/sign-in?x=1")
    f = _translate(HttpResponseError(response=answer))
    assert (f.reason, f.code) == (Reason.AZURE_ERROR, "HTTP302")
    assert "with a redirect (302 to login.example.net) instead of an answer" in f.message


@pytest.mark.parametrize(
    ("vm", "power"),
    [
        ({"id": "/x", "name": "vm"}, PowerState.UNKNOWN),  # no properties at all
        ({"id": "/x", "properties": "garbage"}, PowerState.UNKNOWN),
        ({"id": "/x", "properties": {"instanceView": {"statuses": "nope"}}}, PowerState.UNKNOWN),
        ({"id": "/x", "properties": {"instanceView": {"statuses": [7, None, {"code": 5}, {"code": "PowerState/running"}]}}},
         PowerState.RUNNING),
        ({"id": 5, "name": ["x"], "tags": "t", "properties": {"hardwareProfile": 3, "vmId": {}}}, PowerState.UNKNOWN),
    ],
)
def test_observation_from_any_vm_answer(vm: dict, power: PowerState) -> None:
    import datetime as dt

    from controller.azure_compute import observation_from_rest

    obs = observation_from_rest(vm, now=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), source="get")
    assert obs.power_state is power
    assert obs.facts is not None and (obs.facts.resource_id is None or isinstance(obs.facts.resource_id, str))
    assert obs.tags == {} or all(isinstance(v, str) for v in obs.tags.values())


def test_an_unknown_power_code_is_kept_for_the_message() -> None:
    import datetime as dt

    from controller.azure_compute import observation_from_rest

    vm = {"id": "/x", "properties": {"instanceView": {"statuses": [{"code": "PowerState/frozen"}]}}}
    obs = observation_from_rest(vm, now=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), source="list")
    assert obs.power_state is PowerState.UNKNOWN and obs.power_code == "PowerState/frozen"
