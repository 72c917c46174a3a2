"""The one rule every input number of the pack is checked by, whichever node or file it comes from.

A node's widget keeps its value in range, but ComfyUI's API takes NaN, infinities, booleans (JSON true is
Python's True, which is an int) and numbers outside a widget's range. A value that is no number, a boolean,
not finite or out of range is refused with a ValueError that names the input and what is allowed.
"""
from __future__ import annotations

import math


def number(name: str, value, low: float = -math.inf, high: float = math.inf, *, low_open: bool = False,
           meaning: str = "") -> float:
    """`value` as a float where it is a finite number in [low, high] (low left out where `low_open`); else
    ValueError: "NAME must be a number in [LOW, HIGH] (MEANING), got VALUE", or "... a finite number > LOW ..."
    where the low end is open or an end is infinite."""
    inside = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
              and (value > low if low_open else value >= low) and value <= high)
    if inside:
        return float(value)
    if math.isfinite(low) and math.isfinite(high) and not low_open:
        what = f"a number in [{low:g}, {high:g}]"
    else:
        bounds = []
        if low > -math.inf:
            bounds.append(f"{'>' if low_open else '>='} {low:g}")
        if high < math.inf:
            bounds.append(f"at most {high:g}")
        what = "a finite number" + (" " + " and ".join(bounds) if bounds else "")
    raise ValueError(f"{name} must be {what}{f' ({meaning})' if meaning else ''}, got {value!r}")


def whole_number(name: str, value, low: int, high: int) -> int:
    """`value` where it is a whole number in [low, high] (not a boolean); else ValueError naming the input."""
    if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
        return value
    raise ValueError(f"{name} must be a whole number from {low} to {high}, got {value!r}")
