"""A municipality with its own mail server sends its newsletters at that server's pace (issue 23): its
jobs wait aside on the `bulk-own` queue and move to it on their server's turns (`jobs.mail.throttle`),
taking none of the installation's turns and waiting for none of them."""

import django_rq
import pytest
from aiosmtpd.controller import Controller
from django.utils import timezone

from ceres_site.accounts.models import User
from ceres_site.municipalities.models import Municipality
from ceres_site.newsletters import campaigns
from ceres_site.newsletters.models import Delivery, Newsletter
from jobs import rq_compat
from jobs.config import policies
from jobs.mail import throttle
from jobs.observability import reads
from jobs.staff import operations
from tests.conftest import SmtpSink, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

OWN = policies.BULK_OWN.name


def town(slug: str, **fields) -> Municipality:
    return Municipality.objects.create(name=f"Villa {slug.title()}", slug=slug, hosts=f"{slug}.example.test", **fields)


def own_town(slug: str, port: int = 2525, **limits) -> Municipality:
    return town(slug, smtp_host="127.0.0.1", smtp_port=port, smtp_use_tls=False, **limits)


def campaign(municipality: Municipality, count: int) -> Newsletter:
    """A newsletter of `municipality` to `count` new subscribers of it, sent."""
    now = timezone.now()
    User.objects.bulk_create(
        User(username=f"{n}@{municipality.slug}", email=f"vecino{n}@{municipality.slug}.example.test",
             first_name=f"Vecino {n}", email_verified_at=now, municipality=municipality)
        for n in range(count)
    )  # fmt: skip
    newsletter = Newsletter.objects.create(
        subject=f"Novedades de {municipality.name}", body_text="Hola {{ name }}.\n{{ unsubscribe_url }}",
        municipality=municipality,
    )  # fmt: skip
    assert campaigns.send(newsletter, None) == count
    newsletter.refresh_from_db()
    return newsletter


def queued(queue_name: str = OWN) -> list[str]:
    return django_rq.get_queue(queue_name).job_ids


def test_an_own_server_s_jobs_wait_aside_and_move_one_per_turn_of_its_own_pace(settings, redis_conn):
    settings.SMTP_RATE_PER_MINUTE, settings.SMTP_RATE_PER_HOUR = 1, 0  # the installation's: one turn a minute
    norte = own_town("norte", smtp_rate_per_minute=60)  # its bulk share: 48 a minute, one per 1.25 s
    campaign(norte, 3)  # its start moves the first at once
    queue = django_rq.get_queue(OWN)

    assert len(queued()) == 1 and reads.count(queue, "rate_limited") == 2
    assert django_rq.get_queue("bulk").count == 0
    [job] = reads.fetch_jobs(queue, queued())
    assert job.get_status() == "queued" and job.enqueued_at is not None
    assert 1 < throttle.promote(OWN) <= 1.25 and len(queued()) == 1  # the next in 1.25 s: nothing moves now

    assert throttle.take() == 0  # the installation's turn is untouched: Norte took none of it


def test_a_job_back_in_the_queue_without_a_turn_a_retry_waits_aside_for_one(settings, redis_conn):
    norte = own_town("norte", smtp_rate_per_minute=1)  # bulk: one turn every 75 s
    campaign(norte, 2)  # its start moves the first at once
    queue = django_rq.get_queue(OWN)
    [job_id] = queued()
    taken = redis_conn.lmove(queue.key, queue.intermediate_queue_key).decode()  # as a slot takes it
    assert taken == job_id and throttle.had_turn(job_id, queue)  # it had its turn: it runs
    redis_conn.lrem(queue.intermediate_queue_key, 1, job_id)  # as its start does

    # It failed and rq's scheduler puts its retry straight in the queue, as for any job.
    queue.schedule_job(queue.fetch_job(job_id), timezone.now())
    scheduler = rq_compat.RQScheduler([queue], connection=redis_conn)
    scheduler.acquire_locks()
    scheduler.enqueue_scheduled_jobs()
    assert queued() == [job_id]
    redis_conn.lmove(queue.key, queue.intermediate_queue_key)

    assert not throttle.had_turn(job_id, queue)  # no turn: set aside, not run
    assert queue.fetch_job(job_id).get_status() == "rate_limited" and not redis_conn.lrange(
        queue.intermediate_queue_key, 0, -1
    )
    assert job_id in reads.job_ids(queue, "rate_limited", 0, 10) and reads.count(queue, "rate_limited") == 2
    assert throttle.promote(OWN) > 60 and queued() == []  # the server's next turn is 75 s after the first


