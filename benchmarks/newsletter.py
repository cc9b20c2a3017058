"""A newsletter campaign, end to end: enqueue time and Redis memory for 50,000 recipients; campaign
throughput with no SMTP limit and at a limit; and the latency of verification emails enqueued while
the campaign goes out (p50/p99, enqueue → the SMTP sink has the message).

Run:  bin/with-test-services -- .venv/bin/python benchmarks/newsletter.py [--recipients 3000] [--limit 6000]
It migrates and uses the database at DATABASE_URL and flushes the Redis database at REDIS_URL.
One in-process worker (`rqworker email slack bulk`), as the Procfile runs it.
"""

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._support import (  # noqa: E402
    Sink,
    Workers,
    header,
    markdown_table,
    percentile,
    prepared_services,
    registered,
    rqworker_argv,
    worker_env,
)

AUDIENCE = 50_000
VERIFY_EMAILS = 100  # enqueued during each campaign, one every 50 ms


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipients", type=int, default=3000, help="recipients of each timed campaign")
    parser.add_argument("--limit", type=float, default=6000, help="SMTP_RATE_PER_MINUTE of the limited run")
    args = parser.parse_args()
    conn = prepared_services()
    header(
        "Newsletter campaign", {"recipients per timed campaign": str(args.recipients), "limit": f"{args.limit:g}/min"}
    )

    from django.utils import timezone

    from ceres_site.accounts.models import User
    from ceres_site.newsletters import campaigns
    from ceres_site.newsletters.models import Newsletter

    User.objects.all().delete()
    now = timezone.now()
    for start in range(0, AUDIENCE, 5000):
        User.objects.bulk_create(User(username=f"n{n}@example.test", email=f"n{n}@example.test", first_name="Vecino",
                                      email_verified_at=now) for n in range(start, start + 5000))  # fmt: skip

    memory_before = conn.info("memory")["used_memory"]
    started = time.perf_counter()
    campaigns.send(_newsletter(Newsletter, "enqueue"), None)
    enqueue_seconds = time.perf_counter() - started
    per_recipient = (conn.info("memory")["used_memory"] - memory_before) / AUDIENCE
    Newsletter.objects.update(state=Newsletter.State.SENT)
    conn.flushdb()

    # The timed campaigns go to the first `--recipients` people only.
    cut = User.objects.order_by("pk").values_list("pk", flat=True)[args.recipients]
    User.objects.filter(pk__gte=cut).update(newsletter_unsubscribed_at=now)
    rows = []
    for limit in (0, args.limit):
        rows.append(_campaign(conn, args.recipients, limit, User, Newsletter, campaigns))

    print(f"\nEnqueue of a {AUDIENCE:,}-recipient newsletter (`campaigns.send`: audience query + bulk enqueue): "
          f"{enqueue_seconds:.2f} s; Redis memory per queued recipient: {per_recipient:,.0f} bytes\n")  # fmt: skip
    print(markdown_table(
        ["SMTP limit", "recipients", "newsletters/s", "verification latency p50 (ms)", "p99 (ms)", "max (ms)"], rows
    ))  # fmt: skip


def _newsletter(Newsletter, subject: str):
    return Newsletter.objects.create(subject=subject, body_text="Hola {{ name }}\n{{ unsubscribe_url }}")


def _campaign(conn, recipients: int, limit: float, User, Newsletter, campaigns) -> list[str]:
    from jobs.enqueue.producers import enqueue_email_verify

    sink = Sink()
    workers = Workers(
        Path(tempfile.mkdtemp(prefix="newsletter-bench-")), worker_env(sink.port, SMTP_RATE_PER_MINUTE=str(limit))
    )
    try:
        workers.start(rqworker_argv("email", "slack", "bulk"), "worker")
        deadline = time.monotonic() + 60
        while not registered(conn, "bulk") and time.monotonic() < deadline:
            time.sleep(0.1)
        newcomers = [User.objects.create_user(username=f"v{limit}-{n}@example.test", email=f"v{limit}-{n}@example.test")
                     for n in range(VERIFY_EMAILS)]  # fmt: skip
        mark, enqueued = sink.mark(), {}
        started = time.monotonic()
        campaigns.send(_newsletter(Newsletter, f"campaign at {limit:g}/min"), None)

        def verify_during():
            time.sleep(0.5)
            for user in newcomers:
                enqueued[user.email] = time.monotonic()
                enqueue_email_verify(user_id=user.pk, municipality=user.municipality_id)
                time.sleep(0.05)

        thread = threading.Thread(target=verify_during)
        thread.start()
        done, seen = sink.wait_distinct(mark, recipients + VERIFY_EMAILS, timeout=3600)
        thread.join()
        if done is None:
            raise RuntimeError(f"only {seen} of {recipients + VERIFY_EMAILS} recipients got their email")
        arrived = {rcpt: moment for moment, rcpts in sink.since(mark) for rcpt in rcpts}
        latencies = [(arrived[email] - at) * 1000 for email, at in enqueued.items()]
        newsletter_times = [moment for moment, rcpts in sink.since(mark) if rcpts and rcpts[0] not in enqueued]
        rate = recipients / (max(newsletter_times) - started)
        return [f"{limit:g}/min" if limit else "none", f"{recipients:,}", f"{rate:.0f}",
                f"{percentile(latencies, 50):.1f}", f"{percentile(latencies, 99):.1f}", f"{max(latencies):.1f}"]  # fmt: skip
    finally:
        workers.stop()
        sink.stop()
        conn.flushdb()


if __name__ == "__main__":
    main()
