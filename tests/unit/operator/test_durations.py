from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from payflow.operator.durations import expiry, format_time, parse_duration, parse_time


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("15m", 900),
        ("1h30m", 5400),
        ("1.5h", 5400),
        ("2m30s", 150),
        ("1500ms", 1.5),
        ("168h", 604800),
    ],
)
def test_go_style_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "15", "15 minutes", "-5m", "1d", "m", "1h 30m", "PT15M"])
def test_bad_spelling_is_rejected_with_the_accepted_form(text: str) -> None:
    with pytest.raises(ValueError, match="Go-style duration"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["500ms", "0s", "169h", "20000m"])
def test_out_of_bounds_is_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="between 1s and 168h"):
        parse_duration(text)


def test_time_round_trip_keeps_milliseconds() -> None:
    moment = datetime(2026, 11, 26, 10, 15, 0, 123456, tzinfo=UTC)
    text = format_time(moment)
    assert text == "2026-11-26T10:15:00.123Z"
    assert parse_time(text) == moment.replace(microsecond=123000)
    assert parse_time("2026-11-26T10:15:00Z") == datetime(2026, 11, 26, 10, 15, tzinfo=UTC)
    assert parse_time(None) is None
    assert parse_time("yesterday") is None


def test_expiry_is_activation_plus_duration_to_the_millisecond() -> None:
    activated = datetime(2026, 11, 26, 10, 0, 0, 500000, tzinfo=UTC)
    assert expiry(activated, None) is None
    assert expiry(activated, timedelta(seconds=5)) == datetime(2026, 11, 26, 10, 0, 5, 500000, tzinfo=UTC)
    assert expiry(activated, timedelta(microseconds=1500)).microsecond == 501000  # type: ignore[union-attr]
