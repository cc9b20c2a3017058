import getpass

from django.core.management.base import BaseCommand, CommandError

from jobs.config import pauses, policies
from jobs.enqueue import clients
from jobs.management.base import OneLineErrors
from jobs.staff import operations


class Command(OneLineErrors, BaseCommand):
    help = "Pause or resume a queue (workers take no new job from a paused one), or list the paused ones."

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["pause", "resume", "status"])
        parser.add_argument("queue", nargs="?", choices=list(policies.QUEUES), help="the queue (not for status)")
        parser.add_argument("--reason", default="", help="kept in the audit trail")

    def handle(self, *args, action: str, queue: str | None, reason: str, **options):
        if action == "status":
            paused = pauses.paused(clients.redis())
            for name in policies.QUEUES:
                state = (
                    f"paused since {paused[name].since.isoformat(timespec='seconds')} by {paused[name].by}"
                    if name in paused
                    else "running"
                )
                self.stdout.write(f"{name}: {state}")
            return
        if queue is None:
            raise CommandError(f"name the queue to {action}: one of {', '.join(policies.QUEUES)}")
        by = f"shell ({getpass.getuser()})"
        change = operations.queue_pause if action == "pause" else operations.queue_resume
        done = change(queue_name=queue, by=by, reason=reason)
        word = "paused" if action == "pause" else "resumed"
        self.stdout.write(
            f"{queue}: {word}" if done else f"{queue}: already {'paused' if action == 'pause' else 'running'}"
        )
