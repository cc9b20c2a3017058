"""One voice: what staff and people read is es-AR voseo, Django's own admin texts included (they come
in usted from Django's catalogs and are overridden in locale_django/)."""

import json
import re

import pytest
from django.contrib.auth.models import Group, Permission
from django.template.loader import render_to_string
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from ceres_site.accounts.forms import SignupForm
from ceres_site.accounts.models import User
from ceres_site.newsletters.models import Newsletter
from jobs.enqueue.producers import enqueue_email_verify, enqueue_stored_call
from jobs.models import DeadLetter, JobAction

pytestmark = pytest.mark.django_db(transaction=True)

# How Django's es and es_AR catalogs address the reader (usted); none may reach a page staff read.
USTED = re.compile(
    r"\b(Seleccione|Empiece|Puede |usted|Ud\.|Elija|Haga clic|Haga click|Escriba|Introduzca|introduzca|Ingrese"
    r"|Confirme|Olvidó|Desea|desea|Está seguro|Asegúrese|Corrija|corrija|Mantenga|Tiene modificaciones"
    r"|No tiene permiso|Ha seleccionado|su contraseña|Su contraseña|sus credenciales)"
)


def unvoiced(html: str) -> list[str]:
    """The usted forms left in a page: its text and its attributes (placeholders, titles), not its scripts."""
    text = re.sub(r"<script\b.*?</script>|<style\b.*?</style>", " ", html, flags=re.S)
    return sorted({match.group(0) for match in USTED.finditer(text)})


def get(client, url, **kwargs) -> str:
    response = client.get(url, **kwargs)
    assert response.status_code == 200, url
    return response.content.decode()


def messages_of(response) -> list[str]:
    return [re.sub(r"<[^>]+>", "", str(message)) for message in response.context["messages"]]  # links: their text


def dead_letter(job_id="email-verify-9", **extra) -> DeadLetter:
    return DeadLetter.objects.create(
        job_id=job_id, job_created_at=timezone.now(), queue="email", func_name="jobs.tasks.email.send_verify_email",
        kwargs={"user_id": 9}, exc_type="PermanentJobError", exc_message="el servidor de correo rechazó al destinatario",
        failed_at=timezone.now(), alert=DeadLetter.Alert.SKIPPED, **extra,
    )  # fmt: skip


def test_the_admin_pages_staff_use_speak_voseo(admin_client):
    group = Group.objects.create(name="operadores")
    dead_letter()
    pages = {
        "index": reverse("admin:index"),
        "archive": reverse("admin:jobs_deadletter_changelist"),
        "users": reverse("admin:accounts_user_changelist"),
        "user add": reverse("admin:accounts_user_add"),
        "group": reverse("admin:auth_group_change", args=[group.pk]),
        "group delete": reverse("admin:auth_group_delete", args=[group.pk]),
        "group history": reverse("admin:auth_group_history", args=[group.pk]),
        "password change": reverse("admin:password_change"),
    }
    seen = {name: get(admin_client, url) for name, url in pages.items()}

    assert {name: unvoiced(html) for name, html in seen.items() if unvoiced(html)} == {}
    assert 'placeholder="Empezá a escribir para filtrar…"' in seen["archive"]  # the sidebar's filter
    assert "Elegí falla archivada para ver" in seen["archive"] or "Elegí fallas archivadas" in seen["archive"]
    assert "Elegir todos los objetos de esta página para una acción" in seen["archive"]
    assert "Por fecha de la falla" in seen["archive"] and "Por fecha de resolución" in seen["archive"]
    assert "Por falló el" not in seen["archive"] and "Por resuelto el" not in seen["archive"]
    assert "Elegí usuario para modificar" in seen["users"]
    assert "Después de crear el usuario vas a poder modificar más opciones." in seen["user add"]
    assert "¿Seguro que querés borrar grupo “operadores”?" in seen["group delete"]
    assert "Historial de cambios: operadores" in seen["group history"]
    assert "Por seguridad, ingresá tu contraseña actual" in seen["password change"]


def test_saving_and_deleting_in_admin_answer_in_voseo(admin_client):
    group = Group.objects.create(name="operadores")

    saved = admin_client.post(
        reverse("admin:auth_group_change", args=[group.pk]), {"name": "operación", "_continue": "1"}, follow=True
    )
    asked = admin_client.post(
        reverse("admin:auth_group_changelist"), {"action": "delete_selected", "_selected_action": [group.pk]}
    )
    nothing = admin_client.post(
        reverse("admin:auth_group_changelist"), {"action": "delete_selected", "index": 0}, follow=True
    )

    assert messages_of(saved) == ["Se modificó grupo “operación”. Abajo podés seguir con los cambios."]
    assert "¿Seguro que querés borrar lo que elegiste (grupo)?" in asked.content.decode()
    assert messages_of(nothing) == ["Para aplicar una acción, primero elegí elementos. No cambió ninguno."]
    assert unvoiced(saved.content.decode() + asked.content.decode() + nothing.content.decode()) == []


def test_the_admin_login_and_its_errors_speak_voseo(admin_user):
    client = Client()
    page = get(client, reverse("admin:login"))
    wrong = client.post(reverse("admin:login"), {"username": "admin", "password": "not it"}).content.decode()

    assert unvoiced(page + wrong) == []
    assert "Ingresá un nombre de usuario y una contraseña correctos de una cuenta de staff." in wrong


