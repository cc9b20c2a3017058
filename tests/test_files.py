"""The files queue: uploaded CVs and pictures judged from their bytes by the real forking worker,
each job in its own work-horse with a memory limit and a timeout."""

import io
import re

import django_rq
import pytest
from django.core.files.base import ContentFile
from django.test import Client
from django.urls import reverse
from PIL import Image

from ceres_site.accounts.models import Upload, User
from jobs.enqueue.producers import enqueue_optimize_profile_picture, enqueue_stored_call, enqueue_validate_cv
from jobs.models import DeadLetter
from jobs.staff.operations import jobs_retry
from tests import files
from tests.conftest import BASE_DIR

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def ana():
    return User.objects.create_user(
        username="ana@example.com", email="ana@example.com", first_name="Ana", password="una-clave-bien-larga-42"
    )


def uploaded(user, kind, data: bytes) -> Upload:
    upload = Upload(user=user, kind=kind, size=len(data))
    upload.file.save("upload", ContentFile(data), save=False)
    upload.save()
    return upload


def judged(upload: Upload) -> Upload:
    upload.refresh_from_db()
    return upload


CVS = {
    "valid PDF": (files.pdf(pages=2), "accepted", ""),
    "valid DOCX": (files.docx(), "accepted", ""),
    "scanned PDF (no text)": (files.pdf(text=""), "accepted", "No encontramos texto en el PDF"),
    "PNG renamed .pdf": (files.png(), "rejected", "no es un PDF ni un documento de Word"),
    "encrypted PDF": (files.pdf(password="secreta"), "rejected", "protegido con contraseña"),
    "PDF with JavaScript": (files.pdf(javascript="app.alert('hola');"), "rejected", "contiene JavaScript"),
    "PDF with an embedded file": (files.pdf_with_attachment(), "rejected", "archivos adjuntos"),
    "21 pages": (files.pdf(pages=21), "rejected", "tiene 21 páginas; aceptamos de 1 a 20"),
    "6 MB": (files.pdf() + b"\n%" + b"x" * (6 * 1024 * 1024), "rejected", "pesa más de 5 MB"),
    "DOCX with a macro": (files.docx(macro=True), "rejected", "tiene macros"),
    "truncated PDF": (files.pdf(pages=3)[:600], "rejected", "dañado o incompleto"),
}


def test_cvs_are_judged_by_their_bytes_and_rejections_are_results_told_by_email(ana, work, smtp):
    uploads = {name: uploaded(ana, Upload.Kind.CV, data) for name, (data, _, _) in CVS.items()}
    for upload in uploads.values():
        enqueue_validate_cv(upload_id=upload.pk, municipality=upload.user.municipality_id)

    work("files")

    for name, (_, state, words) in CVS.items():
        upload = judged(uploads[name])
        assert upload.state == state, (name, upload.reason)
        assert words in (upload.reason if state == "rejected" else upload.warning), (
            name,
            upload.reason,
            upload.warning,
        )
    queue = django_rq.get_queue("files")
    assert queue.failed_job_registry.count == 0 and DeadLetter.objects.count() == 0  # rejections are results
    assert queue.fetch_job(f"files-cv-{uploads['21 pages'].pk}").return_value().startswith("rechazado. El CV tiene 21")
    work("email")
    rejected = sum(state == "rejected" for _, state, _ in CVS.values())
    assert len(smtp.messages) == rejected and all(m["Subject"] == "No pudimos aceptar tu CV" for m in smtp.messages)
    assert any("protegido con contraseña" in m.get_body(("plain",)).get_content() for m in smtp.messages)


