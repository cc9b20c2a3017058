from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class AccountsConfig(AppConfig):
    name = "ceres_site.accounts"
    label = "accounts"
    verbose_name = _("Accounts")

    def ready(self):
        from ceres_site.accounts import outbox
        from jobs.runtime import hooks

        hooks.register(hooks.EVERY_MINUTE, outbox.reconcile_verify_emails)
