"""Municipalities (issue 23, first slice): the default one a single-tenant install runs on, what a
municipality leaves blank falling back to the settings, its checks, and its admin for superusers only."""

import pytest
from django.contrib.auth.models import Permission
from django.core.exceptions import ValidationError
from django.db import connection
from django.http import Http404, HttpResponse
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext

from ceres_site.accounts.models import User
from ceres_site.municipalities import current
from ceres_site.municipalities.models import DEFAULT_SLUG, Municipality

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/municipalities/municipality/"


def make(**fields) -> Municipality:
    fields = {"name": "Villa Sur", "slug": "villa-sur", **fields}
    municipality = Municipality(**fields)
    municipality.full_clean()
    municipality.save()
    return municipality


def test_the_migration_creates_the_default_municipality_on_the_installation_s_settings(settings):
    default = Municipality.objects.default()
    assert (default.slug, default.active, default.is_default) == (DEFAULT_SLUG, True, True)
    settings.SITE_URL = "https://ceres.example.test"
    settings.DEFAULT_FROM_EMAIL = "Ceres <no-reply@ceres.example.test>"
    settings.SLACK_WEBHOOK_URL = "http://127.0.0.1:9/platform"
    assert default.site_url == "https://ceres.example.test"
    assert default.sender == "Ceres <no-reply@ceres.example.test>"
    assert default.slack_webhook_url == "http://127.0.0.1:9/platform"
    assert Municipality.objects.count() == 1


def test_a_municipality_s_own_address_sender_hosts_and_secrets_from_the_environment(settings, monkeypatch):
    settings.DEFAULT_FROM_EMAIL = "Ceres <no-reply@ceres.example.test>"
    municipality = make(
        base_url="https://villasur.example.test/", hosts=" Villasur.example.test , www.villasur.example.test",
        sender_name="Municipalidad de Villa Sur", sender_email="avisos@villasur.example.test",
        smtp_host="smtp.villasur.example.test", smtp_password_env="VILLA_SUR_SMTP", slack_webhook_env="VILLA_SUR_SLACK",
    )  # fmt: skip
    assert municipality.site_url == "https://villasur.example.test"
    assert municipality.sender == "Municipalidad de Villa Sur <avisos@villasur.example.test>"
    assert municipality.host_names == ["villasur.example.test", "www.villasur.example.test"]
    assert Municipality.objects.for_host("WWW.villasur.example.test") == municipality
    assert Municipality.objects.for_host("otra.example.test") == Municipality.objects.default()
    monkeypatch.setenv("VILLA_SUR_SMTP", "s3cret")
    monkeypatch.setenv("VILLA_SUR_SLACK", "http://127.0.0.1:9/villa-sur")
    assert (municipality.smtp_password, municipality.slack_webhook_url) == ("s3cret", "http://127.0.0.1:9/villa-sur")
    municipality.sender_name = ""
    assert municipality.sender == "Ceres <avisos@villasur.example.test>"  # the name falls back alone


def test_a_request_acts_for_the_municipality_its_host_names(rf, settings):
    settings.ALLOWED_HOSTS = ["villasur.example.test", "ceres.example.test"]
    villa_sur = make(hosts="villasur.example.test")
    seen = []

    def view(request):
        seen.append((request.municipality.pk, current.current().pk))
        return HttpResponse("ok")

    middleware = current.CurrentMunicipality(view)
    middleware(rf.get("/", HTTP_HOST="villasur.example.test:8000"))
    middleware(rf.get("/", HTTP_HOST="ceres.example.test"))  # allowed, named by no municipality: the default
    default = Municipality.objects.default()
    assert seen == [(villa_sur.pk, villa_sur.pk), (default.pk, default.pk)]
    assert current.current() == default  # outside a request


