"""A profile picture made safe and small: upright, without any metadata (GPS!), square, 512 px and a
128 px thumbnail, WebP. JPEG, PNG and WebP only; decompression bombs (more pixels than `MAX_PIXELS`
allows the format) and anything else are refused before their pixels are decoded.

Every picture the limits admit is made small within the files queue's memory limit (512 MB,
`jobs.config.policies.FILES`), the largest of each format in its costliest shape included (tests/test_pictures.py):
a JPEG is decoded at a reduced scale where its shape allows (`draft`), and only the centre square
is resized, straight from the decoded picture to 512 px. What decoding costs at most, per pixel,
sets each format's limit: a JPEG whose scans are progressive (or one component at a time) keeps all
its coefficients whatever the scale, 8 bytes a pixel in CMYK, and a long thin one is decoded at full
scale, 4 more; Pillow's WebP decoder keeps two canvases and a copy besides the picture (16 bytes); a
PNG with alpha is copied once to be resized (8 bytes).
"""

import io
from dataclasses import dataclass

from django.utils.translation import gettext as _
from PIL import ExifTags, Image, UnidentifiedImageError, features

MAX_PIXELS = {"JPEG": 30_000_000, "MPO": 30_000_000, "PNG": 40_000_000, "WEBP": 24_000_000}  # MPO: a camera's JPEG
FORMAT_NAMES = {"JPEG": "JPEG", "MPO": "JPEG", "PNG": "PNG", "WEBP": "WebP"}
SIZES = (512, 128)
QUALITY = 80
REDUCING_GAP = 3.0  # shrink by whole factors first down to 3 × the size, then resample: as sharp, far cheaper
TRANSPOSE = {  # EXIF orientation → what turns the stored picture upright
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}  # fmt: skip


class Rejected(Exception):
    """Not an acceptable picture; the message says why, for its owner."""


@dataclass
class Optimized:
    picture: bytes
    thumbnail: bytes
    extension: str  # "webp", or "jpg" where Pillow has no WebP
    width: int
    height: int  # of the upload, upright


# Pillow refuses twice this at open, before decoding anything; we refuse each format above its own limit.
Image.MAX_IMAGE_PIXELS = max(MAX_PIXELS.values())


def optimize(data: bytes) -> Optimized:
    _check_webp_canvas(data)
    try:
        with Image.open(io.BytesIO(data), formats=["JPEG", "PNG", "WEBP"]) as image:
            _check_pixels(image.format, *image.size)
            width, height = image.size
            image.draft("RGB", (SIZES[0], SIZES[0]))  # a JPEG: decoded at 1/2 to 1/8 scale, still >= 512 px a side
            image.load()
            orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
            square = _centre_square(image)
    except Rejected:
        raise
    except Image.DecompressionBombError as error:
        raise Rejected(_("The picture has too many pixels.")) from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise Rejected(_("The file is not a JPEG, PNG or WebP picture we can read.")) from error
    if orientation in TRANSPOSE:  # turning the square turns the whole picture's centre square
        square = square.transpose(TRANSPOSE[orientation])
        width, height = (height, width) if orientation >= 5 else (width, height)
    thumbnail = square.resize((SIZES[1], SIZES[1]), Image.Resampling.LANCZOS)
    return Optimized(_encode(square), _encode(thumbnail), "webp" if features.check("webp") else "jpg", width, height)


def _centre_square(image: Image.Image) -> Image.Image:
    """The centre square at 512 px, in RGB. Resized straight from the decoded picture, in its own
    mode where Pillow resizes that mode well, so that no full-size copy is made but the one a mode
    with alpha needs."""
    if image.mode not in ("RGB", "RGBA", "L", "LA", "CMYK"):  # palette, 1-bit, 16-bit: resized badly or not at all
        image = image.convert("RGB")
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    box = (left, top, left + side, top + side)
    square = image.resize((SIZES[0], SIZES[0]), Image.Resampling.LANCZOS, box=box, reducing_gap=REDUCING_GAP)
    return square.convert("RGB")


def _check_pixels(fmt: str, width: int, height: int) -> None:
    if width * height > MAX_PIXELS[fmt]:
        message = _(
            "The picture has too many pixels (%(width)d × %(height)d): "
            "in %(format)s we accept up to %(limit)d megapixels."
        )
        limit = MAX_PIXELS[fmt] // 1_000_000
        raise Rejected(message % {"width": width, "height": height, "format": FORMAT_NAMES[fmt], "limit": limit})


def _check_webp_canvas(data: bytes) -> None:
    """Pillow's WebP decoder allocates the whole canvas as it opens the file: check its size first,
    from the header (RIFF, then a VP8, VP8L or VP8X chunk)."""
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP" or len(data) < 30:
        return
    chunk = data[12:16]
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":  # lossy: 14-bit sizes after the key frame's start code
        width, height = int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(data[28:30], "little") & 0x3FFF
    elif chunk == b"VP8L":  # lossless: two 14-bit sizes minus one, packed
        bits = int.from_bytes(data[21:25], "little")
        width, height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    elif chunk == b"VP8X":  # extended: the canvas, 24-bit sizes minus one
        width, height = int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    else:
        return
    _check_pixels("WEBP", width, height)


def _encode(image: Image.Image) -> bytes:
    """A fresh image carries no EXIF, ICC or XMP: nothing of the upload's metadata is written."""
    out = io.BytesIO()
    if features.check("webp"):
        image.save(out, "WEBP", quality=QUALITY, method=4)
    else:
        image.save(out, "JPEG", quality=QUALITY, optimize=True)
    return out.getvalue()
