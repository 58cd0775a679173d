"""The aspect-preserving working frame: images of any size in and out of a fixed ``(h, w)`` frame.

Re-ID crops come in many aspect ratios (CUHK03: widths 44-161 for heights 130-419; Market-1501
64x128; DeepFashion 176x256). The latent model works at one size (256x128, h x w), so an image is
resized by ONE scale that fits it inside the frame and padded (edge pixels repeated) to the frame,
never stretched (a letterbox). Keypoints follow the same map; outputs are cropped back to the
image's region and resized to the image's own size.

Pixel convention: posegen's pixel-index coordinates (the centre of the top-left pixel is ``(0, 0)``),
x right, y down. With scale factors ``sx = nw / W`` and ``sy = nh / H`` (the resized size over the
original, equal up to rounding) and paddings ``(px, py)`` on the left and top:
``x' = (x + 0.5) * sx - 0.5 + px``, ``y' = (y + 0.5) * sy - 0.5 + py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

__all__ = ["Letterbox", "letterbox_params", "to_frame_keypoints", "from_frame_keypoints"]


@dataclass(frozen=True)
class Letterbox:
    """Placement of an image of ``size = (W, H)`` inside a frame ``frame_hw = (h, w)``.

    ``inner = (nw, nh)`` is the resized image's size and ``pad = (px, py)`` its top-left corner in
    the frame, in pixels.
    """

    size: tuple[int, int]
    frame_hw: tuple[int, int]
    inner: tuple[int, int]
    pad: tuple[int, int]

    @property
    def scale(self) -> tuple[float, float]:
        """``(sx, sy)`` = ``(nw / W, nh / H)``."""
        return self.inner[0] / self.size[0], self.inner[1] / self.size[1]

    def image_to_frame(self, image: np.ndarray) -> np.ndarray:
        """``uint8 [H, W, 3]`` -> ``uint8 [h, w, 3]``: bicubic resize (antialiased by PIL when
        shrinking) to ``inner``, then edge padding to the frame.

        Raises:
            ValueError: the image's size is not ``size``.
        """
        im = np.asarray(image)
        if (im.shape[1], im.shape[0]) != tuple(self.size):
            raise ValueError(f"image is {im.shape[1]}x{im.shape[0]}, this letterbox is for {self.size[0]}x{self.size[1]}")
        small = np.asarray(Image.fromarray(im).resize(self.inner, Image.BICUBIC))
        h, w = self.frame_hw
        px, py = self.pad
        return np.pad(small, ((py, h - py - self.inner[1]), (px, w - px - self.inner[0]), (0, 0)), mode="edge")

    def inside_mask(self) -> np.ndarray:
        """``float32 [h, w]``: 1 on the image's region of the frame, 0 on the edge padding."""
        m = np.zeros(self.frame_hw, dtype=np.float32)
        px, py = self.pad
        m[py : py + self.inner[1], px : px + self.inner[0]] = 1.0
        return m

    def frame_to_image(self, frame: np.ndarray) -> np.ndarray:
        """``uint8 [h, w, 3]`` in the frame -> ``uint8 [H, W, 3]``: crop the image's region,
        bicubic resize to the original size."""
        px, py = self.pad
        crop = np.ascontiguousarray(np.asarray(frame)[py : py + self.inner[1], px : px + self.inner[0]])
        return np.asarray(Image.fromarray(crop).resize(tuple(self.size), Image.BICUBIC))


def letterbox_params(size, frame_hw) -> Letterbox:
    """The letterbox of an image of ``size = (W, H)`` pixels in a frame ``frame_hw = (h, w)``.

    The image is scaled by ``min(h / H, w / W)`` (sides rounded, at least 1 pixel) and centred.

    Raises:
        ValueError: a non-positive size.
    """
    W, H = int(size[0]), int(size[1])
    h, w = int(frame_hw[0]), int(frame_hw[1])
    if min(W, H, h, w) <= 0:
        raise ValueError(f"sizes must be positive, got image {size} and frame {frame_hw}")
    s = min(h / H, w / W)
    nw, nh = min(w, max(1, round(W * s))), min(h, max(1, round(H * s)))
    return Letterbox((W, H), (h, w), (nw, nh), ((w - nw) // 2, (h - nh) // 2))


def to_frame_keypoints(keypoints: np.ndarray, box: Letterbox) -> np.ndarray:
    """COCO-17 ``[..., 17, 3]`` ``(x, y, score)`` in pixels of the image -> pixels of the frame
    (scores unchanged; float32)."""
    kp = np.array(keypoints, dtype=np.float32, copy=True)
    sx, sy = box.scale
    kp[..., 0] = (kp[..., 0] + 0.5) * sx - 0.5 + box.pad[0]
    kp[..., 1] = (kp[..., 1] + 0.5) * sy - 0.5 + box.pad[1]
    return kp


def from_frame_keypoints(keypoints: np.ndarray, box: Letterbox) -> np.ndarray:
    """Inverse of :func:`to_frame_keypoints` (frame pixels -> image pixels; float32)."""
    kp = np.array(keypoints, dtype=np.float32, copy=True)
    sx, sy = box.scale
    kp[..., 0] = (kp[..., 0] - box.pad[0] + 0.5) / sx - 0.5
    kp[..., 1] = (kp[..., 1] - box.pad[1] + 0.5) / sy - 0.5
    return kp
