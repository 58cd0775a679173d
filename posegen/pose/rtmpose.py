"""RTMPose / DWPose (SimCC top-down) from a local ONNX file through onnxruntime.

posegen does its own thin pre/post-processing instead of depending on ``rtmlib`` (whose
``Body()`` downloads models, and which treats a missing local path as a URL):

1. **Person box.** For re-ID / fashion crops the crop is the box: ``(-0.5, -0.5, W - 0.5,
   H - 0.5)`` in pixel-index coordinates, i.e. the whole image. RTMPose has no detector of its
   own; for whole-frame images pass ``crop="keypoints"`` (the documented fallback): a first pass
   on the whole image, then a second pass on the box of the confident keypoints of the first
   (``min_crop_score``), which the padding below enlarges. A box can also be passed explicitly
   to :meth:`RTMPoseBackend.estimate_box` (e.g. from the user's own detector).
2. **Affine crop**, exactly as mmpose's ``TopdownAffine`` / rtmlib's ``top_down_affine``: the box
   is enlarged by ``padding`` (1.25), widened or heightened to the model's aspect ratio
   ``w / h`` (192 / 256), and mapped to the ``w x h`` input by ``u = (x - cx) * w / sw + w / 2``,
   ``v = (y - cy) * h / sh + h / 2`` (``(cx, cy)`` the box centre, ``(sw, sh)`` its padded size,
   :func:`get_warp_matrix`), sampled bilinearly with ``cv2.warpAffine`` (zeros outside).
3. **Normalisation**: RGB, ``(pixel - mean) / std`` with ImageNet statistics in 0..255 (mmpose's
   ``data_preprocessor`` of the RTMPose/DWPose configs: ``mean=[123.675, 116.28, 103.53]``,
   ``std=[58.395, 57.12, 57.375]``, ``bgr_to_rgb=True``), NCHW ``float32 [1, 3, h, w]``.
4. **SimCC decoding** (:func:`decode_simcc`): outputs ``simcc_x [1, K, w * r]`` and
   ``simcc_y [1, K, h * r]`` (``r`` = ``simcc_split_ratio``, 2.0); the location is the argmax bin
   divided by ``r`` (input pixels), the score ``min(max_x, max_y)`` as in mmpose, clipped to
   ``[0, 1]``.
5. **Back-projection** (:func:`input_to_image`): the inverse affine,
   ``x = u / w * sw + cx - sw / 2``.

Models: the mmpose / rtmlib ONNX exports of RTMPose body (COCO-17, e.g. ``rtmpose-m`` 256x192)
and any SimCC model with the same inputs/outputs. A whole-body model (DWPose, 133 keypoints in
COCO-WholeBody order) works too: its first 17 keypoints are the COCO-17 body joints, and posegen
keeps those. The input size is read from the ONNX file when it is static.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np

from .backends import NoPersonFound, PoseBackend
from .keypoints import NUM_KEYPOINTS, clip_to_image

__all__ = [
    "RTMPoseBackend",
    "box_center_scale",
    "get_warp_matrix",
    "top_down_affine",
    "decode_simcc",
    "input_to_image",
    "keypoint_box",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


def box_center_scale(box, aspect_ratio: float, padding: float = 1.25) -> tuple[np.ndarray, np.ndarray]:
    """Centre and padded size of a box, fixed to an aspect ratio (mmpose ``bbox_xyxy2cs`` +
    ``TopdownAffine._fix_aspect_ratio``).

    Args:
        box: ``(x0, y0, x1, y1)``.
        aspect_ratio: model input ``w / h``.
        padding: size multiplier.

    Returns:
        ``(center [2], scale [2])``: the box centre and its ``(width, height)`` after padding,
        enlarged along one axis so that ``width / height == aspect_ratio``.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    center = np.array([(x0 + x1) / 2, (y0 + y1) / 2], dtype=np.float64)
    bw, bh = (x1 - x0) * padding, (y1 - y0) * padding
    if bw > bh * aspect_ratio:
        bh = bw / aspect_ratio
    else:
        bw = bh * aspect_ratio
    return center, np.array([bw, bh], dtype=np.float64)


def get_warp_matrix(center, scale, output_size: tuple[int, int]) -> np.ndarray:
    """The ``2 x 3`` affine matrix that maps the box (``center``, ``scale``) onto the model input
    (no rotation): ``u = (x - cx) * w / sw + w / 2``, ``v = (y - cy) * h / sh + h / 2``, as
    mmpose's ``get_warp_matrix`` does.

    Args:
        center: ``(cx, cy)`` in image pixels.
        scale: ``(sw, sh)`` box size in image pixels.
        output_size: model input ``(w, h)``.
    """
    w, h = output_size
    sx, sy = w / float(scale[0]), h / float(scale[1])
    return np.array(
        [[sx, 0.0, w / 2.0 - center[0] * sx], [0.0, sy, h / 2.0 - center[1] * sy]], dtype=np.float64
    )


