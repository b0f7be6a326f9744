"""Reaction and completion only: ``python -m bench.reaction`` is ``python -m bench --only reaction,completion``.

The measurement itself (separate processes, one monotonic clock, the simulator's request log)
lives in bench/measure.py (``flip_once``) and bench/suite.py (world R); this entry point is kept
for those used to it. Extra arguments are passed on, e.g. ``--quick`` or ``--report PATH``.
"""

from __future__ import annotations

import sys

from bench.__main__ import main

if __name__ == "__main__":
    raise SystemExit(main(["--only", "reaction,completion", *sys.argv[1:]]))
