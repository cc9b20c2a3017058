"""Files queue tasks: check an uploaded CV, make a profile picture safe and small.

They run in a forking worker, each in a work-horse with a memory limit and the queue's timeout
(`jobs.config.policies.FILES`), so a hostile file kills only its own job. A rejection is a result, not a
failure: the upload is marked rejected with its reason for the person (a rejected CV's owner gets
an email), and the job finishes, with no retry, dead letter or alert. Storage trouble (OSError)
raises, and RQ retries; once the job has failed for good, `upload_failed` (the tasks' final-failure
hook, `jobs.tasks.ON_FINAL_FAILURE`) asks the person to upload the file again, and a retry by staff
checks it after all. An upload superseded by a newer one meanwhile is left alone.
"""

from django.conf import settings
from django.core.files.base import ContentFile
from django.utils import timezone
from django.utils.translation import gettext as _

from ceres_site.accounts import cv, pictures
from ceres_site.accounts.models import Upload
from jobs.enqueue.producers import enqueue_email_cv_rejected
from jobs.failures.attempts import PermanentJobError


def validate_cv(upload_id: int, municipality: int | None = None) -> str:
    """`municipality`: its owner's, for its alerts and metrics."""
    upload, skip = _pending(upload_id, Upload.Kind.CV)
    if skip:
        return skip
    try:
        verdict = cv.judge(_read(upload, settings.CV_MAX_BYTES), settings.CV_MAX_BYTES)
    except cv.Rejected as rejection:
        if _finish(upload, Upload.State.REJECTED, reason=str(rejection)):
            enqueue_email_cv_rejected(upload_id=upload.pk, municipality=upload.user.municipality_id)
        return _("rejected: %(reason)s") % {"reason": rejection}
    _finish(upload, Upload.State.ACCEPTED, warning=" ".join(verdict.warnings))
    if verdict.pages:
        return _("accepted: %(kind)s CV, %(pages)d p.") % {"kind": verdict.kind.upper(), "pages": verdict.pages}
    return _("accepted: %(kind)s CV") % {"kind": verdict.kind.upper()}


def optimize_profile_picture(upload_id: int, municipality: int | None = None) -> str:
    upload, skip = _pending(upload_id, Upload.Kind.PICTURE)
    if skip:
        return skip
    try:
        data = _read(upload, settings.PICTURE_MAX_BYTES)
        if len(data) > settings.PICTURE_MAX_BYTES:
            mb = settings.PICTURE_MAX_BYTES // (1024 * 1024)
            raise pictures.Rejected(_("The picture is larger than %(mb)d MB.") % {"mb": mb})
        result = pictures.optimize(data)
    except pictures.Rejected as rejection:
        _finish(upload, Upload.State.REJECTED, reason=str(rejection))
        return _("rejected: %(reason)s") % {"reason": rejection}
    original = upload.file.name
    upload.file.save(f"picture.{result.extension}", ContentFile(result.picture), save=False)
    upload.thumbnail.save(f"thumbnail.{result.extension}", ContentFile(result.thumbnail), save=False)
    if _finish(
        upload, Upload.State.ACCEPTED, file=upload.file.name, thumbnail=upload.thumbnail.name, size=len(result.picture)
    ):
        upload.file.storage.delete(original)
    return _("optimized: %(before)d → %(after)d bytes") % {"before": upload.size, "after": len(result.picture)}


def upload_failed(upload_id=None, **kwargs) -> None:
    """The upload's job failed for good (storage trouble, a work-horse killed): not the file's fault
    that we know of, so its owner is asked to upload it again, and staff see it failed."""
    try:
        upload_id = int(upload_id)
    except (TypeError, ValueError):
        return
    reason = _("We had a problem on our side while checking the file: please upload it again.")
    Upload.objects.filter(pk=upload_id, state=Upload.State.PENDING).update(
        state=Upload.State.FAILED, reason=reason, processed_at=timezone.now()
    )


UNFINISHED = (Upload.State.PENDING, Upload.State.FAILED)  # a failed one is checked when staff retry its job


def _pending(upload_id, kind) -> tuple[Upload | None, str]:
    try:
        upload_id = int(upload_id)
    except (TypeError, ValueError):
        raise PermanentJobError(f"malformed payload: upload_id={upload_id!r} is not an integer") from None
    upload = Upload.objects.filter(pk=upload_id, kind=kind).select_related("user").first()
    if upload is None:
        return None, _("skipped: upload %(upload)s does not exist") % {"upload": upload_id}
    if upload.state not in UNFINISHED:
        return None, _("skipped: upload %(upload)s is %(state)s") % {
            "upload": upload_id,
            "state": upload.get_state_display(),
        }
    return upload, ""


def _read(upload: Upload, limit: int) -> bytes:
    """At most `limit` + 1 bytes: enough to tell a file that is too big."""
    with upload.file.open("rb") as handle:
        return handle.read(limit + 1)


def _finish(upload: Upload, state: str, **fields) -> bool:
    """Record the outcome unless the upload was superseded meanwhile; True if recorded."""
    fields = {"reason": "", "processed_at": timezone.now(), **fields}  # a failed one's reason goes
    return bool(Upload.objects.filter(pk=upload.pk, state__in=UNFINISHED).update(state=state, **fields))
