"""BlazePose GHUM *heavy* landmark model from a local ``.tflite`` file, through LiteRT.

mediapipe's legacy ``Pose`` solution downloads the heavy model at run time (posegen never lets
it), so this backend runs the landmark model directly with ``ai-edge-litert``, without the
BlazePose person detector:

* **Person box.** For re-ID crops the crop is the box. mediapipe feeds the landmark model a
  square region of interest centred on the person whose side is 1.25 x the person's extent; posegen
  approximates it by zero-padding the crop to a centred square of side ``roi_scale`` x
  ``max(H, W)`` (``roi_scale`` = 1.25), preserving the aspect ratio, resized to 256 x 256.
  For whole-frame images (``crop="keypoints"``), a second pass runs on a square centred on the
  confident landmarks of the first pass, of side ``roi_scale`` x their extent (the detector-free
  fallback; use the ``blazepose`` backend, which has mediapipe's person detector, when the
  person is small in the frame).
* **Input** ``float32 [1, 256, 256, 3]`` RGB in ``[0, 1]``; outputs ``Identity [1, 195]`` = 39
  landmarks x ``(x, y, z, visibility, presence)`` in input pixels (visibility and presence are
  logits), ``Identity_1 [1, 1]`` = pose presence in ``[0, 1]``.
* The 33 BlazePose landmarks are mapped to COCO-17 with
  :data:`~posegen.pose.backends.BLAZEPOSE33_TO_COCO17`; the score is ``sigmoid(visibility)``, as
  in the ``blazepose`` backend.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from .backends import BLAZEPOSE33_TO_COCO17, NoPersonFound, PoseBackend
from .keypoints import clip_to_image
from .movenet import load_tflite

__all__ = ["BlazePoseHeavyBackend"]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


class BlazePoseHeavyBackend(PoseBackend):
    """BlazePose GHUM heavy (``pose_landmark_heavy.tflite``) without its detector.

    Args:
        weights: path of ``pose_landmark_heavy.tflite`` (full/lite landmark files work too).
        roi_scale: side of the square region of interest relative to the person extent.
        crop: ``"image"`` (default) or ``"keypoints"`` (whole frames, see the module docstring).
        min_presence: raise :class:`NoPersonFound` below this pose-presence score.
        num_threads: LiteRT interpreter threads (default 1).

    Raises:
        FileNotFoundError: ``weights`` does not exist (the path is named).
        ImportError: ``ai-edge-litert`` is not installed.
    """

    def __init__(
        self,
        weights: str | os.PathLike,
        *,
        roi_scale: float = 1.25,
        crop: str = "image",
        min_presence: float = 0.5,
        num_threads: int = 1,
    ):
        if crop not in ("image", "keypoints"):
            raise ValueError(f"crop must be 'image' or 'keypoints', got {crop!r}")
        path = Path(weights)
        self._interp = load_tflite(path, "BlazePose landmark", num_threads)
        inp = self._interp.get_input_details()[0]
        outs = {d["name"]: d for d in self._interp.get_output_details()}
        if tuple(inp["shape"][1:]) != (256, 256, 3) or "Identity" not in outs or int(outs["Identity"]["shape"][-1]) % 5:
            raise ValueError(f"{path} is not a BlazePose landmark model (input {tuple(inp['shape'])})")
        self._in_index = inp["index"]
        self._lm_index = outs["Identity"]["index"]
        self._flag_index = outs["Identity_1"]["index"] if "Identity_1" in outs else None
        self.roi_scale = float(roi_scale)
        self.crop = crop
        self.min_presence = float(min_presence)
        variant = path.stem.rsplit("_", 1)[-1]
        # "blazepose-heavy"; other landmark files get a distinct name (no detector, not mediapipe's graph)
        self.name = "blazepose-heavy" if variant == "heavy" else f"blazepose-tflite-{variant}"
        self.weights = str(path)

    def _run(self, image: np.ndarray, cx: float, cy: float, side: float) -> tuple[np.ndarray, float]:
        """Landmarks in a square ROI (centre ``(cx, cy)`` in pixel-index coordinates, ``side``
        pixels): ``([17, 3] COCO-17 in pixels of image, presence)``."""
        h, w = image.shape[:2]
        s = max(int(round(side)), 2)
        # integer offset of the ROI's top-left pixel in the image (pixel-index)
        x0 = int(round(cx - (s - 1) / 2))
        y0 = int(round(cy - (s - 1) / 2))
        square = np.zeros((s, s, 3), dtype=np.uint8)
        ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x0 + s, w), min(y0 + s, h)
        if ix1 > ix0 and iy1 > iy0:
            square[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0] = image[iy0:iy1, ix0:ix1]
        x = np.asarray(Image.fromarray(square).resize((256, 256), Image.BILINEAR), dtype=np.float32)[None] / 255.0
        self._interp.set_tensor(self._in_index, x)
        self._interp.invoke()
        lm = np.array(self._interp.get_tensor(self._lm_index), dtype=np.float32).reshape(-1, 5)
        presence = 1.0 if self._flag_index is None else float(np.asarray(self._interp.get_tensor(self._flag_index)).reshape(-1)[0])
        sel = lm[list(BLAZEPOSE33_TO_COCO17)]
        kp = np.empty((len(sel), 3), dtype=np.float32)
        # input pixels (0 = left edge) -> normalised -> pixel index of the ROI -> image
        kp[:, 0] = sel[:, 0] / 256.0 * s - 0.5 + x0
        kp[:, 1] = sel[:, 1] / 256.0 * s - 0.5 + y0
        kp[:, 2] = _sigmoid(sel[:, 3])
        return kp, presence

    def estimate(self, image: np.ndarray) -> np.ndarray:
        if self._interp is None:
            raise RuntimeError("the backend is closed")
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected uint8 [H, W, 3] RGB, got {image.dtype} {image.shape}")
        h, w = image.shape[:2]
        kp, presence = self._run(image, (w - 1) / 2, (h - 1) / 2, self.roi_scale * max(h, w))
        if self.crop == "keypoints" and presence >= self.min_presence:
            ok = clip_to_image(kp, w, h)[:, 2] >= 0.5
            if ok.sum() >= 4:
                lo, hi = kp[ok, :2].min(axis=0), kp[ok, :2].max(axis=0)
                c = (lo + hi) / 2
                kp2, p2 = self._run(image, float(c[0]), float(c[1]), self.roi_scale * float((hi - lo).max() + 1))
                if p2 >= self.min_presence:
                    kp, presence = kp2, p2
        if presence < self.min_presence:
            raise NoPersonFound("no person found")
        return clip_to_image(kp, w, h)

    def close(self) -> None:
        self._interp = None


def blazepose_heavy_factory(weights: str | None = None, **options) -> PoseBackend:
    """Factory for :data:`posegen.pose.backends.BACKENDS` (``weights`` is required)."""
    if weights is None:
        raise ValueError("the blazepose-heavy backend needs a local file: --weights PATH (pose_landmark_heavy.tflite)")
    return BlazePoseHeavyBackend(weights, **options)
