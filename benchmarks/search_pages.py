"""Server time of the search across every queue and of a user's admin page, with 100 and 100,000
jobs in each of two states (failed email jobs, finished newsletter jobs) and 1,000 dead letters.

Run:  bin/with-test-services -- .venv/bin/python benchmarks/search_pages.py
It uses a throwaway test database and flushes the Redis database it is pointed at.
Prints the median of several runs per page, and the ratio 100,000 : 100 measured in this process.
"""

import os
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ceres_site.settings")

import django  # noqa: E402

django.setup()

import django_rq  # noqa: E402
from _pages import median_ms, print_sizes, staff_client  # noqa: E402
from django.urls import reverse  # noqa: E402
from django.utils import timezone  # noqa: E402
from rq.job import Job, JobStatus  # noqa: E402

RUNS = 5
SIZES = (100, 100_000)
USERS = 1000  # the jobs name user ids 1..USERS in turn


def fill(queue_name: str, state: str, count: int, func: str, kwargs) -> None:
    """`count` real RQ jobs in a state's registry, each with the attempts' errors a failure leaves in meta."""
    queue = django_rq.get_queue(queue_name)
    registry = {"failed": queue.failed_job_registry, "finished": queue.finished_job_registry}[state]
    status = {"failed": JobStatus.FAILED, "finished": JobStatus.FINISHED}[state]
    now = time.time()
    for start in range(0, count, 5000):
        with queue.connection.pipeline() as pipe:
            for n in range(start, min(start + 5000, count)):
                job = Job.create(func, kwargs=kwargs(n), id=f"{queue_name}-bench-{n}", connection=queue.connection,
                                 serializer=queue.serializer, origin=queue_name, status=status)  # fmt: skip
                if state == "failed":
                    job.meta["failures"] = [
                        {"at": "2026-01-01T00:00:00+00:00", "error": f"SMTPRecipientsRefused: #{n}"}
                    ]
                job.save(pipeline=pipe)
                pipe.zadd(registry.key, {job.id: now + 86400 + n / 1000})
            pipe.execute()


def main() -> None:
    with staff_client() as client:
        from ceres_site.accounts.models import User
        from jobs.models import DeadLetter

        User.objects.bulk_create(User(username=f"u{n}", email=f"person{n}@example.com") for n in range(USERS))
        someone = User.objects.get(username="u7")
        moment = timezone.now()
        DeadLetter.objects.bulk_create(
            DeadLetter(job_id=f"email-old-{n}", job_created_at=moment - timedelta(minutes=n), queue="email",
                       func_name="jobs.tasks.email.send_verify_email", kwargs={"user_id": someone.pk + n % USERS},
                       exc_type="SMTPRecipientsRefused", exc_message=f"refused #{n}", traceback="Traceback …",
                       failed_at=moment - timedelta(minutes=n), alert="skipped")
            for n in range(1000)
        )  # fmt: skip
        search = reverse("admin:jobs_dashboard_search")
        pages = {
            "search: id part": search + "?q=bench-4242",
            "search: error text": search + "?q=%2342424",
            "search: user email": search + f"?q={someone.email}",
            "user admin page": reverse("admin:accounts_user_change", args=[someone.pk]),
        }
        results = {}
        first_id = someone.pk - 7
        for size in SIZES:
            django_rq.get_connection("email").flushdb()
            fill("email", "failed", size, "jobs.tasks.email.send_verify_email",
                 lambda n: {"user_id": first_id + n % USERS})  # fmt: skip
            fill("bulk", "finished", size, "jobs.tasks.newsletters.send_newsletter",
                 lambda n: {"newsletter_id": 1, "user_id": first_id + n % USERS})  # fmt: skip
            results[size] = {name: median_ms(client, path, RUNS) for name, path in pages.items()}
        django_rq.get_connection("email").flushdb()
    print_sizes(results, RUNS)


if __name__ == "__main__":
    main()
