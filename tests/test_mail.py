"""The kept email connection (jobs.mail.smtp) and the Slack session, against real servers on loopback."""

import asyncio
import json
import os
import re
import smtplib
import threading
import time
from email import message_from_bytes
from email.policy import default as email_policy
from email.utils import parseaddr
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from django.core import mail as django_mail
from django.core.mail import EmailMessage, EmailMultiAlternatives
from django.template.loader import render_to_string

from jobs.mail import messages, smtp
from jobs.tasks import slack
from tests.conftest import SmtpSink, wait_for


class CountingSink(SmtpSink):
    """An SmtpSink that keeps its SMTP sessions (one per client connection) and can misbehave in DATA."""

    def __init__(self):
        super().__init__()
        self.sessions = []  # aiosmtpd's protocol object of every connection that said EHLO
        self.via = []  # the session each accepted message came over
        self.mail_froms = 0
        self.senders = []  # the address of every MAIL FROM
        self.mail_reply: str | None = None  # answer MAIL FROM with this instead of 250
        self.mail_delay = 0.0  # seconds before answering MAIL FROM
        self.data_reply: str | None = None  # answer DATA with this instead of accepting the message
        self.drop_in_data = False  # keep the message, then close the connection without answering
        self.logins: list[tuple[str, str]] = []  # every AUTH's user and password

    @property
    def open_sessions(self) -> list:
        return [server for server in self.sessions if server.transport is not None]

    @property
    def subjects(self) -> list[str]:
        return [message["Subject"] for message in self.messages]

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        self.sessions.append(server)
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        self.mail_froms += 1
        self.senders.append(address)
        await asyncio.sleep(self.mail_delay)
        if self.mail_reply:
            return self.mail_reply
        envelope.mail_from, envelope.mail_options = address, mail_options
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.data_reply:
            return self.data_reply
        reply = await super().handle_DATA(server, session, envelope)
        self.via.append(server)
        if self.drop_in_data:
            server.transport.close()
        return reply


@pytest.fixture
def smtp_servers(settings):
    """Start real SMTP sinks: `start()` returns one; settings point at the first one started."""
    controllers = []

    def start(login: tuple[str, str] | None = None) -> CountingSink:
        """`login`: the only user and password the server takes (AUTH, without TLS here: loopback)."""
        sink = CountingSink()

        def authenticate(server, session, envelope, mechanism, auth_data):
            sink.logins.append((auth_data.login.decode(), auth_data.password.decode()))
            return AuthResult(success=(auth_data.login.decode(), auth_data.password.decode()) == login)

        options = {"authenticator": authenticate, "auth_require_tls": False, "auth_required": True} if login else {}
        controller = Controller(sink, hostname="127.0.0.1", port=sink.port, **options)
        controller.start()
        sink.loop = controller.loop
        if not controllers:
            settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
            settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", sink.port
            settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
            settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
        controllers.append(controller)
        return sink

    yield start
    smtp.close()  # while the servers still answer
    for controller in controllers:
        controller.stop()


@pytest.fixture
def sink(smtp_servers) -> CountingSink:
    return smtp_servers()


@pytest.fixture(params=["ours", "other"])
def message(request):
    """Builds messages of our shape (sent by `jobs.mail.smtp._sendmail`) or of another (smtplib's `sendmail`)."""

    def build(subject: str = "hola") -> EmailMessage:
        if request.param == "other":
            return EmailMessage(subject=subject, body="cuerpo", to=["juan@example.com"])
        ours = EmailMultiAlternatives(subject=subject, body="cuerpo", to=["Juan <juan@example.com>"])
        ours.attach_alternative("<p>cuerpo</p>", "text/html")
        return ours

    return build


def test_emails_from_one_thread_share_one_connection(sink, message):
    for n in range(5):
        smtp.send(message(f"m{n}"))

    assert sink.subjects == ["m0", "m1", "m2", "m3", "m4"]
    assert len(sink.sessions) == 1 and len(sink.open_sessions) == 1


