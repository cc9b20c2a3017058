from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _


def _staff_member(verbose_name) -> models.ForeignKey:
    """Who did something to a row: kept as empty when that user is deleted."""
    return models.ForeignKey(
        settings.AUTH_USER_MODEL, verbose_name=verbose_name, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )  # fmt: skip


class DeadLetter(models.Model):
    """A job that failed for good, kept after Redis forgets it (24 h), until pruned (90 days).

    One row per job run: a job id re-enqueued later (a resend) is a new run with a new
    `job_created_at`. The unique pair is the atomic "already archived / alerted" marker that
    lets the fast path and the sweep both try without alerting twice.
    """

    class Alert(models.TextChoices):
        """How staff heard of the failure on Slack (`jobs.failures.final.flush_alerts`)."""

        PENDING = "pending", _("pending")
        SENT = "sent", _("sent")
        SUMMARY = "summary", _("in a summary")
        SKIPPED = "skipped", _("no alert")

    job_id = models.CharField(_("job id"), max_length=200)
    job_created_at = models.DateTimeField(_("job created at"))
    queue = models.CharField(_("queue"), max_length=50, db_index=True)
    func_name = models.CharField(_("task"), max_length=300)
    args = models.JSONField(_("positional arguments"), default=list)
    kwargs = models.JSONField(_("arguments"), default=dict)  # secrets masked
    exc_type = models.CharField(_("error type"), max_length=200, db_index=True)
    exc_message = models.TextField(_("error message"))
    traceback = models.TextField(_("traceback"))
    attempts = models.JSONField(_("attempts"), default=list)  # [{"at": iso time, "error": first line}, …]
    failed_at = models.DateTimeField(_("failed at"), db_index=True)
    related_model = models.CharField(_("related model"), max_length=100, blank=True)  # e.g. "accounts.user"
    related_id = models.CharField(_("related id"), max_length=64, blank=True)
    # The id a job's kwargs named (`jobs.config.tenancy`): a number, not a key, since the machinery
    # does not import the domain; its alert went to that municipality's webhook.
    municipality = models.PositiveBigIntegerField(_("municipality"), null=True, blank=True, db_index=True)

    alert = models.CharField(_("alert"), max_length=10, choices=Alert.choices)
    alert_note = models.CharField(_("alert note"), max_length=200, blank=True)
    alerted_at = models.DateTimeField(_("alerted at"), null=True, blank=True)

    retried_at = models.DateTimeField(_("retried at"), null=True, blank=True)
    retried_by = _staff_member(_("retried by"))
    # When the retry's run was created: that run's later dead letter or its job in Redis tells how it ended.
    retry_created_at = models.DateTimeField(_("retry created at"), null=True, blank=True)
    resolved_at = models.DateTimeField(_("resolved at"), null=True, blank=True)
    resolved_by = _staff_member(_("resolved by"))

    class Meta:
        verbose_name = _("dead letter")
        verbose_name_plural = _("dead letters")
        ordering = ["-failed_at"]
        constraints = [models.UniqueConstraint(fields=["job_id", "job_created_at"], name="jobs_deadletter_run_unique")]
        permissions = [("retry_deadletter", _("Can retry dead-letter jobs"))]

    def __str__(self) -> str:
        return f"{self.job_id} ({self.exc_type})"


class CronRun(models.Model):
    """One run of a cron for one slot: the durable proof that a slot ran (and ran once)."""

    name = models.CharField(_("name"), max_length=100)
    slot = models.DateTimeField(_("slot"))
    started_at = models.DateTimeField(_("started at"), auto_now_add=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)
    result = models.CharField(_("result"), max_length=500, blank=True)

    class Meta:
        verbose_name = _("cron run")
        verbose_name_plural = _("cron runs")
        constraints = [models.UniqueConstraint(fields=["name", "slot"], name="jobs_cronrun_slot_unique")]
        ordering = ["-slot"]

    def __str__(self) -> str:
        return f"{self.name} @ {self.slot:%Y-%m-%d %H:%M}"


class Dashboard(models.Model):
    """No table: gives the queue dashboard its place in admin and its permissions."""

    class Meta:
        managed = False
        default_permissions = ()
        verbose_name = verbose_name_plural = _("queue dashboard")
        permissions = [
            ("view_dashboard", _("Can view the queue dashboard")),
            ("operate_jobs", _("Can retry, promote and cancel jobs")),
            ("destroy_jobs", _("Can delete jobs and empty queues")),
            ("view_payloads", _("Can view job arguments and error details")),
        ]


class JobAction(models.Model):
    """The audit trail: who did what to which jobs, when and why."""

    class Kind(models.TextChoices):
        RETRY = "retry", _("retry")
        DELETE = "delete", _("delete")
        PROMOTE = "promote", _("run now")
        CANCEL = "cancel", _("cancel")
        EMPTY = "empty", _("empty queue")
        RESOLVE = "resolve", _("mark resolved")
        PAUSE = "pause", _("pause queue")
        RESUME = "resume", _("resume queue")
        CLEAN = "clean", _("clean old jobs")
        SEND = "send", _("send newsletter")
        REFUSED = "refused", _("refused: another municipality's jobs")

    at = models.DateTimeField(_("when"), auto_now_add=True, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, verbose_name=_("user"), null=True, on_delete=models.SET_NULL, related_name="+"
    )
    kind = models.CharField(_("action"), max_length=10, choices=Kind.choices)
    queue = models.CharField(_("queue"), max_length=50)
    count = models.PositiveIntegerField(_("jobs"))
    reason = models.CharField(_("reason"), max_length=300, blank=True)
    detail = models.CharField(_("detail"), max_length=300, blank=True)
    # The municipality its author was limited to (`jobs.config.tenancy.scope_of`); None: the platform's staff.
    municipality = models.IntegerField(_("municipality"), null=True, blank=True, db_index=True)

    class Meta:
        ordering = ["-at"]
        verbose_name = _("job action")
        verbose_name_plural = _("job actions")

    def __str__(self) -> str:
        return f"{self.get_kind_display()} · {self.queue} · {self.count}"


class JobActionTarget(models.Model):
    action = models.ForeignKey(JobAction, verbose_name=_("action"), on_delete=models.CASCADE, related_name="targets")
    job_id = models.CharField(_("job id"), max_length=200, db_index=True)
    municipality = models.IntegerField(_("municipality"), null=True, blank=True, db_index=True)  # the job's, then

    class Meta:
        verbose_name = _("job of an action")  # staff read it in the permission lists
        verbose_name_plural = _("jobs of actions")
