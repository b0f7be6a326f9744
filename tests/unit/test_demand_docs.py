"""The documents say what the code does: claim reasons, phases, triggers and exit codes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from controller import claimer
from controller.demand import ClaimPhase, ClaimReason, DecidedBy
from controller.power import Trigger

ROOT = Path(__file__).parents[2]
API = (ROOT / "docs" / "api.md").read_text()
README = (ROOT / "README.md").read_text()


@pytest.mark.parametrize("reason", list(ClaimReason))
def test_every_claim_reason_is_documented(reason: ClaimReason) -> None:
    assert f"`{reason.value}`" in API
    assert f"| `{reason.value}` |" in README


def test_phases_triggers_and_decided_by_are_documented() -> None:
    for value in [*(p.value for p in ClaimPhase), *(t.value for t in Trigger), *(d.value for d in DecidedBy)]:
        assert value in API, value


def test_exit_codes_in_docs_and_help_are_the_codes() -> None:
    codes = {name: value for name, value in vars(claimer).items() if name.startswith("EXIT_")}
    table = dict(re.findall(r"^\| (\d+(?: / \d+)?) \| (.+) \|$", API, re.MULTILINE))
    documented = {int(c) for key in table for c in key.split(" / ")}
    assert documented == set(codes.values())
    for value in codes.values():
        assert re.search(rf"\b{value}\b", claimer.EPILOG), value
