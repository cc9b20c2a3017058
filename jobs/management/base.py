"""What every command of the project shares: bad arguments are one clear line (no usage dump, no
traceback) and a non-zero exit; and the django-rq commands this project does not run, replaced by a
command that says so in one line (`Refused`)."""

from django.core.management.base import BaseCommand, CommandError


class OneLineErrors:
    """argparse prints its usage before the error; the error alone is the clear line (`--help` has the rest)."""

    def create_parser(self, prog_name, subcommand, **kwargs):
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.print_usage = lambda file=None: None
        return parser


class Refused(OneLineErrors, BaseCommand):
    """A django-rq command that would enqueue outside the producers (no deterministic id, no
    uniqueness) or start workers or crons the policies do not declare: it says what to run instead."""

    why = ""

    def add_arguments(self, parser):
        parser.add_argument("args", nargs="*")

    def handle(self, *args, **options):
        raise CommandError(self.why)
