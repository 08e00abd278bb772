"""Schedules a user writes in the catalog (``schedule:`` on a source) or the project file (``reverify_schedule``).

A schedule is a five-field cron expression and an IANA time zone. They are checked here, where the
catalog and the project file are read, so that ``cairn catalog check`` finds a typo before Dagster
does (and a bad one never stops the code location from loading: the pipeline builds schedules only
from what parsed).
"""

import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from integrity.errors import UsageError

#: (lowest, highest, names) of the five cron fields: minute, hour, day of month, month, day of week.
_FIELDS: tuple[tuple[str, int, int, tuple[str, ...]], ...] = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")),
    ("day of week", 0, 7, ("sun", "mon", "tue", "wed", "thu", "fri", "sat")),
)
_PART = re.compile(r"^(\*|[0-9a-z]+(?:-[0-9a-z]+)?)(?:/([0-9]+))?$")


@dataclass(frozen=True)
class Schedule:
    cron: str
    timezone: str = "UTC"

    def describe(self) -> str:
        return f"{self.cron} ({self.timezone})"


def _value(text: str, low: int, names: tuple[str, ...]) -> int:
    if text in names:
        return names.index(text) + (1 if low == 1 else 0)
    if not text.isdigit():
        raise ValueError(f"{text!r} is not a number")
    return int(text)


def _check_field(text: str, field: tuple[str, int, int, tuple[str, ...]]) -> None:
    name, low, high, names = field
    for part in text.lower().split(","):
        match = _PART.match(part)
        if not match:
            raise ValueError(f"the {name} field {text!r} is not *, N, N-M, a list of them, or with /STEP")
        span, step = match.groups()
        if step is not None and int(step) < 1:
            raise ValueError(f"the {name} field {text!r} has a step of 0")
        if span == "*":
            continue
        bounds = [_value(v, low, names) for v in span.split("-")]
        if any(not low <= v <= high for v in bounds) or (len(bounds) == 2 and bounds[0] > bounds[1]):
            raise ValueError(f"the {name} field {text!r} is outside {low}-{high}")


def parse_schedule(cron: object, timezone: object = "UTC", *, where: str) -> Schedule:
    """A checked schedule; a usage error (exit 2) naming ``where`` and what is wrong otherwise."""
    if not isinstance(cron, str) or not isinstance(timezone, str):
        raise UsageError(f"{where}: a schedule is a cron string (and a time zone name)")
    fields = cron.split()
    if len(fields) != 5:
        raise UsageError(f"{where}: {cron!r} is not a five-field cron expression (minute hour day month weekday)",
                         advice="For example '0 3 * * *' (03:00 every day) or '30 1 * * mon-fri'.")
    try:
        for text, field in zip(fields, _FIELDS, strict=True):
            _check_field(text, field)
    except ValueError as exc:
        raise UsageError(f"{where}: {cron!r}: {exc}") from exc
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise UsageError(f"{where}: {timezone!r} is not an IANA time zone (e.g. UTC, Europe/Berlin)") from exc
    return Schedule(" ".join(fields), timezone)


def parse_schedule_entry(value: object, *, where: str) -> Schedule:
    """A catalog ``schedule:``: a cron string, or ``{cron: ..., timezone: ...}``."""
    if isinstance(value, str):
        return parse_schedule(value, where=where)
    if isinstance(value, dict) and set(value) <= {"cron", "timezone"} and "cron" in value:
        return parse_schedule(value["cron"], value.get("timezone", "UTC"), where=where)
    raise UsageError(f"{where}: schedule is a cron string or {{cron: '0 3 * * *', timezone: Europe/Berlin}}")


def parse_schedule_setting(text: str, *, where: str) -> Schedule | None:
    """The project's ``reverify_schedule``: ``CRON`` or ``CRON TIMEZONE``, ``none`` for no schedule."""
    if text.strip().lower() == "none":
        return None
    fields = text.split()
    if len(fields) == 6:
        return parse_schedule(" ".join(fields[:5]), fields[5], where=where)
    return parse_schedule(text, where=where)
