from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"
    verbose_name = "Colas y jobs"

    def ready(self):
        from . import checks  # noqa: F401 (registers the system checks)
