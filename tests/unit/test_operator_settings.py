"""kopf's settings as the operator ships them, and what it logs per watch event.

The memory of a first adoption on a real API server is bounded by kopf's worker limit (issue 23):
these pin the settings that bound it; bench/adoption.py measures what they bound.
"""

from __future__ import annotations

import logging

import kopf
import pytest

from controller import operator
from controller.config import ConfigError, parse_config

FLAGS = ["--kube-server", "http://127.0.0.1:1", "--subscription-id", "00000000-0000-0000-0000-000000000001"]


def test_at_most_event_workers_objects_are_handled_at_once_and_idle_workers_leave_quickly() -> None:
    settings = kopf.OperatorSettings()
    assert settings.queueing.worker_limit is None  # kopf's default: unbounded, the cause of 2.7 GiB
    operator.apply_settings(settings, parse_config(FLAGS, {}))
    assert settings.queueing.worker_limit == 64
    assert settings.queueing.idle_timeout == operator.WORKER_IDLE < 1.0


def test_event_workers_is_a_flag_and_an_environment_variable() -> None:
    settings = kopf.OperatorSettings()
    operator.apply_settings(settings, parse_config([*FLAGS, "--event-workers", "8"], {}))
    assert settings.queueing.worker_limit == 8
    assert parse_config(FLAGS, {"GPUVM_EVENT_WORKERS": "16"}).event_workers == 16


@pytest.mark.parametrize("value", ["0", "-3"])
def test_event_workers_below_one_is_refused_with_a_readable_reason(value: str) -> None:
    with pytest.raises(ConfigError, match=f"--event-workers must be at least 1, got {value}"):
        parse_config([*FLAGS, "--event-workers", value], {})


def _emit(message: str, level: int, *, debug: bool) -> list[logging.LogRecord]:
    """Log ``message`` through kopf's object logger as kopf does; the records a handler received."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("kopf.objects")
    keep, before = Keep(level=logging.DEBUG), logger.level
    logger.addHandler(keep)
    logger.setLevel(logging.DEBUG if debug else logging.INFO)
    try:
        logger.log(level, message)
    finally:
        logger.removeHandler(keep)
        logger.setLevel(before)
    return records


@pytest.mark.parametrize("handler", ["seen", "claim_seen"])
def test_a_handled_watch_event_is_not_an_info_line(handler: str) -> None:
    line = f"Handler 'build_registry.<locals>.{handler}' succeeded."
    assert _emit(line, logging.INFO, debug=False) == []
    (shown,) = _emit(line, logging.INFO, debug=True)  # --verbose still shows it
    assert (shown.levelno, shown.levelname) == (logging.DEBUG, "DEBUG")


@pytest.mark.parametrize("line, level", [
    ("Handler 'build_registry.<locals>.release' succeeded.", logging.INFO),  # a deletion finished: acted on
    ("Handler 'build_registry.<locals>.seen' failed with an exception and will ignore it: boom", logging.ERROR),
])
def test_what_a_person_acts_on_stays_as_kopf_logs_it(line: str, level: int) -> None:
    (record,) = _emit(line, level, debug=False)
    assert record.levelno == level
