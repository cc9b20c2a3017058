import argparse
from datetime import date, timedelta

from django.core.management.base import BaseCommand
from django.utils.translation import gettext as _

from ceres_site.accounts.reports import report_daily, report_text
from jobs.config import crons
from jobs.enqueue.producers import enqueue_slack_alert
from jobs.management.base import OneLineErrors


class Command(OneLineErrors, BaseCommand):
    help = "Print the daily report of a Córdoba day (yesterday by default) and post it to Slack."

    def add_arguments(self, parser):
        parser.add_argument("--date", type=_day, help="the day, YYYY-MM-DD (Córdoba)")
        parser.add_argument("--dry-run", action="store_true", help="print only, post nothing")

    def handle(self, *args, date, dry_run, **options):
        day = date or crons.local_day(crons.now()) - timedelta(days=1)
        text = report_text(report_daily(day=day))
        self.stdout.write(text)
        if not dry_run:
            enqueue_slack_alert(text=text, dedupe_key=f"daily-report-{day.isoformat()}")
            self.stdout.write(_("(enqueued for Slack)"))


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a day: write it YYYY-MM-DD, e.g. 2026-11-29") from None