@pytest.mark.parametrize("notice", [b"", b"421 4.4.2 Idle timeout\r\n"], ids=["silent", "421"])
def test_a_connection_the_server_dropped_while_idle_is_reopened_and_the_email_sent_once(sink, notice, message):
    smtp.send(message("first"))
    [session] = sink.sessions

    def idle_timeout():  # what a server does to a client idle too long: maybe a 421, then close
        session.transport.write(notice)
        session.transport.close()

    sink.loop.call_soon_threadsafe(idle_timeout)
    wait_for(lambda: not sink.open_sessions)

    smtp.send(message("second"))

    assert sink.subjects == ["first", "second"]
    assert len(sink.sessions) == 2


def test_a_connection_lost_after_data_is_not_resent_and_the_next_email_starts_afresh(sink, message):
    smtp.send(message("first"))
    sink.drop_in_data = True  # the server keeps the message but its answer never arrives

    with pytest.raises(smtplib.SMTPServerDisconnected):
        smtp.send(message("second"))

    assert sink.subjects == ["first", "second"]  # no resend
    sink.drop_in_data = False
    smtp.send(message("third"))
    assert sink.subjects == ["first", "second", "third"]
    assert len(sink.sessions) == 2


def test_a_refusal_at_the_end_of_data_propagates_and_closes_the_connection(sink, message):
    smtp.send(message("first"))
    sink.data_reply = "451 4.3.0 Try again later"

    with pytest.raises(smtplib.SMTPDataError) as refused:
        smtp.send(message("second"))

    assert refused.value.smtp_code == 451
    wait_for(lambda: not sink.open_sessions)  # closed after the error
    sink.data_reply = None
    smtp.send(message("third"))
    assert sink.subjects == ["first", "third"]
    assert len(sink.sessions) == 2


def test_a_refused_sender_fails_that_email_only(sink, message, settings):
    smtp.send(message("first"))
    sink.mail_reply = "550 5.7.1 Sender not allowed"

    with pytest.raises(smtplib.SMTPSenderRefused) as refused:
        smtp.send(message("second"))

    assert refused.value.smtp_code == 550
    sink.mail_reply = None
    smtp.send(message("third"))
    assert sink.subjects == ["first", "third"]
    assert sink.senders == [parseaddr(settings.DEFAULT_FROM_EMAIL)[1]] * 3  # the address alone, in the envelope


def test_a_fresh_connection_that_fails_is_not_retried(sink, message):
    sink.mail_reply = "421 4.7.0 Too busy, closing"  # not an idle drop: a new connection would fare no better

    with pytest.raises(smtplib.SMTPSenderRefused):
        smtp.send(message())

    assert sink.mail_froms == 1 and len(sink.sessions) == 1


@pytest.mark.slow
def test_the_answer_to_the_end_of_a_message_is_awaited_longer_than_the_other_commands(sink, message, settings):
    """RFC 5321 §4.5.3.2.6: the server may take minutes to answer the end of a message, and it has the
    message meanwhile; giving up after EMAIL_TIMEOUT would send it again on the next attempt."""
    settings.EMAIL_TIMEOUT = 1
    sink.data_delays = [2]

    assert smtp.send(message("slow answer")) == 1

    assert sink.subjects == ["slow answer"]
    assert smtp._kept_ones()[None].backend.connection.sock.gettimeout() == 1  # the next commands' timeout
    sink.mail_delay = 2
    with pytest.raises(smtplib.SMTPServerDisconnected, match="timed out"):
        smtp.send(message("slow MAIL FROM"))


def test_the_wait_for_the_answer_ends_by_answer_by_and_the_message_is_not_sent_again(sink, message, settings):
    settings.EMAIL_TIMEOUT = 1
    sink.data_delays = [3]

    with pytest.raises(smtplib.SMTPServerDisconnected, match="timed out"):
        smtp.send(message("too slow"), answer_by=time.monotonic() + 1.5)

    assert sink.subjects == ["too slow"]
    smtp.send(message("next"))  # on a new connection
    assert sink.subjects == ["too slow", "next"] and len(sink.sessions) == 2


