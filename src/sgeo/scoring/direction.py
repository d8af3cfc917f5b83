"""Direction answers ("N o'clock"): the hour each text gives, and whether they agree.

Success iff the hours differ by at most 1 on the 12-hour circle (the reference's rule).
"""

from __future__ import annotations

import re
from typing import Any

from .quantities import normalise_quantities

_CLOCK = re.compile(r"(?<![\d.])(\d{1,2})(?:\s*o\s*'?\s*clock|:00\b)")


def parse_clock(text: str) -> int | None:
    """The first "N o'clock" hour in `text` (digits or words, 1..12; 0 reads as 12), or None."""
    m = _CLOCK.search(normalise_quantities(text).replace("oclock", "o clock"))
    if m is None:
        return None
    hour = int(m.group(1)) or 12
    return hour if hour <= 12 else None


def score_direction(pred: str, gt: str) -> dict[str, Any]:
    """Success iff the predicted hour is within one hour of the gt's on the 12-hour circle."""
    p, g = parse_clock(pred), parse_clock(gt)
    out: dict[str, Any] = {"success": False, "error_hours": None, "pred_hour": p, "gt_hour": g}
    if p is not None and g is not None:
        diff = abs(p - g) % 12
        out["error_hours"] = min(diff, 12 - diff)
        out["success"] = out["error_hours"] <= 1
    return out
