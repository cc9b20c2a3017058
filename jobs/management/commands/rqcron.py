from jobs.management.base import Refused


class Command(Refused):
    help = "Not used here: the crons of jobs/config/crons.py run under rqscheduler."
    why = "rqcron is not used here: the crons of jobs/config/crons.py run under `python manage.py rqscheduler`"
