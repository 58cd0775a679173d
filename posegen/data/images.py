"""Reading images safely: every failure becomes an :class:`ImageReadError` with a short reason.

Stages never call PIL directly on dataset files; they call :func:`read_image`, catch
:class:`ImageReadError` and record ``err.reason`` for that file (per-file reason in the output),
so one bad file never stops a run.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import errno

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["IMAGE_EXTENSIONS", "ImageReadError", "MIN_IMAGE_SIDE", "read_image", "read_image_fit", "is_image_file"]

#: File extensions treated as images by the dataset parsers (lower case).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

#: Images with a side shorter than this (pixels) are rejected as "too small".
MIN_IMAGE_SIDE = 8


class ImageReadError(Exception):
    """An image file could not be used.

    Attributes:
        path: the file.
        reason: a short machine-friendly reason, one of ``"missing"``, ``"unreadable"``
            (not an image, or corrupt/truncated data) or ``"too small"``, followed by details
            after a colon, e.g. ``"unreadable: image file is truncated"``.
    """

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def is_image_file(path: str | os.PathLike) -> bool:
    """True if ``path``'s extension is one of :data:`IMAGE_EXTENSIONS` (content is not checked)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _missing_reason(path: Path) -> str:
    """Why ``path`` is not a readable regular file: a dangling symlink, a symlink loop, or missing."""
    if path.is_symlink():
        try:
            os.stat(path)
        except OSError as e:
            if e.errno == errno.ELOOP:
                return "unreadable: symlink loop"
            return f"missing: dangling symlink to {os.readlink(path)}"
    if path.exists():
        return "unreadable: not a regular file"
    return "missing: no such file"


def _open_oriented(path: Path, max_side: int | None) -> tuple[Image.Image, tuple[int, int]]:
    """Decode ``path`` upright (EXIF orientation applied), at most ``max_side`` pixels per side.

    Returns ``(image, (width, height))``: the decoded PIL image (any mode) and the full upright size
    of the file's image. JPEGs are decoded at a reduced scale (``Image.draft``) so a huge photo never
    needs its full-resolution buffer.
    """
    with Image.open(path) as im:
        w, h = im.size
        orientation = im.getexif().get(0x0112, 1) if hasattr(im, "getexif") else 1
        if orientation in (5, 6, 7, 8):
            w, h = h, w
        if max_side is not None and max(w, h) > max_side and im.format == "JPEG":
            scale = max_side / max(w, h)
            im.draft(im.mode, (max(1, int(im.size[0] * scale)), max(1, int(im.size[1] * scale))))
        im.load()
        out = ImageOps.exif_transpose(im) if orientation != 1 else im.copy()
    if max_side is not None and max(out.size) > max_side:
        scale = max_side / max(out.size)
        size = (max(1, round(out.size[0] * scale)), max(1, round(out.size[1] * scale)))
        out = out.resize(size, Image.BILINEAR, reducing_gap=2.0) if out.mode not in ("I;16", "I;16B", "I;16L", "I", "P") else out.resize(size, Image.NEAREST)
    return out, (w, h)


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        hi = max(arr.max(), 1.0)
        return Image.fromarray((arr / hi * 255.0).astype(np.uint8)).convert("RGB")
    return im.convert("RGB")


def read_image_fit(
    path: str | os.PathLike, max_side: int | None = None, min_side: int = MIN_IMAGE_SIDE
) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode an image file to upright RGB, downscaled to at most ``max_side`` pixels per side.

    The EXIF orientation is applied. When the file is larger than ``max_side`` the image is
    decoded at a reduced scale where the format allows it (JPEG) and resized (aspect ratio kept),
    so memory stays bounded by about ``max_side**2`` pixels for JPEGs (other formats are decoded
    once at full size, then resized). Conversions as :func:`read_image`.

    Args:
        path: the image file (never modified).
        max_side: largest returned width or height in pixels; None keeps the full size.
        min_side: smallest accepted width or height of the **file's** image, in pixels.

    Returns:
        ``(image, (width, height))``: ``uint8 [h, w, 3]`` RGB with ``max(h, w) <= max_side``, and
        the full upright size of the file's image in pixels (``(w, h)`` of the array when not
        downscaled).

    Raises:
        ImageReadError: missing file, dangling symlink, symlink loop, permission denied, not an
            image, truncated/corrupt data, or smaller than ``min_side``. ``err.reason`` says which.
    """
    path = Path(path)
    try:
        regular = path.is_file()
    except OSError:
        regular = False
    if not regular:
        raise ImageReadError(path, _missing_reason(path))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im, (w, h) = _open_oriented(path, max_side)
            rgb = _to_rgb(im)
    except UnidentifiedImageError:
        raise ImageReadError(path, "unreadable: not an image file") from None
    except PermissionError as e:
        raise ImageReadError(path, f"unreadable: permission denied ({e.strerror})") from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        raise ImageReadError(path, f"unreadable: {e}") from None
    if w < min_side or h < min_side:
        raise ImageReadError(path, f"too small: {w}x{h} pixels, need at least {min_side}x{min_side}")
    return np.asarray(rgb, dtype=np.uint8).copy(), (w, h)


def read_image(path: str | os.PathLike, min_side: int = MIN_IMAGE_SIDE, max_side: int | None = None) -> np.ndarray:
    """Decode an image file to upright RGB (EXIF orientation applied).

    Greyscale, palette, CMYK and 16-bit images are converted to RGB; an alpha channel (RGBA, LA)
    is composited onto a white background. The file is opened read-only and never modified.

    Args:
        path: the image file.
        min_side: smallest accepted width or height, in pixels.
        max_side: when given, the image is downscaled (aspect kept) to at most this many pixels
            per side, cheaply for JPEGs (see :func:`read_image_fit`).

    Returns:
        ``uint8 [H, W, 3]`` RGB array (row-major, y down).

    Raises:
        ImageReadError: missing file, dangling symlink or symlink loop, permission denied, not an
            image, truncated/corrupt data, or smaller than ``min_side`` in either dimension.
            ``err.reason`` says which (``"missing: ..."``, ``"unreadable: ..."``, ``"too small: ..."``).
    """
    return read_image_fit(path, max_side=max_side, min_side=min_side)[0]
