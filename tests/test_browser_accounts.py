"""A person in Chromium: a forgotten password, from the login page's link to logging in with the new
one, the email sent by a real worker to the SMTP sink. Screenshots of the pages, light and dark."""

import re

import pytest
from django.urls import reverse

from ceres_site.accounts.models import User
from tests.browser import ARTIFACTS, screenshots
from tests.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

LINK = re.compile(r"https?://\S+/accounts/password/reset/link/#[A-Za-z0-9_-]+\.[A-Za-z0-9-]+")
OLD, NEW = "una-clave-bien-larga-42", "otra-clave-mas-larga-77"


@pytest.mark.slow
def test_a_person_who_forgot_the_password_chooses_a_new_one_and_logs_in(page, live_server, live_worker, smtp):
    User.objects.create_user(username="ana@example.com", email="ana@example.com", first_name="Ana", password=OLD)
    live_worker("email")
    site = live_server.url
    screenshots(page, site, {
        "home-logged-out": reverse("home"), "login": reverse("accounts:login"), "signup": reverse("accounts:signup"),
        "reset-request": reverse("accounts:password_reset"), "reset-done": reverse("accounts:password_reset_done"),
    })  # fmt: skip

    page.goto(site + reverse("home"))
    page.click("a:has-text('Ingresar')")
    page.click("a:has-text('¿Olvidaste tu contraseña?')")
    page.fill("#id_email", "Ana@Example.com")
    page.click("button:has-text('Mandame el enlace')")
    page.wait_for_selector("h1:has-text('Revisá tu email')")

    wait_for(lambda: smtp.messages, timeout=60)  # the worker's email
    [message] = smtp.messages
    assert message["To"] == "ana@example.com" and message["Subject"] == "Cambiá tu contraseña de Ceres"
    link = LINK.search(message.get_body(("plain",)).get_content()).group(0)
    token = link.rpartition(".")[2]
    page.goto(site + link[link.index("/accounts/") :])  # the site of the link is this server
    page.wait_for_selector("h1:has-text('Elegí una contraseña nueva')")
    page.wait_for_selector("#id_new_password1")
    assert "#" not in page.url and token not in page.url  # out of the address bar and the history
    set_password = page.url.removeprefix(site)
    screenshots(page, site, {"reset-set-password": set_password})

    page.goto(site + set_password)
    page.fill("#id_new_password1", NEW)
    page.fill("#id_new_password2", NEW)
    page.click("button:has-text('Guardar la contraseña nueva')")
    page.wait_for_selector("h1:has-text('Tu contraseña cambió')")
    screenshots(page, site, {"reset-complete": reverse("accounts:password_reset_complete")})

    page.goto(site + link[link.index("/accounts/") :])  # the same link again: it died with the old password
    page.wait_for_selector("h1:has-text('Este enlace ya no sirve')")
    screenshots(page, site, {"reset-link-used": set_password})  # its page too, now the session holds no token

    page.goto(site + reverse("accounts:password_reset_complete"))
    page.click("a:has-text('Ingresar')")
    page.fill("#id_username", "ana@example.com")
    page.fill("#id_password", NEW)
    page.click("button:has-text('Ingresar')")
    page.wait_for_selector("h1:has-text('Tu perfil')")
    screenshots(page, site, {"home-logged-in": reverse("home")})

    page.goto(site + reverse("home"))
    assert page.locator("text=Hola, Ana.").count() == 1
    page.click("button:has-text('Salir')")
    page.wait_for_selector("a:has-text('Ingresar')")  # logged out, back home
    assert page.locator("button:has-text('Salir')").count() == 0


def test_the_done_pages_lead_somewhere(page, live_server):
    for scheme in ("light", "dark"):  # "Listo" answers a POST: no address to hand to `screenshots`
        page.emulate_media(color_scheme=scheme)
        page.goto(live_server.url + reverse("accounts:resend"))
        page.fill("#id_email", "nadie@example.com")
        page.click("button:has-text('Reenviar')")
        page.wait_for_selector("h1:has-text('Listo')")
        page.screenshot(path=ARTIFACTS / f"resend-done-{scheme}.png", full_page=True)
    page.click("a:has-text('Ir al inicio')")
    page.wait_for_selector("a:has-text('Ingresar')")
    screenshots(page, live_server.url, {"signup-done": reverse("accounts:signup_done")})
