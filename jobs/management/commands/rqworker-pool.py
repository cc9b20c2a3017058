from jobs.management.base import Refused


class Command(Refused):
    help = "Not used here: rqworker starts the workers each queue's policy asks for."
    why = (
        "rqworker-pool is not used here: `python manage.py rqworker email slack bulk` runs the in-process slots, "
        "`python manage.py rqworker maintenance files` the forking workers (one per unit of concurrency)"
    )
