"""Answer text as the rule-based scorers compare it: lower case, one space, region tokens."""

from __future__ import annotations

import re

_REGION = re.compile(r"\bregion\s*\[?\s*(\d+)\s*\]?")


def answer_text(text: str) -> str:
    """Lower case, one space, and "Region [0]" / "region 0" written as the one token "region_0"."""
    text = str(text).lower().replace("’", "'")
    text = _REGION.sub(lambda m: f"region_{m.group(1)}", text)
    return re.sub(r"\s+", " ", text).strip()
