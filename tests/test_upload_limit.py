"""The upload limit (`UPLOAD_MAX_BYTES`, 16 MB) through a real gunicorn, as when it is exposed
without nginx: a body sent with chunked transfer encoding, which carries no Content-Length, is
counted as it is read; past the limit it gets the Spanish 413, under it it is an upload like any."""

import socket
import subprocess
import sys
import threading

import pytest
from django.conf import settings
from django.test import Client

from ceres_site.accounts.models import Upload, User
from tests import files
from tests.conftest import BASE_DIR, free_port, process_env, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

CSRF = "c" * 32  # a CSRF secret of our own, as cookie and as form field


@pytest.fixture
def web(smtp, tmp_path):
    """`gunicorn` as ecosystem/gunicorn.conf.py runs it, on the test database; its port."""
    port = free_port()
    env = process_env(smtp, WEB_PORT=str(port), WEB_WORKERS="1", ALLOWED_HOSTS="127.0.0.1", MEDIA_ROOT=str(tmp_path))
    log = open(tmp_path / "gunicorn.log", "wb")
    command = [sys.executable, "-m", "gunicorn", "--config", "ecosystem/gunicorn.conf.py", "ceres_site.wsgi"]
    process = subprocess.Popen(command, cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT)
    wait_for(lambda: b" 200 " in request(port, b"GET /accounts/login/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"), timeout=60)
    yield port
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    log.close()


def request(port: int, head: bytes, chunks=()) -> bytes:
    """Send `head` and then `chunks` in chunked transfer encoding over a raw socket, while reading
    the answer: a server that answers before it has read everything stops reading."""
    answer = b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
            sender = threading.Thread(target=_send, args=(sock, head, chunks), daemon=True)
            sender.start()
            while block := sock.recv(65536):
                answer += block
            sender.join(timeout=60)
    except OSError:  # the server closed the connection on what it did not read: its answer came first
        pass
    return answer


def _send(sock, head: bytes, chunks) -> None:
    try:
        sock.sendall(head)
        for chunk in chunks:
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        if head.startswith(b"POST"):
            sock.sendall(b"0\r\n\r\n")
    except OSError:
        pass


def chunked_upload(port: int, picture: bytes, session: str = "") -> bytes:
    boundary = "ceres-boundary"
    parts = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="csrfmiddlewaretoken"\r\n\r\n{CSRF}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="picture"; filename="yo.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode(),
        picture,
        f"\r\n--{boundary}--\r\n".encode(),
    )
    body = b"".join(parts)
    head = (
        "POST /accounts/profile/ HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Cookie: csrftoken={CSRF}; sessionid={session}\r\n\r\n"
    ).encode()
    return request(port, head, (body[n : n + 65536] for n in range(0, len(body), 65536)))


def test_a_chunked_upload_past_the_limit_gets_the_spanish_413(web):
    answer = chunked_upload(web, b"x" * (settings.UPLOAD_MAX_BYTES + 1024 * 1024))  # 17 MB, no Content-Length

    assert answer.startswith(b"HTTP/1.1 413 ")
    assert "pesa más de 16 MB" in answer.decode("utf-8", "replace")
    assert Upload.objects.count() == 0


def test_a_chunked_upload_under_the_limit_is_an_upload_like_any(web):
    ana = User.objects.create_user(username="ana@example.com", email="ana@example.com")
    client = Client()
    client.force_login(ana)

    answer = chunked_upload(web, files.png(), session=client.cookies["sessionid"].value)

    assert answer.startswith(b"HTTP/1.1 302 ")  # to the profile: Django read the whole body
    upload = Upload.objects.get(user=ana)
    assert (upload.kind, upload.state, upload.size) == ("picture", "pending", len(files.png()))
