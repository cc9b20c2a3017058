"""Newsletters in a real browser (Debian's Chromium, Playwright) against a live server and a live worker:
staff preview a draft, confirm its send, watch its progress bar, pause and resume it; a person
unsubscribes from the link in the email. Every page, light and dark, in test-artifacts/."""

import re

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone

from ceres_site.accounts.models import User
from ceres_site.newsletters.models import Delivery, Newsletter
from tests.browser import log_in, screenshots
from tests.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

RATE = "25"  # SMTP_RATE_PER_MINUTE: bulk gets 80 %, 20 a minute, one copy every 3 s: slow enough to watch
PROGRESS = "document.querySelector('#newsletter-panel progress')"


@pytest.mark.slow
def test_staff_confirm_a_send_watch_it_pause_and_resume_it_and_a_person_unsubscribes(
    page, live_server, live_worker, smtp, settings
):
    settings.SMTP_RATE_PER_MINUTE = float(RATE)  # what this server's confirmation page reads; the worker's below
    now = timezone.now()
    User.objects.bulk_create(
        User(username=f"vecina{n}@example.com", email=f"vecina{n}@example.com", first_name=f"Vecina {n}",
             email_verified_at=now)
        for n in range(12)
    )  # fmt: skip
    editor = User.objects.create_user(username="editora", email="editora@example.com", first_name="Editora",
                                      password="clave-del-panel", is_staff=True)  # fmt: skip
    editor.user_permissions.add(*Permission.objects.filter(content_type__app_label="newsletters"))
    draft = Newsletter.objects.create(
        subject="Novedades de diciembre",
        body_text="Hola {{ name }}: el 8 de diciembre abre el nuevo centro vecinal.\n\n"
        "Para no recibir más newsletters: {{ unsubscribe_url }}",
        body_html="<h1>Novedades de diciembre</h1><p>Hola {{ name }}: el 8 de diciembre abre el nuevo centro "
        'vecinal.</p><p><a href="{{ unsubscribe_url }}">No recibir más newsletters</a></p>',
    )
    own_page = reverse("admin:newsletters_newsletter_change", args=[draft.pk])

    log_in(page, live_server.url + own_page, "editora", "clave-del-panel")
    page.wait_for_selector("#newsletter-panel")
    screenshots(page, live_server.url, {
        "newsletter-draft": own_page,
        "newsletter-preview": reverse("admin:newsletters_newsletter_preview", args=[draft.pk]),
        "newsletter-confirm": reverse("admin:newsletters_newsletter_send", args=[draft.pk]),
    })  # fmt: skip

    page.goto(live_server.url + own_page)
    page.click("#newsletter-panel a:has-text('Vista previa')")
    page.wait_for_selector("text=Así la lee Editora")
    assert "Hola Editora: el 8 de diciembre" in page.locator("pre.newsletter-text").inner_text()
    page.click("a:has-text('Volver a la newsletter')")

    page.click("#newsletter-panel a:has-text('Enviar a todos los suscriptos…')")
    page.wait_for_selector("text=Tiempo estimado hasta terminar")
    figures = page.locator("dl.newsletter-figures").inner_text()
    assert (
        "12 personas" in figures
        and "20 emails por minuto" in figures
        and "Tiempo estimado hasta terminar\nmenos de un minuto" in figures
    )
    draft.refresh_from_db()
    assert draft.state == "draft"  # the page only asks

    live_worker("email", "slack", "bulk", env={"SMTP_RATE_PER_MINUTE": RATE})
    page.click("input[value='Sí, enviarla a 12 personas']")
    page.wait_for_selector("text=Novedades de diciembre: enviando a 12 personas.")
    page.evaluate("window.notReloaded = true")
    page.wait_for_function(f"{PROGRESS}.value >= 2", timeout=60_000)  # the bar moves by itself
    assert page.evaluate("window.notReloaded") is True
    screenshots(page, live_server.url, {"newsletter-sending": own_page})

    page.goto(live_server.url + own_page)
    page.click("button:has-text('Pausar el envío')")
    page.wait_for_selector("text=Novedades de diciembre: en pausa.")
    assert page.locator("button:has-text('Pausar el envío')").count() == 0
    screenshots(page, live_server.url, {"newsletter-paused": own_page})

    page.goto(live_server.url + own_page)
    page.click("button:has-text('Reanudar el envío')")
    page.wait_for_selector("text=copias por enviar")
    page.wait_for_function(f"{PROGRESS}.value === 12", timeout=120_000)
    assert "12 de 12 copias resueltas (100 %)" in page.locator("#newsletter-panel").inner_text()
    screenshots(page, live_server.url, {"newsletter-sent": own_page})
    wait_for(lambda: Delivery.objects.filter(newsletter=draft).count() == 12, timeout=30)
    assert sorted(m["To"] for m in smtp.messages) == sorted(f"vecina{n}@example.com" for n in range(12))

    # A person unsubscribes from the link in the email.
    message = next(m for m in smtp.messages if m["To"] == "vecina3@example.com")
    link = re.search(r"https?://\S+/newsletters/unsubscribe/\S+/", message.get_body(("plain",)).get_content()).group(0)
    unsubscribe = link[link.index("/newsletters/") :]
    screenshots(page, live_server.url, {"unsubscribe-before": unsubscribe})
    page.goto(live_server.url + unsubscribe)
    assert page.locator("text=Si te das de baja, no vas a recibir más newsletters de Ceres.").count() == 1
    assert (
        User.objects.get(username="vecina3@example.com").newsletter_unsubscribed_at is None
    )  # opening it changes nothing
    page.click("button:has-text('Sí, darme de baja')")
    page.wait_for_selector("text=Listo: te diste de baja")
    assert User.objects.get(username="vecina3@example.com").newsletter_unsubscribed_at is not None
    page.reload()  # no "send the form again?": the page says it is done, and asks nothing
    assert page.locator("text=Listo: te diste de baja").count() == 1 and page.locator("form").count() == 0
    screenshots(page, live_server.url, {"unsubscribe-after": unsubscribe + "?done"})
    page.goto(live_server.url + unsubscribe)  # the link opened again, another day
    assert page.locator("text=Ya te habías dado de baja").count() == 1 and page.locator("form").count() == 0
