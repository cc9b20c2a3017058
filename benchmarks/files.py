"""Processing time per file type of the files queue's checks (the work a job does, without the
fork and the storage): median of several runs each, on files generated here.

Run:  .venv/bin/python benchmarks/files.py
"""

import io
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image  # noqa: E402

from ceres_site.accounts import cv, pictures  # noqa: E402
from tests import files  # noqa: E402

RUNS = 7


def photo_12mp() -> bytes:
    image = Image.blend(
        Image.new("RGB", (4000, 3000), (90, 140, 60)), Image.effect_noise((4000, 3000), 50).convert("RGB"), 0.3
    )
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def median_ms(work, data: bytes) -> float:
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        work(data)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    cases = [
        ("CV: PDF, 2 pages", cv.judge, files.pdf(pages=2)),
        ("CV: PDF, 20 pages", cv.judge, files.pdf(pages=20)),
        ("CV: DOCX", cv.judge, files.docx()),
        ("picture: phone JPEG 1600 × 800", pictures.optimize, files.phone_photo()),
        ("picture: 12 MP JPEG 4000 × 3000", pictures.optimize, photo_12mp()),
        (
            "picture: PNG bomb 50,000² (refused)",
            lambda data: _refused(pictures.optimize, data),
            files.png_declaring(50_000, 50_000),
        ),
    ]
    print(f"median of {RUNS} runs, ms (input size)")
    for name, work, data in cases:
        print(f"{name:<40}{median_ms(work, data):>9.1f}   ({len(data) / 1024:,.0f} KiB)")


def _refused(work, data):
    try:
        work(data)
    except pictures.Rejected:
        return


if __name__ == "__main__":
    main()
