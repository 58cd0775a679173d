"""Reading images safely: every failure becomes an :class:`ImageReadError` with a short reason.

Stages never call PIL directly on dataset files; they call :func:`read_image`, catch
:class:`ImageReadError` and record ``err.reason`` for that file (per-file reason in the output),
so one bad file never stops a run.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = ["IMAGE_EXTENSIONS", "ImageReadError", "MIN_IMAGE_SIDE", "read_image", "is_image_file"]

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


def read_image(path: str | os.PathLike, min_side: int = MIN_IMAGE_SIDE) -> np.ndarray:
    """Decode an image file to RGB.

    Greyscale, palette, CMYK and 16-bit images are converted to RGB; an alpha channel (RGBA, LA)
    is composited onto a white background. The file is opened read-only and never modified.

    Args:
        path: the image file.
        min_side: smallest accepted width or height, in pixels.

    Returns:
        ``uint8 [H, W, 3]`` RGB array (row-major, y down).

    Raises:
        ImageReadError: missing file, not an image, truncated/corrupt data, or smaller than
            ``min_side`` in either dimension. ``err.reason`` says which.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(path, "missing: no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                im.load()
                if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                    rgba = im.convert("RGBA")
                    bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                    rgb = Image.alpha_composite(bg, rgba).convert("RGB")
                elif im.mode in ("I;16", "I;16B", "I;16L", "I"):
                    arr = np.asarray(im, dtype=np.float64)
                    hi = max(arr.max(), 1.0)
                    rgb = Image.fromarray((arr / hi * 255.0).astype(np.uint8)).convert("RGB")
                else:
                    rgb = im.convert("RGB")
    except UnidentifiedImageError:
        raise ImageReadError(path, "unreadable: not an image file") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ImageReadError(path, f"unreadable: {e}") from None
    w, h = rgb.size
    if w < min_side or h < min_side:
        raise ImageReadError(path, f"too small: {w}x{h} pixels, need at least {min_side}x{min_side}")
    return np.asarray(rgb, dtype=np.uint8).copy()
