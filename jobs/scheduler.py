"""rq-scheduler under our key prefix (settings `RQ["SCHEDULER_CLASS"]`).

rq-scheduler hard-codes `rq:scheduler*` keys; these take rq's `RQ_KEY_PREFIX` instead, so
every key the scheduler writes starts with `<REDIS_PREFIX>queue:` like the rest.
"""

from django_rq.queues import DjangoScheduler
from rq.defaults import RQ_KEY_PREFIX


class CeresScheduler(DjangoScheduler):
    redis_scheduler_namespace_prefix = f"{RQ_KEY_PREFIX}:scheduler_instance:"
    scheduler_key = f"{RQ_KEY_PREFIX}:scheduler"
    scheduler_lock_key = f"{RQ_KEY_PREFIX}:scheduler_lock"
    scheduled_jobs_key = f"{RQ_KEY_PREFIX}:scheduler:scheduled_jobs"
