"""MoveNet SinglePose (Google, 2021) from a local ``.tflite`` file through LiteRT.

The model (e.g. ``lite-model_movenet_singlepose_lightning_tflite_int8_4.tflite``) takes one
``uint8 [1, S, S, 3]`` RGB image (``S`` = 192 for Lightning, 256 for Thunder) and returns
``float32 [1, 1, 17, 3]``: COCO-17 ``(y, x, score)``, y and x normalised to ``[0, 1]`` of the input.

Person box
    * **Re-ID / fashion crops (default, ``crop="image"``)**: the crop is the person box. It is
      letterboxed (zero-padded, centred) to a square, preserving its aspect ratio, resized to
      ``S x S`` and the keypoints are mapped back to pixels of the original image.
    * **Whole-frame images (``crop="keypoints"``)**: MoveNet has no separate detector. posegen
      then uses MoveNet's own cropping heuristic (``determine_crop_region`` of the official
      TensorFlow MoveNet tutorial, applied to a single image as two passes): a first pass on the
      whole letterboxed frame, then a square crop centred on the hips whose half-side is the
      largest of 1.9 x the torso extent and 1.2 x the body extent (clamped to the image), and a
      second pass on that crop. The second pass is kept only when the first one found a torso
      (both hips or both shoulders with score >= ``min_crop_score``); otherwise the first pass
      is returned.

Scores
    posegen treats a joint as present at score >= 0.5 (``pose.min_score`` of the recipes, the OKS
    of the filter, the pose maps, the plausibility check). MoveNet's scores are lower than
    BlazePose's for the same accuracy: its own demos draw a joint at 0.3 (TensorFlow.js
    pose-detection) or even 0.11 (the TF Hub tutorial). So the backend maps the raw score ``s``
    piecewise-linearly, ``0 -> 0``, ``present_score -> 0.5``, ``1 -> 1``
    (:func:`calibrate_scores`; ``present_score=0.5`` keeps the raw scores). Measured with
    ``present_score=0.3`` on the annotated sample sets (``benchmarks/pose_gt.py``, precision =
    share of the joints counted present that lie within 0.1 x the person height of the
    annotation): MoveNet Lightning 0.960 (Market-1501) / 0.979 (DeepFashion) at recall 0.939 /
    0.973, against BlazePose full at 0.5: 0.859 / 0.966 at recall 0.748 / 0.916. A MoveNet joint
    counted present is thus at least as trustworthy as a BlazePose one.

The runtime is ``ai-edge-litert`` (Google's maintained TFLite runtime, works with numpy 2). The
weights always come from a local path (:func:`default_movenet_weights` when none is given); a
missing file is a :class:`FileNotFoundError` naming it.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
from PIL import Image

from .._io import shared_path
from .backends import NoPersonFound, PoseBackend, flip_average
from .keypoints import NUM_KEYPOINTS, clip_to_image
from .native_logs import quiet_native_logs

__all__ = ["MoveNetBackend", "letterbox_square", "movenet_crop_region", "calibrate_scores", "default_movenet_weights", "DEFAULT_MOVENET_FILE"]

#: The MoveNet file looked for under ``../shared/weights`` when no path is given.
DEFAULT_MOVENET_FILE = "movenet/lite-model_movenet_singlepose_lightning_tflite_int8_4.tflite"


def default_movenet_weights() -> Path:
    """Where the MoveNet ``.tflite`` file is looked for when no weights path is given:
    ``$POSEGEN_MOVENET``, else ``../shared/weights/`` + :data:`DEFAULT_MOVENET_FILE`
    (:func:`posegen._io.shared_path`; returned whether or not it exists)."""
    return shared_path("weights/" + DEFAULT_MOVENET_FILE, "POSEGEN_MOVENET")


def calibrate_scores(raw: np.ndarray, present_score: float) -> np.ndarray:
    """Map raw MoveNet joint scores onto posegen's convention (present at 0.5).

    Args:
        raw: scores in ``[0, 1]``, any shape, float.
        present_score: the raw score that becomes 0.5, in ``(0, 1)``.

    Returns:
        ``float32`` array of the same shape, piecewise linear and increasing: ``0 -> 0``,
        ``present_score -> 0.5``, ``1 -> 1``.
    """
    raw = np.clip(np.asarray(raw, dtype=np.float32), 0.0, 1.0)
    p = float(present_score)
    return np.where(raw <= p, 0.5 * raw / p, 0.5 + 0.5 * (raw - p) / (1.0 - p)).astype(np.float32)

_L_SHOULDER, _R_SHOULDER, _L_HIP, _R_HIP = 5, 6, 11, 12


def letterbox_square(image: np.ndarray, size: int) -> tuple[np.ndarray, float, float, float]:
    """Zero-pad ``image`` to a centred square and resize it to ``size x size``.

    Args:
        image: ``uint8 [H, W, 3]``.
        size: output side in pixels.

    Returns:
        ``(square, side, left, top)``: the ``uint8 [size, size, 3]`` image, the side of the padded
        square in original pixels and the padding added on the left and top. A point at normalised
        position ``(u, v)`` of the square (0 = left/top edge, 1 = right/bottom edge) lies at pixel
        index ``(u * side - 0.5 - left, v * side - 0.5 - top)`` of ``image``.
    """
    h, w = image.shape[:2]
    side = max(h, w)
    left, top = (side - w) // 2, (side - h) // 2
    square = np.zeros((side, side, 3), dtype=np.uint8)
    square[top : top + h, left : left + w] = image
    if side != size:
        square = np.asarray(Image.fromarray(square).resize((size, size), Image.BILINEAR))
    return square, float(side), float(left), float(top)


def movenet_crop_region(kp: np.ndarray, width: int, height: int, min_score: float = 0.2) -> tuple[int, int, int, int] | None:
    """MoveNet's crop-region heuristic for a whole-frame image (TensorFlow MoveNet tutorial).

    Args:
        kp: ``[17, 3]`` COCO-17 ``(x, y, score)`` in pixels of the frame.
        width, height: frame size.
        min_score: a joint counts when its score is at least this.

    Returns:
        ``(x0, y0, x1, y1)`` integer pixel bounds (``x1``/``y1`` exclusive) of a square-ish crop
        centred on the hips (or shoulders), or ``None`` when no torso was found.
    """
    ok = kp[:, 2] >= min_score
    if ok[_L_HIP] and ok[_R_HIP]:
        cx, cy = (kp[_L_HIP, :2] + kp[_R_HIP, :2]) / 2
    elif ok[_L_SHOULDER] and ok[_R_SHOULDER]:
        cx, cy = (kp[_L_SHOULDER, :2] + kp[_R_SHOULDER, :2]) / 2
    else:
        return None
    torso = [j for j in (_L_SHOULDER, _R_SHOULDER, _L_HIP, _R_HIP) if ok[j]]
    torso_range = max(max(abs(kp[j, 0] - cx), abs(kp[j, 1] - cy)) for j in torso)
    body_range = max(max(abs(kp[j, 0] - cx), abs(kp[j, 1] - cy)) for j in np.flatnonzero(ok))
    half = max(1.9 * torso_range, 1.2 * body_range)
    # never larger than the frame seen from the centre
    half = min(half, max(cx, width - 1 - cx, cy, height - 1 - cy))
    half = max(half, 8.0)
    x0, y0 = int(np.floor(cx - half)), int(np.floor(cy - half))
    x1, y1 = int(np.ceil(cx + half)) + 1, int(np.ceil(cy + half)) + 1
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    return x0, y0, x1, y1


def load_tflite(path: Path, what: str, num_threads: int = 1):
    """A LiteRT interpreter for a local ``.tflite`` file, tensors allocated.

    Raises:
        FileNotFoundError: ``path`` is not a file (named; posegen never downloads weights).
        ImportError: LiteRT (``ai-edge-litert``) is not installed.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"{what} weights not found: {str(path)!r} (a local .tflite file; posegen never downloads weights)"
        )
    if importlib.util.find_spec("ai_edge_litert") is None:
        raise ImportError(f"the {what} backend needs LiteRT (pip install ai-edge-litert==2.3.0)")
    with quiet_native_logs():  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
        from ai_edge_litert.interpreter import Interpreter

        interp = Interpreter(model_path=str(path), num_threads=int(num_threads))
        interp.allocate_tensors()
        interp.invoke()  # a first run on the zero input, so that nothing more is logged later
    return interp


