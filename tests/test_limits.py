"""Rate limits on signup, resend, verify, the password reset, the admin login and the profile's
uploads: per client address and per account, counted in the real Redis, answered with a 429 in Spanish."""

import django_rq
import pytest
from django.core.files.base import ContentFile
from django.urls import reverse

from ceres_site.accounts.models import Upload, User
from tests import files

pytestmark = pytest.mark.django_db(transaction=True)

FORMS = {  # view → (POST data for account n, the form field counted per account)
    "accounts:signup": (lambda n: {"email": f"ana{n}@example.com", "first_name": "Ana", "password": "una-clave-bien-larga-42"}, "email"),
    "accounts:resend": (lambda n: {"email": f"ana{n}@example.com"}, "email"),
    "accounts:verify": (lambda n: {"selector": f"selector{n}", "verifier": "x" * 43}, "selector"),
    "accounts:password_reset": (lambda n: {"email": f"ana{n}@example.com"}, "email"),
    "accounts:password_reset_link": (lambda n: {"uidb64": f"uid{n}", "token": "x" * 39}, "uidb64"),
    "admin:login": (lambda n: {"username": f"staff{n}", "password": "wrong"}, "username"),
}  # fmt: skip
RATE_NAMES = {
    "accounts:signup": "signup",
    "accounts:resend": "resend",
    "accounts:verify": "verify",
    "accounts:password_reset": "password_reset",
    "accounts:password_reset_link": "reset_link",
    "admin:login": "login",
}


def post(client, view, data, ip):
    return client.post(reverse(view), data, HTTP_X_REAL_IP=ip)  # as nginx, on loopback, names the client


def limit(settings, view, *, ip="1000/h", account="1000/h"):
    name, field = RATE_NAMES[view], FORMS[view][1]
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, f"{name}-ip": ip, f"{name}-{field}": account}


@pytest.mark.parametrize("view", FORMS)
def test_one_client_address_gets_a_spanish_429_past_its_limit_and_others_do_not(client, settings, view):
    limit(settings, view, ip="3/h")
    data = FORMS[view][0]

    answers = [post(client, view, data(n), "203.0.113.7").status_code for n in range(4)]

    assert 429 not in answers[:3] and answers[3] == 429
    refused = post(client, view, data(9), "203.0.113.7")
    assert refused.status_code == 429 and refused["Retry-After"]
    assert "Hiciste demasiados intentos en poco tiempo" in refused.content.decode()
    assert post(client, view, data(10), "198.51.100.2").status_code != 429


@pytest.mark.parametrize("view", FORMS)
def test_one_account_gets_a_429_past_its_limit_from_any_number_of_addresses(client, settings, view):
    limit(settings, view, account="2/h")
    data, field = FORMS[view]
    spellings = [data(1), data(1), {**data(1), field: data(1)[field].upper()}]  # one account, however typed

    answers = [post(client, view, fields, f"192.0.2.{n}").status_code for n, fields in enumerate(spellings)]

    assert 429 not in answers[:2] and answers[2] == 429
    assert post(client, view, data(2), "192.0.2.99").status_code != 429


def test_the_signup_refused_with_a_429_creates_nothing(client, settings):
    limit(settings, "accounts:signup", ip="1/h")
    post(client, "accounts:signup", FORMS["accounts:signup"][0](1), "203.0.113.7")

    assert post(client, "accounts:signup", FORMS["accounts:signup"][0](2), "203.0.113.7").status_code == 429
    assert list(User.objects.values_list("email", flat=True)) == ["ana1@example.com"]


def test_wrong_verifiers_in_a_burst_meet_the_configured_limit(client):
    """The attack of the report: 200 wrong verifiers in 2 s; with the production rates."""
    answers = [
        post(client, "accounts:verify", {"selector": "s" * 22, "verifier": f"guess{n}"}, "203.0.113.7")
        for n in range(200)
    ]

    codes = [answer.status_code for answer in answers]
    assert codes[:10] == [400] * 10 and set(codes[10:]) == {429}  # 10 per selector per hour


def test_a_client_cannot_name_itself_with_x_real_ip_unless_it_is_the_proxy(client, settings):
    limit(settings, "accounts:resend", ip="2/h")
    data = FORMS["accounts:resend"][0]
    codes = [
        client.post(reverse("accounts:resend"), data(n), REMOTE_ADDR="203.0.113.7", HTTP_X_REAL_IP=f"10.0.0.{n}").status_code
        for n in range(3)
    ]  # fmt: skip

    assert codes == [200, 200, 429]


def test_counters_expire(client, redis_conn):
    for view, (data, _) in FORMS.items():
        post(client, view, data(1), "203.0.113.7")

    keys = redis_conn.keys("ceres:ratelimit*")
    assert len(keys) == 2 * len(FORMS)  # per address and per account, for each view
    assert all(0 < redis_conn.ttl(key) <= 3600 + 5 for key in keys)


def test_with_redis_unreachable_nothing_is_counted_and_the_pages_work(client, settings):
    user = User.objects.create_user(username="ana@example.com", email="ana@example.com")
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "resend-ip": "1/h"}
    settings.RQ_QUEUES = {
        name: {**config, "URL": "redis://127.0.0.1:1/5"} for name, config in settings.RQ_QUEUES.items()
    }

    codes = [post(client, "accounts:resend", {"email": "ana@example.com"}, "203.0.113.7").status_code for _ in range(3)]

    assert codes == [200, 200, 200]
    assert User.objects.get(pk=user.pk).verify_requested_at is not None  # for the outbox, once Redis is back


@pytest.fixture
def uploader(client, settings, tmp_path):
    """Post a picture to the profile as the account `name`, from the client address `ip`."""
    settings.MEDIA_ROOT = tmp_path / "media"

    def upload(name: str, ip: str):
        client.force_login(User.objects.get_or_create(username=name)[0])
        picture = ContentFile(files.png(), name="yo.png")
        return client.post(reverse("accounts:profile"), {"picture": picture}, HTTP_X_REAL_IP=ip)

    return upload


def test_one_account_gets_a_spanish_429_past_its_upload_limit_from_any_address(uploader, settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "upload-user": "2/h"}

    codes = [uploader("ana", f"192.0.2.{n}").status_code for n in range(3)]

    assert codes == [302, 302, 429]
    refused = uploader("ana", "192.0.2.9")
    assert refused.status_code == 429 and refused["Retry-After"]
    assert "Hiciste demasiados intentos en poco tiempo" in refused.content.decode()
    assert Upload.objects.count() == 2  # nothing stored, no job, for a refused upload
    assert uploader("beto", "192.0.2.9").status_code == 302


def test_one_client_address_gets_a_429_past_its_upload_limit_for_any_account(uploader, settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "upload-ip": "2/h"}

    codes = [uploader(name, "203.0.113.7").status_code for name in ("ana", "beto", "caro")]

    assert codes == [302, 302, 429]
    assert uploader("caro", "198.51.100.2").status_code == 302


def test_a_burst_of_uploads_from_one_account_meets_the_configured_limit(uploader):
    """The report's: 40 uploads in 1.3 s from one account, each a job; with the production rates."""
    codes = [uploader("ana", "203.0.113.7").status_code for _ in range(40)]

    assert codes == [302] * 10 + [429] * 30  # 10 per account per hour
    assert Upload.objects.count() == 10
    assert django_rq.get_queue("files").count == 1  # each upload dropped the waiting job of the one before
