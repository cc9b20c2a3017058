"""Pictures at the limits the files queue admits: the largest picture of each admitted format, in
its costliest shape, is made small by a real forking worker under the queue's real memory limit;
one just over its format's limit is refused with its reason, without a retry."""

import io

import django_rq
import pytest
from django.core.files.base import ContentFile
from PIL import Image

from ceres_site.accounts.models import Upload, User
from jobs.enqueue.producers import enqueue_optimize_profile_picture
from jobs.models import DeadLetter
from tests import files
from tests.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

# The costliest picture of each format at its limit: long and thin, so that a JPEG cannot be decoded
# at a reduced scale; with alpha, or a progressive CMYK JPEG without chroma subsampling (its decoder
# keeps every coefficient of the whole picture).
LARGEST = {
    "JPEG": (30_000, 1_000, "CMYK", {"progressive": True, "subsampling": 0, "quality": 90}),
    "PNG": (40_000, 1_000, "RGBA", {}),
    "WEBP": (16_000, 1_500, "RGBA", {}),
}


def picture(fmt: str, width: int, height: int, mode: str, options: dict) -> bytes:
    """One colour, half transparent where the mode has alpha: what decoding costs depends on the
    size and the format, and the file stays small."""
    colour = (200, 30, 30, 128)[: len(mode)] if len(mode) > 1 else 128
    return encoded(Image.new(mode, (width, height), colour), fmt, **options)


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


def uploaded(name: str, data: bytes) -> Upload:
    user = User.objects.create_user(username=name)
    upload = Upload(user=user, kind=Upload.Kind.PICTURE, size=len(data))
    upload.file.save("upload", ContentFile(data), save=False)
    upload.save()
    enqueue_optimize_profile_picture(upload_id=upload.pk, municipality=upload.user.municipality_id)
    return upload


def states(uploads: dict[str, Upload]) -> dict[str, tuple[str, str]]:
    return {name: Upload.objects.values_list("state", "reason").get(pk=upload.pk) for name, upload in uploads.items()}


def no_failed_attempt(uploads: dict[str, Upload]) -> None:
    queue = django_rq.get_queue("files")
    jobs = {name: queue.fetch_job(f"files-picture-{upload.pk}") for name, upload in uploads.items()}
    assert {name: job.meta.get("failures", []) for name, job in jobs.items()} == {name: [] for name in uploads}
    assert queue.failed_job_registry.count == 0 and DeadLetter.objects.count() == 0


@pytest.mark.slow
def test_the_largest_picture_of_each_format_is_processed_under_the_real_memory_limit(live_worker, media):
    uploads = {fmt: uploaded(fmt, picture(fmt, *shape)) for fmt, shape in LARGEST.items()}
    solid = Image.new("RGB", (6300, 6300), (200, 30, 30))  # the report's: 133 KB, MemoryError on every attempt
    uploads["report's PNG"] = uploaded("report", encoded(solid, "PNG"))

    # A real `rqworker files`: a work-horse per job, its RLIMIT_AS at the policy's 512 MB.
    live_worker("files", env={"MEDIA_ROOT": str(media)})

    wait_for(lambda: all(state != "pending" for state, _ in states(uploads).values()), timeout=300, interval=0.5)
    assert states(uploads) == {name: ("accepted", "") for name in uploads}
    for upload in uploads.values():
        upload.refresh_from_db()
        with upload.file.open("rb") as stored, Image.open(io.BytesIO(stored.read())) as small:
            assert small.size == (512, 512)
    no_failed_attempt(uploads)


@pytest.mark.slow
def test_a_picture_just_over_its_format_limit_is_refused_with_its_reason_without_a_retry(work):
    uploads = {  # a WebP's size is read from its header: a lossy one, one with alpha, a lossless one
        "JPEG": uploaded("jpeg", picture("JPEG", 30_001, 1_000, "L", {})),
        "PNG": uploaded("png", files.png_declaring(40_001, 1_000)),
        "WebP": uploaded("webp", picture("WEBP", 16_001, 1_500, "RGB", {})),
        "WebP with alpha": uploaded("webp-alpha", picture("WEBP", 16_001, 1_500, "RGBA", {})),
        "WebP far over": uploaded("webp-far", picture("WEBP", 16_383, 4_000, "RGB", {"lossless": True})),
    }

    work("files")

    found = states(uploads)
    says = "La imagen tiene demasiados píxeles ({}): en {} aceptamos hasta {} megapíxeles."
    assert found["JPEG"] == ("rejected", says.format("30001 × 1000", "JPEG", 30))
    assert found["PNG"] == ("rejected", says.format("40001 × 1000", "PNG", 40))
    assert found["WebP"] == found["WebP with alpha"] == ("rejected", says.format("16001 × 1500", "WebP", 24))
    assert found["WebP far over"] == ("rejected", says.format("16383 × 4000", "WebP", 24))  # its canvas alone: 512 MB
    no_failed_attempt(uploads)


def test_only_jpeg_png_and_webp_are_admitted(work):
    uploads = {fmt: uploaded(fmt, picture(fmt, 64, 64, "RGB", {})) for fmt in ("GIF", "BMP", "TIFF")}

    work("files")

    reason = "El archivo no es una imagen JPEG, PNG o WebP que podamos leer."
    assert states(uploads) == {fmt: ("rejected", reason) for fmt in uploads}