def test_one_server_s_hourly_cap_holds_back_its_jobs_alone(settings, redis_conn):
    settings.SMTP_RATE_PER_MINUTE, settings.SMTP_RATE_PER_HOUR = 0, 0
    norte = own_town("norte", smtp_rate_per_minute=0, smtp_rate_per_hour=5)  # bulk: 4 an hour, no pacing
    sur = own_town("sur", smtp_rate_per_minute=0, smtp_rate_per_hour=0)  # no limit at all
    campaign(norte, 6)
    campaign(sur, 150)  # more than one script moves at once: the rest at the next call

    while (wait := throttle.promote(OWN)) == 0:  # at most 100 at once (each campaign's start moved some)
        pass

    assert wait > 60  # Norte's next turn is in the next hour
    ids = queued()
    assert sum(job_id.startswith(f"bulk-nl{Newsletter.objects.get(municipality=sur).pk}-") for job_id in ids) == 150
    assert len(ids) == 154  # Norte's 4 of the hour, Sur's every one
    assert reads.count(django_rq.get_queue(OWN), "rate_limited") == 2


def test_a_municipality_s_limits_follow_its_changes_and_blank_ones_are_the_installation_s(settings, redis_conn):
    settings.SMTP_RATE_PER_MINUTE, settings.SMTP_RATE_PER_HOUR = 600, 0
    norte = own_town("norte")  # blank: the installation's 600 a minute, bulk 480
    assert campaigns.pace(norte) == campaigns.pace(Municipality.objects.default()) == campaigns.Pace(480, 0)
    campaign(norte, 1)
    assert redis_conn.hgetall(f"{settings.RQ_KEY_PREFIX}:smtp:m{norte.pk}:limits") == {
        b"interval": b"125.0",
        b"cap": b"0",
    }

    norte.smtp_rate_per_minute, norte.smtp_rate_per_hour = 30, 100
    norte.save()  # mid-campaign: its next turn goes by the new limits

    assert campaigns.pace(norte) == campaigns.Pace(24, 80)
    limits = redis_conn.hgetall(f"{settings.RQ_KEY_PREFIX}:smtp:m{norte.pk}:limits")
    assert limits == {b"interval": b"2500.0", b"cap": b"80"}


def test_a_slow_down_from_an_own_server_halves_its_pace_only(smtp, work, policy, settings, redis_conn):
    policy(OWN, retry_max=1, retry_intervals=(600,))
    own = SmtpSink()
    own.rcpt_reply = "451 4.7.1 Please slow down"
    controller = Controller(own, hostname="127.0.0.1", port=own.port)
    controller.start()
    try:
        norte = own_town("norte", port=own.port, smtp_rate_per_minute=0, smtp_rate_per_hour=0)
        campaign(norte, 1)
        work(OWN)
    finally:
        controller.stop()

    key = f"{settings.RQ_KEY_PREFIX}:smtp:m{norte.pk}:slowdown"
    assert redis_conn.get(key) == b"2" and 0 < redis_conn.ttl(key) <= 600
    assert not redis_conn.exists(f"{settings.RQ_KEY_PREFIX}:smtp:slowdown")  # the installation's pace is untouched
    assert django_rq.get_queue(OWN).scheduled_job_registry.count == 1  # delayed, not failed
    assert throttle.slow_down(norte.pk) == 4 and throttle.slow_down() == 2  # each server's factor its own