def test_a_phone_photo_comes_out_upright_square_small_and_without_metadata(ana, work):
    photo = files.phone_photo()
    upload = uploaded(ana, Upload.Kind.PICTURE, photo)
    original = upload.file.name
    enqueue_optimize_profile_picture(upload_id=upload.pk, municipality=upload.user.municipality_id)

    work("files")

    upload = judged(upload)
    assert upload.state == "accepted" and upload.size < len(photo)
    assert not upload.file.storage.exists(original)  # the original is replaced
    with upload.file.open("rb") as stored, Image.open(io.BytesIO(stored.read())) as picture:
        assert picture.size == (512, 512) and picture.format in ("WEBP", "JPEG")
        assert not picture.getexif() and "exif" not in picture.info and "xmp" not in picture.info
        top, bottom = picture.convert("RGB").getpixel((256, 40)), picture.convert("RGB").getpixel((256, 470))
        assert top[0] > 150 > top[2] and bottom[2] > 150 > bottom[0], (top, bottom)  # red above: upright
    with upload.thumbnail.open("rb") as stored, Image.open(io.BytesIO(stored.read())) as thumbnail:
        assert thumbnail.size == (128, 128)


def test_a_decompression_bomb_is_refused_and_the_worker_goes_on(ana, work):
    bomb = uploaded(ana, Upload.Kind.PICTURE, files.png_declaring(50_000, 50_000))
    not_an_image = uploaded(User.objects.create_user(username="beto"), Upload.Kind.PICTURE, b"GIF89a? no")
    fine = uploaded(User.objects.create_user(username="caro"), Upload.Kind.PICTURE, files.png(900, 600))
    for upload in (bomb, not_an_image, fine):
        enqueue_optimize_profile_picture(upload_id=upload.pk, municipality=upload.user.municipality_id)

    work("files")

    assert judged(bomb).state == "rejected" and "demasiados píxeles" in judged(bomb).reason
    assert judged(not_an_image).state == "rejected" and "no es una imagen" in judged(not_an_image).reason
    assert judged(fine).state == "accepted"


@pytest.mark.parametrize("task,kwargs,error", [
    ("tests.tasks.allocate", {"megabytes": 2048}, "MemoryError"),
    pytest.param("tests.tasks.sleep", {"seconds": 60}, "JobTimeoutException", marks=pytest.mark.slow),  # a 3 s timeout
])  # fmt: skip
def test_a_job_past_its_memory_or_time_limit_fails_alone_and_is_archived(task, kwargs, error, policy, work, ana):
    policy("files", retry_max=0, timeout=3)
    enqueue_stored_call(queue_name="files", func=task, job_id="files-hostile-1", kwargs=kwargs)
    fine = uploaded(ana, Upload.Kind.CV, files.pdf())
    enqueue_validate_cv(upload_id=fine.pk, municipality=fine.user.municipality_id)

    work("files")

    assert django_rq.get_queue("files").fetch_job("files-hostile-1").get_status() == "failed"
    assert DeadLetter.objects.get(job_id="files-hostile-1").exc_type == error
    assert judged(fine).state == "accepted"  # the next job ran


def test_a_new_upload_replaces_the_waiting_job(ana, client):
    client.force_login(ana)
    first = client.post(reverse("accounts:profile"), {"cv": ContentFile(files.pdf(), name="cv.pdf")})
    second = client.post(reverse("accounts:profile"), {"cv": ContentFile(files.docx(), name="cv.docx")})

    assert first.status_code == second.status_code == 302
    old, new = Upload.objects.order_by("id")
    assert (old.state, new.state) == ("superseded", "pending")
    assert django_rq.get_queue("files").job_ids == [f"files-cv-{new.pk}"]  # the first one's job is gone
    assert not old.file.storage.exists(old.file.name)