def top_down_affine(image: np.ndarray, center, scale, output_size: tuple[int, int]) -> np.ndarray:
    """Warp the box of ``image`` to ``output_size`` (``(w, h)``) with :func:`get_warp_matrix`
    (bilinear, zeros outside the image)."""
    import cv2

    mat = get_warp_matrix(center, scale, output_size)
    return cv2.warpAffine(image, mat, (int(output_size[0]), int(output_size[1])), flags=cv2.INTER_LINEAR, borderValue=0)


def decode_simcc(simcc_x: np.ndarray, simcc_y: np.ndarray, split_ratio: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Decode SimCC classification vectors.

    Args:
        simcc_x: ``[K, Wx]`` (or ``[1, K, Wx]``) scores over x bins.
        simcc_y: ``[K, Wy]`` (or ``[1, K, Wy]``) scores over y bins.
        split_ratio: bins per input pixel.

    Returns:
        ``(locs [K, 2], scores [K])``: ``locs`` = argmax bin / ``split_ratio`` (model input pixels),
        ``scores`` = ``min(max_x, max_y)`` (mmpose's ``get_simcc_maximum``).
    """
    sx, sy = np.asarray(simcc_x, dtype=np.float32), np.asarray(simcc_y, dtype=np.float32)
    if sx.ndim == 3:
        sx, sy = sx[0], sy[0]
    ix, iy = sx.argmax(axis=1), sy.argmax(axis=1)
    locs = np.stack([ix, iy], axis=1).astype(np.float32) / np.float32(split_ratio)
    k = np.arange(sx.shape[0])
    scores = np.minimum(sx[k, ix], sy[k, iy])
    return locs, scores


def input_to_image(locs: np.ndarray, center, scale, input_size: tuple[int, int]) -> np.ndarray:
    """Map model-input pixel locations ``[K, 2]`` back to image pixels (inverse of
    :func:`get_warp_matrix`): ``x = u / w * sw + cx - sw / 2``."""
    size = np.asarray(input_size, dtype=np.float64)
    scale, center = np.asarray(scale, dtype=np.float64), np.asarray(center, dtype=np.float64)
    return (np.asarray(locs, dtype=np.float64) / size * scale + center - scale / 2).astype(np.float32)


def keypoint_box(kp: np.ndarray, min_score: float) -> tuple[float, float, float, float] | None:
    """Tight box ``(x0, y0, x1, y1)`` of the joints with ``score >= min_score`` (``None`` if < 2)."""
    ok = kp[:, 2] >= min_score
    if ok.sum() < 2:
        return None
    xy = kp[ok, :2]
    x0, y0 = xy.min(axis=0)
    x1, y1 = xy.max(axis=0)
    if x1 - x0 < 1 or y1 - y0 < 1:
        return None
    return float(x0), float(y0), float(x1), float(y1)


class TopDownBackend(PoseBackend):
    """A top-down pose model run on a person box: the whole crop first, then (``crop="keypoints"``)
    again on the box around the first pass's confident joints, for whole-frame images.

    Subclasses implement :meth:`estimate_box` and set ``crop`` (``"image"`` or ``"keypoints"``),
    ``min_crop_score`` and ``min_person_score`` (mean keypoint score under which no person is found).
    """

    crop: str = "image"
    min_crop_score: float = 0.2
    min_person_score: float = 0.1

    def estimate_box(self, image: np.ndarray, box) -> np.ndarray:
        """Keypoints ``float32 [17, 3]`` in pixels of ``image`` for the person in ``box``
        ``(x0, y0, x1, y1)`` (pixels, pixel-index convention)."""
        raise NotImplementedError

    def estimate(self, image: np.ndarray) -> np.ndarray:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected uint8 [H, W, 3] RGB, got {image.dtype} {image.shape}")
        h, w = image.shape[:2]
        kp = self.estimate_box(image, (-0.5, -0.5, w - 0.5, h - 0.5))
        if self.crop == "keypoints":
            box = keypoint_box(clip_to_image(kp, w, h), self.min_crop_score)
            if box is not None:
                kp = self.estimate_box(image, box)
        kp = clip_to_image(kp, w, h)
        if float(kp[:, 2].mean()) < self.min_person_score:
            raise NoPersonFound("no person found")
        return kp


class RTMPoseBackend(TopDownBackend):
    """RTMPose / DWPose top-down SimCC model from a local ONNX file.

    Args:
        weights: path of the ``.onnx`` file (one image input ``[1, 3, h, w]``, two outputs
            ``simcc_x [1, K, w * r]`` and ``simcc_y [1, K, h * r]``, ``K >= 17`` with COCO-17 first).
        input_size: model input ``(w, h)`` when the ONNX input is dynamic (default: read from the
            file, else ``(192, 256)``).
        simcc_split_ratio: SimCC bins per input pixel (2.0 for RTMPose/DWPose).
        padding: box padding (1.25, as mmpose top-down).
        mean, std: per-channel RGB normalisation in 0..255.
        crop: ``"image"`` (default: the image is the box) or ``"keypoints"`` (whole frames: second
            pass on the box of the first pass's confident joints).
        min_crop_score: joint score for the ``"keypoints"`` box.
        min_person_score: raise :class:`NoPersonFound` when the mean COCO-17 score is below this
            (a top-down model always returns joints; a low mean score means no person in the box).
        num_threads: onnxruntime intra-op threads (default 1).
        name: backend name recorded in outputs (default ``"rtmpose"``; e.g. ``"dwpose"``).

    Raises:
        FileNotFoundError: ``weights`` does not exist (the path is named).
        ImportError: onnxruntime is not installed (``pip install posegen[rtmpose]``).
        ValueError: bad option, or the model does not have the SimCC inputs/outputs.
    """

    def __init__(
        self,
        weights: str | os.PathLike,
        *,
        input_size: tuple[int, int] | None = None,
        simcc_split_ratio: float = 2.0,
        padding: float = 1.25,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        crop: str = "image",
        min_crop_score: float = 0.3,
        min_person_score: float = 0.05,
        num_threads: int = 1,
        name: str = "rtmpose",
    ):
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"RTMPose ONNX weights not found: {str(path)!r} (a local .onnx file; posegen never downloads weights)")
        if crop not in ("image", "keypoints"):
            raise ValueError(f"crop must be 'image' or 'keypoints', got {crop!r}")
        if importlib.util.find_spec("onnxruntime") is None:
            raise ImportError("the rtmpose backend needs onnxruntime (pip install 'posegen[rtmpose]')")
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(num_threads)
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self._session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or len(outputs) < 2 or len(inputs[0].shape) != 4:
            raise ValueError(
                f"{path} is not a SimCC top-down model: expected one input [1, 3, h, w] and outputs "
                f"simcc_x, simcc_y; got inputs {[(i.name, i.shape) for i in inputs]}, outputs {[(o.name, o.shape) for o in outputs]}"
            )
        self._input_name = inputs[0].name
        by_name = {o.name: o.name for o in outputs}
        self._output_names = [by_name.get("simcc_x", outputs[0].name), by_name.get("simcc_y", outputs[1].name)]
        h_in, w_in = inputs[0].shape[2], inputs[0].shape[3]
        if input_size is None:
            input_size = (int(w_in), int(h_in)) if isinstance(w_in, int) and isinstance(h_in, int) else (192, 256)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.split_ratio = float(simcc_split_ratio)
        self.padding = float(padding)
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)
        self.crop = crop
        self.min_crop_score = float(min_crop_score)
        self.min_person_score = float(min_person_score)
        self.name = name
        self.weights = str(path)

    def preprocess(self, image: np.ndarray, box) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(input float32 [1, 3, h, w], center, scale)`` for ``box`` of ``image``."""
        w, h = self.input_size
        center, scale = box_center_scale(box, w / h, self.padding)
        crop = top_down_affine(image, center, scale, self.input_size).astype(np.float32)
        x = ((crop - self.mean) / self.std).transpose(2, 0, 1)[None]
        return np.ascontiguousarray(x, dtype=np.float32), center, scale

    def postprocess(self, simcc_x: np.ndarray, simcc_y: np.ndarray, center, scale) -> np.ndarray:
        """COCO-17 ``[17, 3]`` in image pixels from the SimCC outputs (not clipped)."""
        locs, scores = decode_simcc(simcc_x, simcc_y, self.split_ratio)
        if locs.shape[0] < NUM_KEYPOINTS:
            raise ValueError(f"the model returned {locs.shape[0]} keypoints; COCO-17 needs at least 17")
        xy = input_to_image(locs[:NUM_KEYPOINTS], center, scale, self.input_size)
        return np.concatenate([xy, np.clip(scores[:NUM_KEYPOINTS], 0.0, 1.0)[:, None]], axis=1).astype(np.float32)

    def estimate_box(self, image: np.ndarray, box) -> np.ndarray:
        """Keypoints of the person in ``box`` = ``(x0, y0, x1, y1)`` (pixels of ``image``), not clipped."""
        if self._session is None:
            raise RuntimeError("the backend is closed")
        x, center, scale = self.preprocess(image, box)
        simcc_x, simcc_y = self._session.run(self._output_names, {self._input_name: x})[:2]
        return self.postprocess(simcc_x, simcc_y, center, scale)

    def close(self) -> None:
        self._session = None


def rtmpose_factory(weights: str | None = None, **options) -> PoseBackend:
    """Factory for :data:`posegen.pose.backends.BACKENDS` (``weights`` is required)."""
    if weights is None:
        raise ValueError("the rtmpose backend needs a local ONNX file: --weights PATH (e.g. rtmpose-m 256x192 COCO-17)")
    return RTMPoseBackend(weights, **options)


def dwpose_factory(weights: str | None = None, **options) -> PoseBackend:
    """Like :func:`rtmpose_factory`, named ``"dwpose"`` (DWPose whole-body ONNX, body joints kept)."""
    if weights is None:
        raise ValueError("the dwpose backend needs a local ONNX file: --weights PATH (e.g. dw-ll_ucoco_384.onnx)")
    options.setdefault("name", "dwpose")
    return RTMPoseBackend(weights, **options)