def test_waiting_jobs_are_listed_and_cancel_delete_and_empty_take_them_out_of_their_turn(settings, redis_conn):
    settings.SMTP_RATE_PER_MINUTE = 1
    norte = own_town("norte", smtp_rate_per_minute=1)
    newsletter = campaign(norte, 4)
    queue = django_rq.get_queue(OWN)
    ids = sorted(reads.job_ids(queue, "rate_limited", 0, 10))
    everyone = sorted(f"bulk-nl{newsletter.pk}-{user.pk}" for user in User.objects.filter(municipality=norte))
    assert ids == sorted(set(everyone) - set(queued())) and len(ids) == 3  # the first one moved at its start
    waiting = rq_compat.rate_limited_key(f"{OWN}:{norte.pk}")

    assert operations.jobs_cancel(queue_name=OWN, job_ids=ids[:1]) == ids[:1]
    assert operations.jobs_delete(queue_name=OWN, job_ids=ids[1:2]) == ids[1:2]
    assert reads.count(queue, "rate_limited") == 1 and redis_conn.zscore(waiting, ids[0]) is None
    assert operations.queue_empty(queue_name=OWN) == 2  # the one aside, the one its start moved

    assert reads.count(queue, "rate_limited") == 0 and not redis_conn.exists(waiting)
    assert throttle.promote(OWN) is None and queued() == []  # nothing was left to move


def test_a_pause_deletes_the_jobs_waiting_for_a_turn_and_a_resume_makes_them_again(settings, redis_conn):
    norte = own_town("norte", smtp_rate_per_minute=1)  # bulk: one turn every 75 s
    newsletter = campaign(norte, 4)  # its start moved the first to the queue
    queue = django_rq.get_queue(OWN)
    [moved] = queued()

    assert campaigns.pause(newsletter, None)

    assert reads.count(queue, "rate_limited") == 0 and queued() == [moved]  # the moved one ends without sending
    assert campaigns.resume(newsletter, None) == 4  # nobody has a copy yet
    held = reads.job_ids(queue, "rate_limited", 0, 10)
    assert len(held) == 3 and moved not in held and queued() == [moved]  # the moved one is still pending
    assert all(queue.fetch_job(job_id).get_status() == "rate_limited" for job_id in held)


def test_limits_without_an_own_server_are_refused_in_spanish():
    from django.core.exceptions import ValidationError

    municipality = Municipality(name="Villa Este", slug="este", smtp_rate_per_minute=30)
    with pytest.raises(ValidationError) as refused:
        municipality.full_clean()
    assert refused.value.message_dict["smtp_host"] == ["Límites sin servidor: nombrá también el servidor."]


@pytest.mark.slow
def test_an_own_server_s_campaign_goes_at_its_pace_while_the_installation_s_goes_at_its_own(smtp, live_worker):
    """The installation's server takes a bulk email every 75 s; Norte's own server 8 a second. Norte's
    campaign all goes out, evenly paced, while the installation's has sent its first one or two."""
    own = SmtpSink()
    controller = Controller(own, hostname="127.0.0.1", port=own.port)
    controller.start()
    try:
        norte = own_town("norte", port=own.port, smtp_rate_per_minute=600, smtp_rate_per_hour=0)  # bulk: 480/min
        live_worker("email", "slack", "bulk", OWN, env={"SMTP_RATE_PER_MINUTE": "1"})  # bulk: 0.8/min
        installation = campaign(Municipality.objects.default(), 6)
        norte_campaign = campaign(norte, 30)

        wait_for(lambda: Delivery.objects.filter(newsletter=norte_campaign).count() == 30, timeout=120, interval=0.2)
        wait_for(lambda: Delivery.objects.filter(newsletter=installation).exists(), timeout=60)
    finally:
        controller.stop()

    assert sorted(message["To"] for message in own.messages) == sorted(
        f"vecino{n}@norte.example.test" for n in range(30)
    )  # one copy each, through its server
    assert all(message["To"].endswith("@default.example.test") for message in smtp.messages)
    assert 1 <= Delivery.objects.filter(newsletter=installation).count() <= 2  # its pace: Norte took none of its turns
    times = sorted(own.rcpt_times)
    assert times[-1] - times[0] >= 29 * 60 / 480 - 0.25, times  # 30 sends at 8 a second take 3.6 s at least
