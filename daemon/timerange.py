"""Time ranges in words: "today", "last week", "past 3 days", "since monday", "2026-11-01..2026-11-20".

Every time filter of the memory ops (``when``) goes through ``parse_time_range``. A range is half-open,
``[start, end)`` in Unix seconds, either side may be open (None). Calendar words are interpreted in one
timezone (``memory.timezone``, default the machine's), with wall-clock arithmetic, so "today" on a day when
the clocks change is 23 or 25 hours long, as it should be. Weeks start on Monday (ISO 8601).

Accepted (case-insensitive):

- ``today``, ``yesterday``, ``tomorrow``; ``this|last|next week|month|year``; ``monday`` ... ``sunday``
  (the most recent one, today included), ``last monday`` (the one before today);
- ``past|last N minutes|hours|days|weeks|months`` (a sliding window up to now), ``N days ago`` (that day);
- ``since X`` (from the start of X on), ``before X`` (up to the start of X), ``until X`` (up to the end of X);
- ``A..B`` (from the start of A to the end of B; either side may be empty);
- ISO 8601: ``2026-11-01`` (that day), ``2026-11`` (that month), ``2026`` (that year),
  ``2026-11-01T10:00`` (that minute), ``2026-11-01 10:00:05+01:00`` (that second; an explicit offset wins).

Anything else raises ``InvalidArgument`` (wire code ``invalid_argument``) naming the text and the forms.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pirag.client.errors import InvalidArgument

FORMS = ("today, yesterday, this/last week, this/last month, past N days/hours, N days ago, since monday, "
         "before X, until X, A..B, YYYY-MM-DD, YYYY-MM, YYYY-MM-DDTHH:MM[:SS][+HH:MM]")

_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_WEEKDAY_ABBREVIATIONS = {name[:3]: name for name in _WEEKDAYS}
_UNITS = {"minute": 60, "min": 60, "hour": 3600, "hr": 3600, "h": 3600, "day": 86400, "d": 86400,
          "week": 7 * 86400, "w": 7 * 86400}
_WINDOW = re.compile(r"^(?:past|last|previous)\s+(\d+)\s*(minutes?|mins?|hours?|hrs?|h|days?|d|weeks?|w|months?)$")
_AGO = re.compile(r"^(\d+)\s*(days?|weeks?|months?)\s+ago$")
_RELATIVE = re.compile(r"^(this|last|previous|next)\s+(week|month|year)$")
_MAX_TEXT = 200


@dataclass(frozen=True)
class TimeRange:
    """A half-open interval ``[start, end)`` in Unix seconds; None means open on that side."""

    start: float | None
    end: float | None
    text: str = ""

    def contains(self, timestamp: float) -> bool:
        return (self.start is None or timestamp >= self.start) and (self.end is None or timestamp < self.end)

    def describe(self, zone: tzinfo) -> str:
        def show(value: float | None) -> str:
            return "..." if value is None else datetime.fromtimestamp(value, zone).isoformat(timespec="seconds")

        return f"[{show(self.start)}, {show(self.end)})"


def local_zone() -> tzinfo:
    """The machine's timezone as a named zone when it can be found (so DST is right), else its current offset."""
    name = os.environ.get("TZ", "").lstrip(":")
    candidates = [name] if name else []
    try:
        link = Path("/etc/localtime").resolve()
        if "zoneinfo" in link.parts:
            candidates.append("/".join(link.parts[link.parts.index("zoneinfo") + 1:]))
    except OSError:
        pass
    try:
        candidates.append(Path("/etc/timezone").read_text().strip())
    except OSError:
        pass
    for candidate in candidates:
        try:
            return ZoneInfo(candidate)
        except (ZoneInfoNotFoundError, ValueError):
            continue
    zone = datetime.now().astimezone().tzinfo
    assert zone is not None
    return zone


def zone_from_config(name: str) -> tzinfo:
    """``memory.timezone``: an IANA name ("Europe/Lisbon", "UTC"), or empty for the machine's zone."""
    if not name:
        return local_zone()
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown timezone {name!r} (use an IANA name such as 'Europe/Lisbon' or 'UTC')") from exc


def _midnight(day: date, zone: tzinfo) -> float:
    return datetime.combine(day, time(0), tzinfo=zone).timestamp()


def _day(day: date, zone: tzinfo) -> tuple[float, float]:
    return _midnight(day, zone), _midnight(day + timedelta(days=1), zone)


def _month_start(year: int, month: int) -> date:
    while month < 1:
        year, month = year - 1, month + 12
    while month > 12:
        year, month = year + 1, month - 12
    return date(year, month, 1)


def _month(year: int, month: int, zone: tzinfo) -> tuple[float, float]:
    return _midnight(_month_start(year, month), zone), _midnight(_month_start(year, month + 1), zone)


def _bad(text: str, why: str = "") -> InvalidArgument:
    reason = f" ({why})" if why else ""
    return InvalidArgument(f"cannot read the time range {text!r}{reason}; use one of: {FORMS}",
                           details={"when": text})


