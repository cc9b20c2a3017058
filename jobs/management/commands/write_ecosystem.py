from django.conf import settings
from django.core.management.base import BaseCommand

from jobs.config.processes import ecosystem_files
from jobs.management.base import OneLineErrors


class Command(OneLineErrors, BaseCommand):
    help = "Write ecosystem/Procfile, ecosystem/ecosystem.config.js and ecosystem/systemd/ from the queue policies."

    def handle(self, *args, **options):
        root = settings.BASE_DIR / "ecosystem"
        for name, text in ecosystem_files().items():
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            changed = not path.exists() or path.read_text() != text
            path.write_text(text)
            self.stdout.write(f"{'wrote' if changed else 'unchanged'}: ecosystem/{name}")
        for stale in sorted((root / "systemd").glob("*")):
            if f"systemd/{stale.name}" not in ecosystem_files():
                stale.unlink()
                self.stdout.write(f"removed: ecosystem/systemd/{stale.name}")
