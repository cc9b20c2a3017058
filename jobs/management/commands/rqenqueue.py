from jobs.management.base import Refused


class Command(Refused):
    help = "Not used here: jobs are enqueued by the producers (jobs/enqueue/producers.py)."
    why = (
        "rqenqueue is not used here: jobs go through the producers (jobs/enqueue/producers.py), which give them their id "
        "and retry policy; from the shell use `python manage.py enqueue_verify <email-or-id>`, or retry a job from the dashboard"
    )
