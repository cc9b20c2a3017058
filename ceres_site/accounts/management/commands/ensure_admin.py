from django.conf import settings
from django.core.management.base import BaseCommand

from ceres_site.accounts.models import User
from jobs.management.base import OneLineErrors


class Command(OneLineErrors, BaseCommand):
    help = (
        "Create the staff user `admin` with QUEUES_UI_PASS as password and QUEUES_UI_EMAIL as address, once "
        "(an existing one is left alone)."
    )

    def handle(self, *args, **options):
        if not settings.QUEUES_UI_PASS:
            self.stdout.write("QUEUES_UI_PASS is not set: no admin user created.")
        elif User.objects.filter(username="admin").exists():
            self.stdout.write("User admin already exists: left as it is.")
        else:
            User.objects.create_superuser(
                username="admin", email=settings.QUEUES_UI_EMAIL, password=settings.QUEUES_UI_PASS
            )
            self.stdout.write("Created staff user admin (password: QUEUES_UI_PASS).")
