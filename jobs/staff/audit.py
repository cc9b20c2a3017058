"""The audit trail of staff actions on jobs."""

from collections.abc import Mapping

from django.db.models import Q

from jobs.config import tenancy
from jobs.models import JobAction, JobActionTarget


def action_record(
    *, kind: str, queue_name: str, job_ids: list[str], user=None, reason: str = "", detail: str = "",
    municipalities: Mapping[str, int | None] | None = None,
) -> JobAction:  # fmt: skip
    """`municipalities`: job id -> the municipality the job named (`jobs.config.tenancy`), which staff
    limited to it read the action by; the author's own scope is recorded too."""
    named = municipalities or {}
    action = JobAction.objects.create(
        kind=kind, queue=queue_name, count=len(job_ids), user=user, reason=reason[:300], detail=detail[:300],
        municipality=tenancy.scope_of(user) if user is not None else None,
    )  # fmt: skip
    JobActionTarget.objects.bulk_create(
        [JobActionTarget(action=action, job_id=job_id, municipality=named.get(job_id)) for job_id in job_ids], 1000
    )
    return action


def actions_seen_by(actions, municipality: int | None):
    """The actions staff limited to `municipality` may read: their own team's, and those on its jobs."""
    if municipality is None:
        return actions
    ids = JobActionTarget.objects.filter(municipality=municipality).values("action_id")
    return actions.filter(Q(municipality=municipality) | Q(pk__in=ids))


def actions_for_job(job_id: str):
    return JobAction.objects.filter(targets__job_id=job_id).select_related("user").order_by("-at")
