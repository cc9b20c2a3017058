"""Email bodies filled into a template rendered once (`jobs.mail.bodies`) are the bodies Django renders."""

import logging

import pytest
from django.template.loader import render_to_string
from django.test import override_settings
from django.utils import translation

from jobs.mail import bodies
from jobs.tasks.email import PERSONAL

TEMPLATES = ["verify", "welcome", "account_exists", "cv_rejected", "password_reset"]
NAMES = ["Ada", "", "<b>Zoë</b> & \"Ñandú\" 'x'", "{{ link }} {% if name %}", "x" * 60]


@pytest.fixture(autouse=True)
def _fresh():
    bodies._skeletons.clear()
    yield
    bodies._skeletons.clear()


@pytest.mark.parametrize("template", TEMPLATES)
@pytest.mark.parametrize("extension", ["txt", "html"])
@pytest.mark.parametrize("language", ["es-ar", "en"])
def test_every_email_body_is_what_django_renders(template, extension, language):
    name = f"emails/{template}.{extension}"
    with translation.override(language):
        for number, first_name in enumerate(NAMES * 2):  # the second time round, every shape is filled in
            context = {
                "name": first_name,
                "link": f"https://ceres.example/verify#sel{number}.<&>\"'",
                "reason": f"el archivo <{number}> no es un PDF & pesa 0 bytes" if number % 3 else "",
                "resend": "https://ceres.example/resend" if number % 2 else "",
                "hours": 24 if number % 4 else 1,
            }
            assert bodies.render(name, context, PERSONAL) == render_to_string(name, context)
    assert any(bodies._skeletons.values()), "a template of ours must be filled in, not rendered every time"


def test_a_template_that_transforms_a_value_is_rendered_by_django(tmp_path, caplog):
    (tmp_path / "shout.txt").write_text("{% load i18n %}Hola {{ name|upper }}: {{ link }}\n")
    with override_settings(
        TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates", "DIRS": [tmp_path]}]
    ):
        with caplog.at_level(logging.WARNING, logger="jobs.mail.bodies"):
            first = bodies.render("shout.txt", {"name": "ada", "link": "l1"}, PERSONAL)
            second = bodies.render("shout.txt", {"name": "zoë", "link": "l2"}, PERSONAL)
    assert (first, second) == ("Hola ADA: l1\n", "Hola ZOË: l2\n")
    assert list(bodies._skeletons.values()) == [None]
    assert "shout.txt cannot be filled in" in caplog.text


def test_a_value_escaped_in_one_place_and_not_in_another_is_rendered_by_django(tmp_path):
    (tmp_path / "mixed.html").write_text(
        "<p>{{ name }}</p>{% autoescape off %}<!-- {{ name }} -->{% endautoescape %}\n"
    )
    with override_settings(
        TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates", "DIRS": [tmp_path]}]
    ):
        assert bodies.render("mixed.html", {"name": "Ada"}, ("name",)) == "<p>Ada</p><!-- Ada -->\n"
        assert bodies.render("mixed.html", {"name": "<i>"}, ("name",)) == "<p>&lt;i&gt;</p><!-- <i> -->\n"
    assert list(bodies._skeletons.values()) == [None]


def test_an_html_template_without_escaping_is_filled_without_escaping(tmp_path):
    (tmp_path / "raw.html").write_text("{% autoescape off %}<p>{{ name }}</p>{% endautoescape %}\n")
    with override_settings(
        TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates", "DIRS": [tmp_path]}]
    ):
        assert bodies.render("raw.html", {"name": "Ada"}, ("name",)) == "<p>Ada</p>\n"
        assert bodies.render("raw.html", {"name": "<i>"}, ("name",)) == "<p><i></p>\n"
    assert [found[1] for found in bodies._skeletons.values()] == [False]
