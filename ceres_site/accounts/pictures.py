"""A profile picture made safe and small: upright, without any metadata (GPS!), square, 512 px and a
128 px thumbnail, WebP. Decompression bombs (more than `MAX_PIXELS`) and non-images are refused
before their pixels are decoded."""

import io
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError, features

MAX_PIXELS = 40_000_000  # a 48-megapixel phone photo fits; a 50,000 × 50,000 PNG does not
SIZES = (512, 128)
QUALITY = 80


class Rejected(Exception):
    """Not an acceptable picture; the message says why, for its owner."""


@dataclass
class Optimized:
    picture: bytes
    thumbnail: bytes
    extension: str  # "webp", or "jpg" where Pillow has no WebP
    width: int
    height: int  # of the upload, upright


Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # Pillow refuses twice this at open, before decoding; we refuse above it


def optimize(data: bytes) -> Optimized:
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_PIXELS:
                raise Rejected(f"La imagen tiene demasiados píxeles ({image.width} × {image.height}).")
            image.load()
            upright = ImageOps.exif_transpose(image)
    except Rejected:
        raise
    except Image.DecompressionBombError as error:
        raise Rejected("La imagen tiene demasiados píxeles.") from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise Rejected("El archivo no es una imagen que podamos leer (JPEG, PNG, WebP…).") from error
    side = min(upright.size)
    left, top = (upright.width - side) // 2, (upright.height - side) // 2
    square = upright.convert("RGB").crop((left, top, left + side, top + side))
    picture, thumbnail = (_encode(square.resize((size, size), Image.Resampling.LANCZOS)) for size in SIZES)
    return Optimized(picture, thumbnail, "webp" if features.check("webp") else "jpg", upright.width, upright.height)


def _encode(image: Image.Image) -> bytes:
    """A fresh image carries no EXIF, ICC or XMP: nothing of the upload's metadata is written."""
    out = io.BytesIO()
    if features.check("webp"):
        image.save(out, "WEBP", quality=QUALITY, method=4)
    else:
        image.save(out, "JPEG", quality=QUALITY, optimize=True)
    return out.getvalue()
