"""An asyncio event loop on a virtual clock, for unit tests of timers.

Why: a test of a timer on the real clock ("retried 30 s later", "nothing happens meanwhile")
either sleeps for real — slow, and on a busy 2-core machine a 20 ms window proves little while a
"within 50 ms" bound flakes — or does not look at the time at all. On this loop ``loop.time()``
moves only when nothing is ready to run and the loop would otherwise block: it then jumps straight
to the next timer. So a step retried after 30 s runs at exactly t + 30 and costs no wall time, and
``await asyncio.sleep(60)`` is a window in which every task that could run has run, however
loaded the machine is: a check that nothing happened in it can fail, and fails the same way every
time.

Only for code that waits on the loop's own timers and futures. Work in threads (``to_thread``)
or on real sockets takes wall time, while the virtual clock may run ahead of it.
"""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec

P = ParamSpec("P")

START = 1000.0  # like a monotonic clock: far from 0, which some code reads as "never"


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """``time()`` is virtual: it starts at ``START`` and, whenever no callback is ready and no I/O
    is waiting, moves on to the earliest timer, which the loop's step then fires.

    The clock moves to just past the timer (the next float), and asyncio's tolerance for timers
    due "within the clock resolution" (1 ns) is off: asyncio would otherwise fire a timer while
    ``time()`` is still a hair short of it, and a callback that then finds itself early (the
    scheduler does) asks for the remaining 1e-12 s, forever, on a clock that never moves by itself.
    Here a timer fires only once the clock has reached its time, as with a real clock.
    """

    def __init__(self) -> None:
        self._virtual_now = START
        super().__init__()
        self._clock_resolution = 0.0  # asyncio's own attribute: fire a timer only when it is due

    def time(self) -> float:
        return self._virtual_now

    def _run_once(self) -> None:
        # asyncio's own attributes (stable since 3.7): the ready queue and the heap of timers;
        # cancelled timers stay in the heap until asyncio drops them, and are not "the next timer".
        if not self._ready and not self._stopping:  # type: ignore[attr-defined]
            when = min((t.when() for t in self._scheduled if not t.cancelled()), default=None)  # type: ignore[attr-defined]
            if when is not None and not self._selector.select(0):  # type: ignore[attr-defined]
                self._virtual_now = max(self._virtual_now, math.nextafter(when, math.inf))
        super()._run_once()  # type: ignore[misc]


def virtual_time(test: Callable[P, Coroutine[Any, Any, None]]) -> Callable[P, None]:
    """Run an ``async def`` test on a ``VirtualTimeLoop`` of its own (instead of pytest-asyncio's
    real-time loop): the decorated test is a plain function to pytest."""

    @functools.wraps(test)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
            runner.run(test(*args, **kwargs))

    return run
