from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "ceres_site.accounts"
    label = "accounts"
    verbose_name = "Cuentas"