def _parse_iso(text: str, zone: tzinfo) -> tuple[float, float] | None:
    if re.fullmatch(r"\d{4}", text):
        year = int(text)
        return _midnight(date(year, 1, 1), zone), _midnight(date(year + 1, 1, 1), zone)
    if re.fullmatch(r"\d{4}-\d{2}", text):
        year, month = map(int, text.split("-"))
        if not 1 <= month <= 12:
            return None
        return _month(year, month, zone)
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        try:
            return _day(date.fromisoformat(text), zone)
        except ValueError:
            return None
    match = re.fullmatch(r"(\d{4}-\d{2}-\d{2})[t ](\d{2}(?::\d{2}(?::\d{2}(?:\.\d+)?)?)?)(z|[+-]\d{2}:?\d{2})?", text)
    if not match:
        return None
    clock = match.group(2)
    offset = match.group(3) or ""
    try:
        moment = datetime.fromisoformat(f"{match.group(1)}T{clock}{'+00:00' if offset == 'z' else offset}")
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    width = {2: 3600.0, 5: 60.0}.get(len(clock), 1.0)  # the precision the text gave: hour, minute or second
    start = moment.timestamp()
    return start, start + width


def _parse_point(text: str, now: datetime, zone: tzinfo) -> tuple[float, float]:
    """One period named by ``text``: (its start, its end)."""
    today = now.date()
    if text in ("now",):
        return now.timestamp(), now.timestamp()
    if text == "today":
        return _day(today, zone)
    if text == "yesterday":
        return _day(today - timedelta(days=1), zone)
    if text == "tomorrow":
        return _day(today + timedelta(days=1), zone)
    relative = _RELATIVE.match(text)
    if relative:
        which, unit = relative.groups()
        shift = {"this": 0, "last": -1, "previous": -1, "next": 1}[which]
        if unit == "week":
            monday = today - timedelta(days=today.weekday()) + timedelta(weeks=shift)
            return _midnight(monday, zone), _midnight(monday + timedelta(weeks=1), zone)
        if unit == "month":
            return _month(today.year, today.month + shift, zone)
        year = today.year + shift
        return _midnight(date(year, 1, 1), zone), _midnight(date(year + 1, 1, 1), zone)
    words = text.split()
    if words and words[-1] in _WEEKDAY_ABBREVIATIONS:
        words[-1] = _WEEKDAY_ABBREVIATIONS[words[-1]]
    if len(words) in (1, 2) and words[-1] in _WEEKDAYS and (len(words) == 1 or words[0] in ("last", "previous")):
        back = (today.weekday() - _WEEKDAYS.index(words[-1])) % 7
        if len(words) == 2 and back == 0:
            back = 7  # "last monday" on a Monday is a week ago
        return _day(today - timedelta(days=back), zone)
    ago = _AGO.match(text)
    if ago:
        count, unit = int(ago.group(1)), ago.group(2).rstrip("s")
        if unit == "month":
            start_month = _month_start(today.year, today.month - count)
            day = start_month.replace(day=min(today.day, 28))
        else:
            day = today - timedelta(days=count * (7 if unit == "week" else 1))
        return _day(day, zone)
    iso = _parse_iso(text, zone)
    if iso is not None:
        return iso
    raise _bad(text)


def parse_time_range(text: str, *, zone: tzinfo, now: datetime | float | None = None) -> TimeRange | None:
    """Read a range in words; None for an empty text (no filter). ``now`` fixes the clock (tests)."""
    original = text
    text = " ".join(text.strip().lower().split())
    if not text or text in ("all", "any", "ever", "always"):
        return None
    if len(text) > _MAX_TEXT:
        raise _bad(original[:40] + "...", "too long")
    if now is None:
        current = datetime.now(zone)
    elif isinstance(now, (int, float)):
        current = datetime.fromtimestamp(now, zone)
    else:
        current = now.astimezone(zone)
    try:
        window = _WINDOW.match(text)
        if window:
            count, unit = int(window.group(1)), window.group(2)
            if unit.startswith("month"):
                earlier = _month_start(current.year, current.month - count)
                start_day = earlier.replace(day=min(current.day, 28))
                start = datetime.combine(start_day, current.timetz().replace(tzinfo=None), tzinfo=zone).timestamp()
            else:
                key = unit.rstrip("s") if unit.rstrip("s") in _UNITS else unit
                if count > 1_000_000:
                    raise _bad(original, "too far back")
                start = current.timestamp() - count * _UNITS[key]
            return TimeRange(start, None, original)  # up to now, and whatever is logged while it is read
        for prefix in ("since ", "from ", "after "):
            if text.startswith(prefix):
                start, end = _parse_point(text[len(prefix):].strip(), current, zone)
                return TimeRange(end if prefix == "after " else start, None, original)
        if text.startswith("before "):
            start, _ = _parse_point(text[len("before "):].strip(), current, zone)
            return TimeRange(None, start, original)
        if text.startswith("until "):
            _, end = _parse_point(text[len("until "):].strip(), current, zone)
            return TimeRange(None, end, original)
        if ".." in text:
            left, _, right = text.partition("..")
            left, right = left.strip(), right.strip()
            if not left and not right:
                raise _bad(original)
            start = _parse_point(left, current, zone)[0] if left else None
            end = _parse_point(right, current, zone)[1] if right else None
            if start is not None and end is not None and end < start:
                raise _bad(original, "the end comes before the start")
            return TimeRange(start, end, original)
        start, end = _parse_point(text, current, zone)
        return TimeRange(start, end, original)
    except InvalidArgument as exc:
        if exc.details.get("when") != original:
            raise _bad(original) from exc
        raise
    except (ValueError, OverflowError) as exc:
        raise _bad(original, str(exc)) from exc
