"""The audit trail of staff actions on jobs."""

from jobs.models import JobAction, JobActionTarget


def action_record(
    *, kind: str, queue_name: str, job_ids: list[str], user=None, reason: str = "", detail: str = ""
) -> JobAction:
    action = JobAction.objects.create(
        kind=kind, queue=queue_name, count=len(job_ids), user=user, reason=reason[:300], detail=detail[:300]
    )
    JobActionTarget.objects.bulk_create([JobActionTarget(action=action, job_id=job_id) for job_id in job_ids], 1000)
    return action


def actions_for_job(job_id: str):
    return JobAction.objects.filter(targets__job_id=job_id).select_related("user").order_by("-at")
