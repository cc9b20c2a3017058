"""Two municipalities side by side on one running system (issue 23): the Procfile's processes as
`bin/run` starts them (honcho), each municipality's citizens signing up on its own host, getting its
emails, and its staff seeing its jobs alone, over HTTP."""

import os
import re
import signal
import subprocess
import sys

import pytest
import requests
from django.contrib.auth.models import Permission

from ceres_site.accounts.models import User
from ceres_site.municipalities.models import Municipality
from tests.conftest import BASE_DIR, free_port, process_env, wait_for
from tests.test_processes import descendants, gone

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

NORTE, SUR = "norte.example.test", "sur.example.test"


class Site:
    """A browser-like session on one municipality's host, against the running web process."""

    def __init__(self, port: int, host: str):
        self.base, self.host, self.session = f"http://127.0.0.1:{port}", host, requests.Session()

    def get(self, path: str) -> requests.Response:
        return self.session.get(self.base + path, headers={"Host": self.host}, timeout=30, allow_redirects=False)

    def post_form(self, path: str, data: dict) -> requests.Response:
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', self.get(path).text)[1]
        return self.session.post(self.base + path, data={**data, "csrfmiddlewaretoken": token},
                                 headers={"Host": self.host}, timeout=30, allow_redirects=False)  # fmt: skip


def up(site: Site) -> bool:
    try:
        return site.get("/accounts/signup/").status_code == 200
    except requests.RequestException:
        return False


def test_two_municipalities_run_side_by_side_on_one_system(smtp, tmp_path, settings):
    settings.PASSWORD_HASHERS = settings.PASSWORD_HASHERS[1:]  # the web process's: the tests' MD5 is not one
    norte = Municipality.objects.create(name="Villa Norte", slug="norte", hosts=NORTE, base_url=f"https://{NORTE}",
                                        sender_name="Villa Norte", sender_email="avisos@norte.example.test")  # fmt: skip
    Municipality.objects.create(name="Villa Sur", slug="sur", hosts=SUR, base_url=f"https://{SUR}",
                                sender_name="Villa Sur", sender_email="avisos@sur.example.test")  # fmt: skip
    operator = User.objects.create_user(username="operadora-norte", password="clave-del-panel-larga", is_staff=True,
                                        municipality=norte)  # fmt: skip
    operator.user_permissions.set(Permission.objects.filter(content_type__app_label="jobs"))
    port = free_port()
    env = process_env(smtp, WEB_PORT=str(port), ALLOWED_HOSTS=f"{NORTE},{SUR},127.0.0.1",
                      PATH=f"{BASE_DIR}/.venv/bin:{os.environ['PATH']}")  # fmt: skip
    log = open(tmp_path / "honcho.log", "wb")
    honcho = subprocess.Popen([sys.executable, "bin/procfile"], cwd=BASE_DIR, env=env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        in_norte, in_sur = Site(port, NORTE), Site(port, SUR)
        wait_for(lambda: up(in_norte), timeout=90)
        for site in (in_norte, in_sur):
            signup = {"email": "ana@example.com", "first_name": "Ana", "password": "una-clave-bien-larga-42"}
            assert site.post_form("/accounts/signup/", signup).status_code == 302

        wait_for(lambda: len(smtp.messages) == 2, timeout=90)
        by_sender = {message["From"]: message for message in smtp.messages}
        assert set(by_sender) == {"Villa Norte <avisos@norte.example.test>", "Villa Sur <avisos@sur.example.test>"}
        for sender, host in (("Villa Norte", NORTE), ("Villa Sur", SUR)):
            message = by_sender[f"{sender} <avisos@{host}>"]
            assert message["To"] == "ana@example.com"
            text = message.get_body(preferencelist=("plain",)).get_content()
            assert f"https://{host}/accounts/verify/" in text and sender in text
        assert User.objects.filter(email="ana@example.com").count() == 2  # one account in each

        staff = Site(port, NORTE)
        login = staff.post_form("/admin/login/", {"username": "operadora-norte", "password": "clave-del-panel-larga"})
        assert login.status_code == 302
        wait_for(lambda: 'email/finished/">1</a>' in staff.get("/admin/jobs/dashboard/").text, timeout=30)
        theirs = User.objects.get(email="ana@example.com", municipality__slug="sur")
        assert staff.get(f"/admin/jobs/dashboard/email/job/email-verify-{theirs.pk}/").status_code == 404
        ours = User.objects.get(email="ana@example.com", municipality=norte)
        assert staff.get(f"/admin/jobs/dashboard/email/job/email-verify-{ours.pk}/").status_code == 200
    finally:
        pids = descendants(honcho.pid)
        honcho.send_signal(signal.SIGTERM)
        try:
            honcho.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(honcho.pid, signal.SIGKILL)
        wait_for(lambda: gone(pids), timeout=60)
