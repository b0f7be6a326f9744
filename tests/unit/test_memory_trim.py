"""The operator hands freed heap memory back to the OS (glibc's malloc_trim) now and then."""

from __future__ import annotations

import asyncio
import ctypes
import os
import platform
from pathlib import Path

import pytest

from controller import operator


def resident_bytes() -> int:
    """This process's resident set size (Linux: the second field of /proc/self/statm, in pages)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_malloc_trim_is_found_on_glibc_and_hands_freed_heap_pages_back() -> None:
    """What the operator finds is glibc's malloc_trim, shown by its effect: it hands back pages
    that free() cannot, because they lie inside the heap below a block still in use. (Its return
    value alone says little: any function returning 0 or 1 would pass a check of it.)"""
    if platform.libc_ver()[0] != "glibc":
        pytest.fail(f"this test runs where the image runs (glibc); found {platform.libc_ver()}")
    trim = operator._malloc_trim()
    assert trim is not None
    libc = ctypes.CDLL(None)
    libc.malloc.argtypes, libc.malloc.restype = [ctypes.c_size_t], ctypes.c_void_p
    libc.free.argtypes, libc.free.restype = [ctypes.c_void_p], None
    # 32 MiB in 1 KiB blocks (below the mmap threshold: from the heap); every page is written by
    # the blocks' headers, so resident. Freed, all but the last: a hole free() keeps.
    blocks = [libc.malloc(1024) for _ in range(32 * 1024)]
    assert all(blocks)
    try:
        for block in blocks[:-1]:
            libc.free(block)
        before = resident_bytes()
        assert trim(0) == 1  # 1: memory was released
        released = before - resident_bytes()
    finally:
        libc.free(blocks[-1])
    assert released >= 16 * 2**20, f"malloc_trim(0) released {released / 2**20:.1f} MiB of a 32 MiB hole"


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
