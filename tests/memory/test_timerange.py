"""Time ranges in words, on a fixed clock: Wednesday 2026-11-18 15:30 in Europe/Lisbon."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from pirag.client.errors import InvalidArgument
from pirag.daemon.timerange import parse_time_range, zone_from_config

ZONE = ZoneInfo("Europe/Lisbon")
NOW = datetime(2026, 11, 18, 15, 30, tzinfo=ZONE)


def at(*parts: int, zone: ZoneInfo = ZONE) -> float:
    return datetime(*parts, tzinfo=zone).timestamp()


def span(text: str, now: datetime = NOW, zone: ZoneInfo = ZONE) -> tuple[float | None, float | None]:
    parsed = parse_time_range(text, zone=zone, now=now)
    assert parsed is not None
    return parsed.start, parsed.end


def test_clock_is_a_wednesday() -> None:
    assert NOW.strftime("%A") == "Wednesday"


@pytest.mark.parametrize("text, expected", [
    ("today", (at(2026, 11, 18), at(2026, 11, 19))),
    ("  Today ", (at(2026, 11, 18), at(2026, 11, 19))),
    ("yesterday", (at(2026, 11, 17), at(2026, 11, 18))),
    ("this week", (at(2026, 11, 16), at(2026, 11, 23))),
    ("last week", (at(2026, 11, 9), at(2026, 11, 16))),
    ("this month", (at(2026, 11, 1), at(2026, 12, 1))),
    ("last month", (at(2026, 10, 1), at(2026, 11, 1))),
    ("last year", (at(2025, 1, 1), at(2026, 1, 1))),
    ("past 3 days", (NOW.timestamp() - 3 * 86400, None)),
    ("past 2 hours", (NOW.timestamp() - 7200, None)),
    ("last 24 hours", (NOW.timestamp() - 86400, None)),
    ("2 days ago", (at(2026, 11, 16), at(2026, 11, 17))),
    ("since monday", (at(2026, 11, 16), None)),
    ("since mon", (at(2026, 11, 16), None)),
    ("since wednesday", (at(2026, 11, 18), None)),
    ("last wednesday", (at(2026, 11, 11), at(2026, 11, 12))),
    ("friday", (at(2026, 11, 13), at(2026, 11, 14))),
    ("since yesterday", (at(2026, 11, 17), None)),
    ("before 2026-11-01", (None, at(2026, 11, 1))),
    ("until 2026-11-01", (None, at(2026, 11, 2))),
    ("2026-11-01..2026-11-20", (at(2026, 11, 1), at(2026, 11, 21))),
    ("2026-11-01..", (at(2026, 11, 1), None)),
    ("..2026-11-01", (None, at(2026, 11, 2))),
    ("2026-11-01", (at(2026, 11, 1), at(2026, 11, 2))),
    ("2026-11", (at(2026, 11, 1), at(2026, 12, 1))),
    ("2026-11-01T10:00", (at(2026, 11, 1, 10), at(2026, 11, 1, 10, 1))),
    ("2026-11-01 10:00:05", (at(2026, 11, 1, 10, 0, 5), at(2026, 11, 1, 10, 0, 6))),
    ("2026-11-01T10:00Z", (at(2026, 11, 1, 10, zone=ZoneInfo("UTC")), at(2026, 11, 1, 10, 1, zone=ZoneInfo("UTC")))),
    ("2026-11-01T10:00+02:00..2026-11-01T12:00+02:00",
     (datetime.fromisoformat("2026-11-01T10:00+02:00").timestamp(),
      datetime.fromisoformat("2026-11-01T12:01+02:00").timestamp())),
])
def test_words(text: str, expected: tuple[float | None, float | None]) -> None:
    assert span(text) == expected


def test_empty_is_no_filter() -> None:
    assert parse_time_range("", zone=ZONE, now=NOW) is None
    assert parse_time_range("all", zone=ZONE, now=NOW) is None


def test_monday_on_a_monday() -> None:
    monday = datetime(2026, 11, 16, 9, tzinfo=ZONE)
    assert span("since monday", monday) == (at(2026, 11, 16), None)
    assert span("last monday", monday) == (at(2026, 11, 9), at(2026, 11, 10))
    assert span("last week", monday) == (at(2026, 11, 9), at(2026, 11, 16))


def test_last_month_in_january_and_dst_day() -> None:
    january = datetime(2027, 1, 5, 12, tzinfo=ZONE)
    assert span("last month", january) == (at(2026, 12, 1), at(2027, 1, 1))
    # Lisbon leaves summer time on 2026-10-25: that day lasts 25 hours.
    start, end = span("2026-10-25")
    assert end - start == 25 * 3600


def test_timezone_changes_the_day() -> None:
    tokyo = ZoneInfo("Asia/Tokyo")
    start, end = span("today", NOW, tokyo)  # 15:30 in Lisbon is 00:30 the next day in Tokyo
    assert start == at(2026, 11, 19, zone=tokyo) and end - start == 86400


@pytest.mark.parametrize("text", [
    "next blue moon", "2026-13-01", "2026-02-30", "past days", "since", "..", "2026-11-20..2026-11-01",
    "past -3 days", "x" * 500, "last fortnight", "2026-11-01T25:00",
])
def test_bad_ranges_are_invalid_argument(text: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_time_range(text, zone=ZONE, now=NOW)
    assert caught.value.code == "invalid_argument"
    assert "past N days" in caught.value.message


def test_zone_from_config() -> None:
    assert zone_from_config("UTC") == ZoneInfo("UTC")
    assert zone_from_config("") is not None
    with pytest.raises(ValueError, match="unknown timezone"):
        zone_from_config("Mars/Olympus")
