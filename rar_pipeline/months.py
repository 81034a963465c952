"""Month helpers: a month is the date of its first day (UTC)."""

from __future__ import annotations

import re
from datetime import date, datetime, timezone

_MONTH = re.compile(r"^(\d{4})-(\d{2})(?:-(\d{2}))?$", re.ASCII)  # ASCII digits only


def parse_month(text: str) -> date:
    """`YYYY-MM` or `YYYY-MM-DD` (a real calendar day) snapped to the 1st; anything else raises ValueError."""
    match = _MONTH.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not YYYY-MM or YYYY-MM-DD")
    year, month, day = int(match[1]), int(match[2]), int(match[3] or 1)
    date(year, month, day)  # raises ValueError for 2025-13 or 2025-02-30
    return date(year, month, 1)


def current_month(now: datetime | None = None) -> date:
    now = now or datetime.now(timezone.utc)
    return date(now.year, now.month, 1)


def add_months(month: date, count: int) -> date:
    index = month.year * 12 + month.month - 1 + count
    return date(index // 12, index % 12 + 1, 1)


def nightly_months(day: date, close_days: int) -> list[date]:
    """The running month, and during its first `close_days` days the previous month too (to finalise it)."""
    month = date(day.year, day.month, 1)
    return [add_months(month, -1), month] if day.day <= close_days else [month]