def test_an_inactive_municipality_s_site_is_not_found_and_pages_that_do_not_ask_need_no_database(client, settings):
    settings.ALLOWED_HOSTS = ["villasur.example.test"]
    make(hosts="villasur.example.test", active=False)
    with pytest.raises(Http404):
        current.for_request(RequestFactory().get("/", HTTP_HOST="villasur.example.test"))
    with CaptureQueriesContext(connection) as queries:
        client.get("/health", HTTP_HOST="villasur.example.test")
    assert not [query for query in queries if "municipalities" in query["sql"]]


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"hosts": "villa sur.example.test"}, "hosts", "villa sur.example.test no es un nombre de host."),
        ({"hosts": "norte.example.test"}, "hosts", "Otro municipio responde en norte.example.test."),
        ({"colour": "red"}, "colour", "Un color como #rrggbb."),
        ({"smtp_host": "smtp.example.test", "smtp_password_env": "clave"}, "smtp_password_env", "variable de entorno"),
        ({"smtp_password_env": "VILLA_SUR_SMTP"}, "smtp_host", "nombrá también el servidor"),
    ],
)
def test_what_a_municipality_may_not_hold_is_refused_in_spanish(fields, field, message):
    make(name="Norte", slug="norte", hosts="norte.example.test")
    with pytest.raises(ValidationError) as refused:
        make(**fields)
    assert any(message in text for text in refused.value.message_dict[field]), refused.value.message_dict


def test_the_default_municipality_stays_active():
    default = Municipality.objects.default()
    default.active = False
    with pytest.raises(ValidationError) as refused:
        default.full_clean()
    assert "active" in refused.value.message_dict


def test_only_superusers_see_and_change_municipalities_in_admin(client, admin_client):
    municipality = make()
    staff = User.objects.create_user(username="operator", password="x", is_staff=True)
    staff.user_permissions.set(Permission.objects.filter(content_type__app_label="municipalities"))
    client.force_login(staff)
    change = f"{CHANGELIST}{municipality.pk}/change/"
    assert client.get(CHANGELIST).status_code == 403
    assert client.get(change).status_code == 403
    assert client.post(change, {"name": "Tomado", "slug": "villa-sur"}).status_code == 403
    assert client.post(f"{CHANGELIST}add/", {"name": "Otra", "slug": "otra"}).status_code == 403
    assert "Municipios" not in client.get("/admin/").content.decode()
    municipality.refresh_from_db()
    assert municipality.name == "Villa Sur" and not Municipality.objects.filter(slug="otra").exists()

    page = admin_client.get(CHANGELIST).content.decode()
    assert "Municipios" in page and "Villa Sur" in page
    added = admin_client.post(f"{CHANGELIST}add/", {"name": "Otra", "slug": "otra", "colour": "#123456",
                                                   "active": "on", "smtp_use_tls": "on"})  # fmt: skip
    assert added.status_code == 302 and Municipality.objects.filter(slug="otra", is_default=False).exists()


def test_the_default_municipality_cannot_be_deleted_from_admin(admin_client):
    default = Municipality.objects.default()
    assert admin_client.post(f"{CHANGELIST}{default.pk}/delete/", {"post": "yes"}).status_code == 403
    actions = admin_client.get(CHANGELIST).content.decode()
    assert "delete_selected" not in actions
    assert Municipality.objects.filter(pk=default.pk).exists()


def test_admin_says_whether_a_secret_s_variable_is_set_and_never_its_value(admin_client, monkeypatch):
    municipality = make(smtp_host="smtp.example.test", smtp_password_env="VILLA_SUR_SMTP",
                        slack_webhook_env="VILLA_SUR_SLACK")  # fmt: skip
    monkeypatch.setenv("VILLA_SUR_SMTP", "s3cret-value")
    page = admin_client.get(f"{CHANGELIST}{municipality.pk}/change/").content.decode()
    assert "VILLA_SUR_SMTP: definida" in page
    assert "VILLA_SUR_SLACK: no está definida en este proceso" in page
    assert "s3cret-value" not in page
