"""The operator hands freed heap memory back to the OS (glibc's malloc_trim) now and then."""

from __future__ import annotations

import asyncio
import platform

import pytest

from controller import operator


def test_malloc_trim_is_found_on_glibc() -> None:
    if platform.libc_ver()[0] != "glibc":
        pytest.fail(f"this test runs where the image runs (glibc); found {platform.libc_ver()}")
    trim = operator._malloc_trim()
    assert trim is not None
    assert trim(0) in (0, 1)  # 1: memory was released, 0: there was none to release


async def test_the_trimmer_calls_it_periodically_off_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, bool]] = []
    twice = asyncio.Event()
    loop = asyncio.get_running_loop()

    def fake_trim(pad: int) -> int:
        calls.append((pad, _on_loop_thread(loop)))
        if len(calls) >= 2:
            loop.call_soon_threadsafe(twice.set)
        return 1

    monkeypatch.setattr(operator, "_malloc_trim", lambda: fake_trim)
    task = asyncio.create_task(operator._trim_memory(0.01))
    try:
        await asyncio.wait_for(twice.wait(), 10)
    finally:
        task.cancel()
    assert calls[:2] == [(0, False), (0, False)]


async def test_without_malloc_trim_the_trimmer_just_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(operator, "_malloc_trim", lambda: None)
    await asyncio.wait_for(operator._trim_memory(0.01), 5)


def _on_loop_thread(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
