"""Durations as incidents spell them (Go style: ``90s``, ``15m``, ``1h30m``, ``1.5h``) and the
timestamps of an incident's status. Pure: no clock, no I/O."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

# The CRD checks the same spelling with this pattern, and the bounds with CEL.
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
MIN_DURATION = timedelta(seconds=1)
MAX_DURATION = timedelta(days=7)
MIN_DURATION_TEXT = "1s"
MAX_DURATION_TEXT = "168h"

_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_WHOLE = re.compile(DURATION_PATTERN)
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> timedelta:
    """``text`` as a timedelta, or ValueError naming the accepted spelling and bounds."""
    if not isinstance(text, str) or not _WHOLE.fullmatch(text.strip()):
        raise ValueError(
            f"duration {text!r}: expected a Go-style duration such as 90s, 15m or 1h30m (units ms, s, m, h)"
        )
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _PART.findall(text.strip()))
    value = timedelta(seconds=seconds)
    if not MIN_DURATION <= value <= MAX_DURATION:
        raise ValueError(f"duration {text!r}: must be between {MIN_DURATION_TEXT} and {MAX_DURATION_TEXT}")
    return value


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with milliseconds: ``2026-11-26T10:15:00.123Z``."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_time(text: str | None) -> datetime | None:
    """A status timestamp (any RFC 3339 the API server returns), or None when absent or bad."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def expiry(activated_at: datetime, duration: timedelta | None) -> datetime | None:
    """When an incident activated at ``activated_at`` ends: None for one without a duration.
    Rounded down to the millisecond, so the stored value and the computed one agree."""
    if duration is None:
        return None
    end = activated_at + duration
    return end.replace(microsecond=end.microsecond // 1000 * 1000)