def test_a_message_id_is_the_same_for_one_key_opaque_and_in_the_sender_s_domain(settings):
    settings.DEFAULT_FROM_EMAIL = "Ceres <no-reply@ceres.example>"

    first = messages.message_id("email-verify-42@20250101T000000.000000")

    assert first == messages.message_id("email-verify-42@20250101T000000.000000")
    assert first != messages.message_id("email-verify-42@20250101T000000.000001")
    assert re.fullmatch(r"<[0-9a-f]{40}@ceres\.example>", first)


def test_each_thread_has_its_own_connection(sink, message):
    both_sent = threading.Barrier(2, timeout=30)
    errors = []

    def sender(name):
        try:
            smtp.send(message(f"{name}-1"))
            both_sent.wait()  # both connections are open at once here
            smtp.send(message(f"{name}-2"))
        except Exception as exc:
            errors.append(exc)
            both_sent.abort()
        finally:
            smtp.close()

    threads = [threading.Thread(target=sender, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert sorted(sink.subjects) == ["a-1", "a-2", "b-1", "b-2"]
    assert len(sink.sessions) == 2


def test_close_idle_closes_only_a_connection_idle_long_enough(sink, message):
    assert smtp.close_idle(0) is False  # nothing kept yet
    smtp.send(message("first"))

    assert smtp.close_idle(3600) is False
    assert len(sink.open_sessions) == 1
    wait_for(lambda: smtp.close_idle(0.01))
    wait_for(lambda: not sink.open_sessions)

    smtp.send(message("second"))
    assert len(sink.sessions) == 2


def test_changing_the_port_sends_the_next_email_to_the_new_server(smtp_servers, settings, message):
    first, second = smtp_servers(), smtp_servers()
    smtp.send(message("to first"))

    settings.EMAIL_PORT = second.port
    smtp.send(message("to second"))

    assert first.subjects == ["to first"] and second.subjects == ["to second"]
    wait_for(lambda: not first.open_sessions)  # the replaced connection was closed


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")  # loopback only
def test_a_server_of_its_own_has_its_own_kept_connection_and_signs_in(smtp_servers, message):
    installation, own = smtp_servers(), smtp_servers(login=("norte", "clave-del-correo"))
    server = smtp.Server("127.0.0.1", own.port, "norte", "clave-del-correo", use_tls=False)

    for subject, to in (("a", server), ("b", None), ("c", server), ("d", None)):
        smtp.send(message(subject), server=to)

    assert own.subjects == ["a", "c"] and installation.subjects == ["b", "d"]
    assert len(own.sessions) == len(installation.sessions) == 1  # one kept connection to each
    assert own.logins == [("norte", "clave-del-correo")]
    assert "clave-del-correo" not in repr(server)
    closed = []  # close_idle closes each as it gets idle long enough: the last one used maybe later
    wait_for(lambda: closed.append(smtp.close_idle(0.01)) or not own.open_sessions and not installation.open_sessions)
    assert any(closed)


def test_a_forked_child_never_uses_the_parent_s_connection(sink, message):
    smtp.send(message("parent-1"))

    pid = os.fork()
    if pid == 0:  # the child: a connection of its own, the parent's left alone
        status = 1
        try:
            smtp.send(message("child"))
            smtp.close()
            status = 0
        finally:
            os._exit(status)
    assert os.waitpid(pid, 0)[1] == 0
    smtp.send(message("parent-2"))

    assert sink.subjects == ["parent-1", "child", "parent-2"]
    parent_1, child, parent_2 = sink.via
    assert parent_1 is parent_2 and child is not parent_1


def test_other_backends_work_too(settings, message):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"

    smtp.send(message("one"))
    smtp.send(message("two"))

    assert [m.subject for m in django_mail.outbox] == ["one", "two"]
    smtp.close()


# --- Slack ------------------------------------------------------------------------------------


class SlackKeepAlive(BaseHTTPRequestHandler):
    """A webhook that keeps connections alive (HTTP/1.1) and records the client port of every post."""

    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.posts.append((self.client_address[1], body["text"]))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture
def keep_alive_slack(settings):
    server = ThreadingHTTPServer(("127.0.0.1", 0), SlackKeepAlive)
    server.posts = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    settings.SLACK_WEBHOOK_URL = f"http://127.0.0.1:{server.server_port}/services/T0/B0/secret"
    yield server
    server.shutdown()
    server.server_close()


def test_slack_posts_from_one_thread_share_one_connection(keep_alive_slack):
    for n in range(4):
        assert slack.post_to_slack(f"alerta {n}") == "enviado a Slack"

    ports = {port for port, _ in keep_alive_slack.posts}
    assert [text for _, text in keep_alive_slack.posts] == [f"alerta {n}" for n in range(4)]
    assert len(ports) == 1


# --- the message bytes ------------------------------------------------------------------------


def alternatives(subject="Confirmá tu cuenta de Ceres", name="Zoë <b>&amp;</b>", **options):
    context = {"name": name, "link": "http://127.0.0.1:8000/accounts/verify/abc/def/", "hours": 24}
    message = EmailMultiAlternatives(subject=subject, body=render_to_string("emails/verify.txt", context),
                                     to=["zoe@example.test"], **options)  # fmt: skip
    message.attach_alternative(render_to_string("emails/verify.html", context), "text/html")
    return message


def parsed(raw: bytes) -> tuple:
    """Everything a mail client reads, less what differs per message (date, id, boundary)."""
    message = message_from_bytes(raw, policy=email_policy)
    headers = [(k, v) for k, v in message.items() if k not in ("Date", "Message-ID", "Content-Type")]
    parts = [(part.get_content_type(), dict(part.items()).get("Content-Transfer-Encoding"), part.get_content())
             for part in message.iter_parts()]  # fmt: skip
    return message.get_content_type(), headers, parts


@pytest.mark.parametrize("subject", ["Confirmá tu cuenta de Ceres", "¡Te damos la bienvenida a Ceres!", "plain ascii"])
def test_our_emails_are_written_as_django_would_write_them(subject):
    message = alternatives(subject)
    ours, django_s = messages.as_smtp_bytes(message), message.message().as_bytes(linesep="\r\n")

    assert parsed(ours) == parsed(django_s)
    assert b"\r\n" in ours and b"\n" not in ours.replace(b"\r\n", b"")  # SMTP line endings only


@pytest.mark.parametrize(
    "options",
    [{"cc": ["x@example.test"]}, {"headers": {"X-Campaign": "1"}}, {"reply_to": ["r@example.test"]}],
)
def test_other_shapes_take_django_s_path(options):
    message = alternatives(**options)

    assert parsed(messages.as_smtp_bytes(message)) == parsed(message.message().as_bytes(linesep="\r\n"))
    assert messages.is_ours(alternatives()) and not messages.is_ours(message)


def test_a_message_id_given_is_written_as_django_would_write_it():
    message = alternatives(headers={"Message-ID": messages.message_id("key")})
    ours, django_s = messages.as_smtp_bytes(message), message.message().as_bytes(linesep="\r\n")

    assert messages.is_ours(message)
    assert parsed(ours) == parsed(django_s)
    assert (
        message_from_bytes(ours)["Message-ID"]
        == message_from_bytes(django_s)["Message-ID"]
        == messages.message_id("key")
    )


def test_a_line_too_long_for_smtp_takes_django_s_encoding():
    message = alternatives(name="x" * 2000)

    raw = messages.as_smtp_bytes(message)
    assert not messages.is_ours(message) and max(len(line) for line in raw.split(b"\r\n")) <= 998
    assert parsed(raw) == parsed(message.message().as_bytes(linesep="\r\n"))
