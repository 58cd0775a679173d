"""posegen.data: dataset layouts (folder -> manifest DataFrame) and safe image reading.

See :mod:`posegen.data.layouts` for the manifest's columns and the layouts, and
:mod:`posegen.data.images` for :func:`read_image` and its errors.
"""

from posegen.data.images import IMAGE_EXTENSIONS, MIN_IMAGE_SIDE, ImageReadError, is_image_file, read_image, read_image_fit
from posegen.data.layouts import (
    LAYOUTS,
    MANIFEST_COLUMNS,
    LayoutError,
    detect_layout,
    is_synthetic_name,
    load_dataset,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "MIN_IMAGE_SIDE",
    "ImageReadError",
    "is_image_file",
    "read_image",
    "read_image_fit",
    "LAYOUTS",
    "MANIFEST_COLUMNS",
    "LayoutError",
    "detect_layout",
    "is_synthetic_name",
    "load_dataset",
]
