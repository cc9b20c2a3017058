"""Server time of the dashboard's pages, `/health/jobs` and `/metrics` with 100 and with 100,000 jobs
both waiting and failed in the email queue.

Run:  bin/with-test-services -- .venv/bin/python benchmarks/dashboard_pages.py
It uses a throwaway test database and flushes the Redis database it is pointed at.
Prints the median of several runs per page and the ratio 100,000 : 100 measured in this process.
"""

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ceres_site.settings")

import django  # noqa: E402

django.setup()

import django_rq  # noqa: E402
from _pages import median_ms, print_sizes, staff_client  # noqa: E402
from django.urls import reverse  # noqa: E402
from rq.job import Job, JobStatus  # noqa: E402

from ceres_site.municipalities.models import default_pk  # noqa: E402

RUNS = 7
SIZES = (100, 100_000)


def fill_failed(queue, count: int) -> None:
    """`count` real RQ jobs in the failed registry, written in pipelined batches."""
    registry, now = queue.failed_job_registry, time.time()
    for start in range(0, count, 5000):
        with queue.connection.pipeline() as pipe:
            for n in range(start, min(start + 5000, count)):
                job = Job.create("tests.tasks.always_fail", kwargs={"message": f"#{n}"}, id=f"email-bench-{n}",
                                 connection=queue.connection, serializer=queue.serializer, origin="email",
                                 status=JobStatus.FAILED)  # fmt: skip
                job.save(pipeline=pipe)
                pipe.zadd(registry.key, {job.id: now + 86400 + n / 1000})
            pipe.execute()


def fill_queued(queue, count: int) -> None:
    """`count` real RQ jobs waiting in the queue, written in pipelined batches."""
    for start in range(0, count, 5000):
        with queue.connection.pipeline() as pipe:
            for n in range(start, min(start + 5000, count)):
                job = Job.create("tests.tasks.sleep", kwargs={"seconds": 0}, id=f"email-wait-{n}",
                                 connection=queue.connection, serializer=queue.serializer, origin="email",
                                 status=JobStatus.QUEUED)  # fmt: skip
                job.save(pipeline=pipe)
                pipe.rpush(queue.key, job.id)
            pipe.execute()


def main() -> None:
    with staff_client() as client:
        queue = django_rq.get_queue("email")
        pages = {
            "overview": reverse("admin:jobs_dashboard_overview"),
            # one municipality's (a superuser's filter, or the page of staff limited to it): counted job by job
            "overview, one municipality": reverse("admin:jobs_dashboard_overview") + f"?municipality={default_pk()}",
            "failed list, one municipality": reverse("admin:jobs_dashboard_list", args=["email", "failed"])
            + f"?municipality={default_pk()}",
            "failed list, page 1": reverse("admin:jobs_dashboard_list", args=["email", "failed"]),
            "failed list, last page": reverse("admin:jobs_dashboard_list", args=["email", "failed"]) + "?page=999999",
            "queued list, page 1": reverse("admin:jobs_dashboard_list", args=["email", "queued"]),
            "/health/jobs (staff)": reverse("jobs_health"),
            "/metrics": reverse("metrics"),
        }
        results = {}
        for size in SIZES:
            queue.connection.flushdb()
            fill_failed(queue, size)
            fill_queued(queue, size)
            # /health/jobs answers 503: no worker runs here
            results[size] = {name: median_ms(client, path, RUNS, ok=(200, 503)) for name, path in pages.items()}
        queue.connection.flushdb()
    print_sizes(results, RUNS)


if __name__ == "__main__":
    main()