def test_the_admin_javascript_catalog_speaks_voseo(admin_client):
    """The calendar, the permission pickers and the action bar get their words from /admin/jsi18n/."""
    script = get(admin_client, reverse("admin:jsi18n"))
    found = re.search(r"const newcatalog = (\{.*?\});\n", script, re.S)
    assert found, script
    catalog = json.dumps(json.loads(found.group(1)), ensure_ascii=False)  # as read, not as \u00ed

    assert unvoiced(catalog) == []
    for text in ("Elegí una fecha", "Escribí en este cuadro para filtrar la lista de %s disponibles.",
                 "Tenés cambios sin guardar en algunos campos.", "%(sel)s de %(cnt)s elegidos"):  # fmt: skip
        assert text in catalog, text


def test_permissions_are_named_in_spanish_on_the_user_and_group_pages(admin_client):
    user = User.objects.create_user(username="operadora", email="operadora@example.com")
    group = Group.objects.create(name="operadores")

    pages = [get(admin_client, reverse("admin:accounts_user_change", args=[user.pk])),
             get(admin_client, reverse("admin:auth_group_change", args=[group.pk]))]  # fmt: skip

    count = Permission.objects.count()
    for page in pages:
        options = re.findall(r'<option value="\d+"[^>]*>([^<]*)</option>', page)
        names = [option for option in options if option.count("|") == 2]
        assert len(names) == count
        assert not [name for name in names if " | Can " in name]
        for name in ("Cuentas | usuario | Agregar usuario", "Colas y jobs | panel de colas | Ver el panel de colas",
                     "Colas y jobs | falla archivada | Reintentar jobs del archivo de fallas"):  # fmt: skip
            assert name in names, name
        assert "Colas y jobs | job de una acción | Ver job de una acción" in names  # a model without a page


def test_the_password_similarity_error_names_the_field_in_spanish():
    form = SignupForm(data={"email": "marcelaquiroga@example.com", "first_name": "Ana", "password": "marcelaquiroga1"})

    assert not form.is_valid()
    assert form.errors["password"] == ["La contraseña se parece demasiado a tu dirección de email."]


def test_a_rejected_cv_s_reason_is_its_own_sentence():
    context = {"name": "Ana", "reason": "El archivo pesa más de 5 MB.", "link": "https://example.com/perfil",
               "site": "Ceres"}  # fmt: skip

    for template in ("emails/cv_rejected.txt", "emails/cv_rejected.html"):
        assert "No pudimos aceptar el CV que subiste a Ceres. El archivo pesa más de 5 MB." in render_to_string(
            template, context
        )


def dashboard(name, *args):
    return reverse(f"admin:jobs_dashboard_{name}", args=args)


def test_the_dashboard_says_what_it_did_in_sentences(admin_client, policy, work):
    policy("email", retry_max=0)
    for n in (1, 2, 3):
        enqueue_stored_call(queue_name="email", func="tests.tasks.always_fail", job_id=f"email-failed-{n}", kwargs={})
    work("email")
    retry = dashboard("action", "email", "retry")

    asked = admin_client.post(retry, {"job_ids": ["email-failed-1"]})
    one = admin_client.post(retry, {"job_ids": ["email-failed-1"], "confirm": "yes"}, follow=True)
    some = admin_client.post(retry, {"job_ids": ["email-failed-2", "email-failed-1"], "confirm": "yes"}, follow=True)
    none = admin_client.post(retry, {"job_ids": ["email-failed-1"], "confirm": "yes"}, follow=True)
    paused = admin_client.post(dashboard("queue_action", "email", "pause"), {"confirm": "yes"}, follow=True)
    overview = get(admin_client, dashboard("overview"))
    resumed = admin_client.post(dashboard("queue_action", "email", "resume"), {"confirm": "yes"}, follow=True)

    assert "<h1>¿Reintentar?</h1>" in asked.content.decode()
    assert messages_of(one) == ["Se volvió a encolar 1 job."]
    assert messages_of(some) == ["Se volvió a encolar 1 de 2 jobs."]
    assert messages_of(none) == ["No cambió ningún job: ya no estaban en un estado al que se aplique esta acción."]
    assert messages_of(paused) == ["La cola email quedó pausada: sus jobs esperan hasta que la reanudes."]
    assert "La cola email está pausada (por admin, desde el" in overview
    assert "hasta 5 jobs a la vez, en un proceso" in overview and "lugares" not in overview
    assert messages_of(resumed) == ["La cola email volvió a funcionar."]


def test_the_archive_and_its_audit_speak_spanish(admin_client):
    row = dead_letter()

    retried = admin_client.post(
        reverse("admin:jobs_deadletter_changelist"),
        {"action": "retry", "_selected_action": [row.pk], "confirm": "yes", "reason": "probando"},
        follow=True,
    )
    audit = get(admin_client, reverse("admin:jobs_jobaction_changelist"))
    detail = get(admin_client, dashboard("job", "email", row.job_id))

    assert messages_of(retried) == ["Se volvió a encolar email-verify-9."]
    assert JobAction.objects.get().detail == f"archivo de fallas #{row.pk}" and "archivo de fallas" in audit
    assert "Archivo de fallas" in detail and "dead letters" not in detail + audit
    assert ">Fecha de la falla</a>" in retried.content.decode()


def test_the_user_page_names_job_states_in_spanish(admin_client, smtp, work):
    user = User.objects.create_user(username="ana@example.com", email="ana@example.com")
    enqueue_email_verify(user_id=user.pk, municipality=user.municipality_id)
    work("email")

    page = get(admin_client, reverse("admin:accounts_user_change", args=[user.pk]))

    assert f"email-verify-{user.pk}</a></td>" in page and "<td>completado</td>" in page and "finished<" not in page


def test_a_sent_newsletter_s_dates_and_sender_agree(admin_client):
    sent = Newsletter.objects.create(subject="Novedades", body_text="Hola", state=Newsletter.State.SENT)

    page = get(admin_client, reverse("admin:newsletters_newsletter_change", args=[sent.pk]))

    assert "Fecha de envío" in page and "Enviada por" in page and "Enviado el" not in page
