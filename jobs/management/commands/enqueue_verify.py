from django.core.management.base import BaseCommand, CommandError

from ceres_site.accounts.models import User
from jobs.enqueue.producers import enqueue_email_verify
from jobs.management.base import OneLineErrors


class Command(OneLineErrors, BaseCommand):
    help = "Enqueue the verification email for users given by email or id; says, for each, what happened."

    def add_arguments(self, parser):
        parser.add_argument("users", nargs="+", help="email address or numeric user id")

    def handle(self, *args, users, **options):
        missing = 0
        for ref in users:
            user = (
                User.objects.filter(pk=int(ref)).first()
                if ref.isdigit()
                else User.objects.filter(email__iexact=ref).first()
            )
            if user is None:
                self.stderr.write(f"{ref}: no such user")
                missing += 1
            elif user.is_verified:
                self.stdout.write(f"{ref}: already verified, nothing to send")
            else:
                result = enqueue_email_verify(user_id=user.pk, municipality=user.municipality_id)
                state = "enqueued" if result.created else f"already pending ({result.status})"
                self.stdout.write(f"{ref}: {state} as {result.job_id}")
        if missing:
            raise CommandError(f"{missing} of {len(users)} users not found")
