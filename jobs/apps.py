from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class JobsConfig(AppConfig):
    name = "jobs"
    verbose_name = _("Queues and jobs")

    def ready(self):
        from jobs.config import checks  # noqa: F401 (registers the system checks)