class MoveNetBackend(PoseBackend):
    """MoveNet SinglePose Lightning/Thunder from a local ``.tflite`` file.

    Args:
        weights: path of the ``.tflite`` file (int8 or float; the input size is read from it).
        crop: ``"image"`` (default: the image is the person box, for re-ID crops) or
            ``"keypoints"`` (whole-frame images: MoveNet's two-pass crop-region heuristic, see the
            module docstring).
        min_person_score: raise :class:`NoPersonFound` when the mean *raw* keypoint score is below
            this (MoveNet always returns 17 joints; a low mean score means no person). 0.2: on real
            crops the mean raw score was >= 0.2 on every one of 938 CUHK03 val, 187 Market-1501 and
            179 DeepFashion crops; noise and flat images stay below 0.13 (BlazePose's detector with
            the crop fallback "finds" a person in most images made of shuffled 16x16 blocks of a
            person; MoveNet in fewer).
        present_score: raw score that counts as a present joint; scores are mapped so that it
            becomes 0.5 (see the module docstring; 0.5 = raw scores).
        min_crop_score: joint score used by the crop-region heuristic.
        num_threads: LiteRT interpreter threads (default 1).
        flip: horizontal-flip test-time augmentation of the first pass (the image and its
            mirror, averaged with left/right swapped: :func:`~posegen.pose.backends.flip_average`);
            on by default: on the ground-truth benchmark (``benchmarks/pose_gt.py``) it raises
            Market PCK@0.1H 0.943 -> 0.951 and PCK at score >= 0.5 0.755 -> 0.799, at twice the
            (small) cost.

    Raises:
        FileNotFoundError: ``weights`` does not exist (the path is named).
        ImportError: ``ai-edge-litert`` is not installed.
        ValueError: bad option, or the file is not a MoveNet-shaped model.
    """

    def __init__(
        self,
        weights: str | os.PathLike,
        *,
        crop: str = "image",
        min_person_score: float = 0.2,
        present_score: float = 0.3,
        min_crop_score: float = 0.2,
        num_threads: int = 1,
        flip: bool = True,
    ):
        if crop not in ("image", "keypoints"):
            raise ValueError(f"crop must be 'image' or 'keypoints', got {crop!r}")
        if not 0.0 < float(present_score) < 1.0:
            raise ValueError(f"present_score must be in (0, 1), got {present_score!r}")
        path = Path(weights)
        self._interp = load_tflite(path, "MoveNet", num_threads)
        inp = self._interp.get_input_details()[0]
        out = self._interp.get_output_details()[0]
        shape = tuple(int(s) for s in inp["shape"])
        if len(shape) != 4 or shape[0] != 1 or shape[1] != shape[2] or shape[3] != 3 or tuple(out["shape"][-2:]) != (NUM_KEYPOINTS, 3):
            raise ValueError(f"{path} is not a MoveNet SinglePose model (input {shape}, output {tuple(out['shape'])})")
        self._in_index, self._out_index = inp["index"], out["index"]
        self._in_dtype = inp["dtype"]
        self.size = shape[1]
        self.crop = crop
        self.min_person_score = float(min_person_score)
        self.min_crop_score = float(min_crop_score)
        self.present_score = float(present_score)
        self.flip = bool(flip)
        variant = "lightning" if self.size == 192 else "thunder" if self.size == 256 else str(self.size)
        self.name = f"movenet-{variant}"
        self.weights = str(path)

    def _run(self, image: np.ndarray) -> np.ndarray:
        """One pass on ``image`` (letterboxed): ``[17, 3]`` (x, y, score) in pixels of ``image``."""
        square, side, left, top = letterbox_square(image, self.size)
        x = square[None]
        if self._in_dtype != np.uint8:  # float models take 0..255 floats too (TF Hub convention)
            x = x.astype(self._in_dtype)
        self._interp.set_tensor(self._in_index, x)
        self._interp.invoke()
        yxs = np.array(self._interp.get_tensor(self._out_index)[0, 0], dtype=np.float32)
        kp = np.empty((NUM_KEYPOINTS, 3), dtype=np.float32)
        kp[:, 0] = yxs[:, 1] * side - 0.5 - left
        kp[:, 1] = yxs[:, 0] * side - 0.5 - top
        kp[:, 2] = np.clip(yxs[:, 2], 0.0, 1.0)
        return kp

    def estimate(self, image: np.ndarray) -> np.ndarray:
        if self._interp is None:
            raise RuntimeError("the backend is closed")
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected uint8 [H, W, 3] RGB, got {image.dtype} {image.shape}")
        h, w = image.shape[:2]
        kp = flip_average(self._run, image) if self.flip else self._run(image)
        if self.crop == "keypoints":
            region = movenet_crop_region(kp, w, h, self.min_crop_score)
            if region is not None and (region[2] - region[0], region[3] - region[1]) != (w, h):
                x0, y0, x1, y1 = region
                kp = self._run(np.ascontiguousarray(image[y0:y1, x0:x1]))
                kp[:, 0] += x0
                kp[:, 1] += y0
        if float(kp[:, 2].mean()) < self.min_person_score:
            raise NoPersonFound("no person found")
        kp[:, 2] = calibrate_scores(kp[:, 2], self.present_score)
        return clip_to_image(kp, w, h)

    def close(self) -> None:
        self._interp = None


def movenet_factory(weights: str | None = None, **options) -> PoseBackend:
    """Factory for :data:`posegen.pose.backends.BACKENDS` (``weights`` defaults to
    :func:`default_movenet_weights`).

    Raises:
        FileNotFoundError: no weights given and none at the default path (both named).
    """
    if weights is None:
        default = default_movenet_weights()
        if not default.is_file():
            raise FileNotFoundError(
                f"MoveNet weights not found: {str(default)!r}; pass --weights PATH (a MoveNet SinglePose .tflite) "
                f"or set POSEGEN_MOVENET, or use --backend blazepose (weights bundled with mediapipe)"
            )
        weights = str(default)
    return MoveNetBackend(weights, **options)
