"""The one list of cron specs, and the arithmetic of their slots.

Cron strings are read in the spec's zone (America/Argentina/Cordoba), never in the process's
local time, so `0 9 * * *` means 09:00 in Córdoba (12:00 UTC) whatever TZ the server runs with.
A *slot* is one firing time; every run is identified by its slot, so it happens once per slot.
"""

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import crontab

ZONE = "America/Argentina/Cordoba"


def now() -> datetime:
    """The clock of the cron machinery (tests move it instead of waiting)."""
    return datetime.now(UTC)


def local_day(moment: datetime) -> date:
    """The Córdoba calendar day of a moment."""
    return moment.astimezone(ZoneInfo(ZONE)).date()


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """A Córdoba day in UTC, [start, end): its midnight to the next day's, so 23 or 25 hours long on
    the days a zone with DST moves its clocks. A midnight the clocks skip (Chile's) reads with the
    offset before the change, which is the day's first instant."""
    zone = ZoneInfo(ZONE)
    start, end = (datetime.combine(one, time(), tzinfo=zone).astimezone(UTC) for one in (day, day + timedelta(days=1)))
    return start, end


@dataclass(frozen=True)
class CronSpec:
    name: str
    schedule: str  # cron string, read in `zone`
    task: str  # dotted path of a function taking `slot` (an aware datetime)
    grace: int  # seconds after its slot by which a run must have completed, or the dead-man alarm rings
    queue: str = "maintenance"
    zone: str = ZONE

    def last_slot(self, at: datetime) -> datetime:
        """The latest slot at or before `at`, in UTC."""
        local = (at + timedelta(seconds=1)).astimezone(ZoneInfo(self.zone))
        return crontab.CronTab(self.schedule).previous(now=local, return_datetime=True).astimezone(UTC)

    def next_slot(self, at: datetime) -> datetime:
        """The first slot after `at`, in UTC."""
        local = at.astimezone(ZoneInfo(self.zone))
        return crontab.CronTab(self.schedule).next(now=local, return_datetime=True).astimezone(UTC)


SPECS: dict[str, CronSpec] = {
    spec.name: spec
    for spec in (
        CronSpec("clean-verification-tokens", "0 * * * *", "jobs.tasks.maintenance.clean_verification_tokens", 15 * 60),
        CronSpec("daily-report", "0 9 * * *", "jobs.tasks.maintenance.daily_report", 30 * 60),
        CronSpec("prune-dead-letters", "30 4 * * *", "jobs.tasks.maintenance.prune_dead_letters", 60 * 60),
    )
}
