"""How the benchmark report writes numbers (shared by report.py and notes.py)."""

from __future__ import annotations

import math


def _ms(v: float | None) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else (f"{v:.1f} ms" if v < 1000 else f"{v / 1000:.2f} s")


def _s(v: float | None) -> str:
    return "—" if v is None else f"{v:.1f} s"