def test_the_profile_page_shows_the_state_in_spanish_and_needs_a_login(ana, client, work):
    assert client.get(reverse("accounts:profile"))["Location"].startswith(reverse("accounts:login"))
    client.post(reverse("accounts:login"), {"username": "ana@example.com", "password": "una-clave-bien-larga-42"})
    client.post(reverse("accounts:profile"), {"cv": ContentFile(files.pdf(pages=21), name="cv.pdf"),
                                              "picture": ContentFile(files.phone_photo(), name="yo.jpg")})  # fmt: skip
    checking = client.get(reverse("accounts:profile")).content.decode()
    assert checking.count("En revisión.") == 2 and 'http-equiv="refresh"' in checking

    work("files")

    page = client.get(reverse("accounts:profile")).content.decode()
    assert "Rechazado. El CV tiene 21 páginas" in page and "Aceptado." in page and 'http-equiv="refresh"' not in page
    for size in ("picture", "thumbnail"):
        served = client.get(reverse("accounts:profile_picture", args=[size]))
        with Image.open(io.BytesIO(b"".join(served.streaming_content))) as picture:
            assert served.status_code == 200 and served["Content-Type"] == Image.MIME[picture.format]  # WebP's
    client.logout()
    assert client.get(reverse("accounts:profile_picture", args=["picture"])).status_code == 302


def failed_for_good(client, policy, work) -> Upload:
    """An upload whose job fails on every attempt: its stored file is gone (storage trouble, OSError)."""
    policy("files", retry_max=0)
    client.post(reverse("accounts:profile"), {"picture": ContentFile(files.png(), name="yo.png")})
    upload = Upload.objects.get()
    upload.file.storage.delete(upload.file.name)
    work("files")
    return judged(upload)


def test_an_upload_whose_job_failed_for_good_asks_its_owner_to_upload_it_again(ana, client, admin_client, policy, work):
    client.force_login(ana)
    upload = failed_for_good(client, policy, work)

    assert upload.state == "failed"
    page = client.get(reverse("accounts:profile")).content.decode()
    assert "No se pudo revisar. Tuvimos un problema de nuestro lado al revisar el archivo: volvé a subirlo." in page
    assert 'http-equiv="refresh"' not in page  # no longer waiting
    failed = admin_client.get(reverse("admin:accounts_upload_changelist"), {"state__exact": "failed"}).content.decode()
    assert reverse("admin:accounts_upload_change", args=[upload.pk]) in failed
    assert '<td class="field-state">no se pudo revisar</td>' in failed
    assert DeadLetter.objects.get().related_id == str(upload.pk)  # staff reach the upload from the dead letter

    client.post(reverse("accounts:profile"), {"picture": ContentFile(files.png(), name="yo.png")})
    work("files")

    assert judged(upload).state == "superseded" and Upload.objects.latest("id").state == "accepted"
    assert "Aceptado." in client.get(reverse("accounts:profile")).content.decode()


def test_a_failed_upload_is_checked_after_all_when_staff_retry_its_job(ana, client, policy, work):
    client.force_login(ana)
    upload = failed_for_good(client, policy, work)
    upload.file.storage.save(upload.file.name, ContentFile(files.png()))  # the storage is back

    jobs_retry(queue_name="files", job_ids=[f"files-picture-{upload.pk}"])
    work("files")

    assert (judged(upload).state, judged(upload).reason) == ("accepted", "")


def test_an_upload_too_large_is_refused_before_it_is_read(ana, settings):
    client = Client(enforce_csrf_checks=True)  # the CSRF check reads the body: the limit comes first
    client.force_login(ana)
    settings.UPLOAD_MAX_BYTES = 1024 * 1024
    response = client.post(
        reverse("accounts:profile"), {"cv": ContentFile(b"%PDF-" + b"x" * (2 * 1024 * 1024), name="big.pdf")}
    )

    assert response.status_code == 413 and "pesa más de 1 MB" in response.content.decode()
    assert Upload.objects.count() == 0


def test_nginx_refuses_what_django_would_refuse(settings):
    """The upload limit at the proxy is the application's: a 100 MB upload never reaches gunicorn."""
    conf = (BASE_DIR / "ecosystem" / "nginx.conf").read_text()
    megabytes = int(re.search(r"client_max_body_size (\d+)m;", conf).group(1))
    assert megabytes * 1024 * 1024 == settings.UPLOAD_MAX_BYTES
    assert settings.UPLOAD_MAX_BYTES >= settings.CV_MAX_BYTES + settings.PICTURE_MAX_BYTES  # both in one request
