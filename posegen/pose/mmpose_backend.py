"""mmpose top-down models (config + checkpoint paths), optional extra ``posegen[mmpose]``.

Wraps ``mmpose.apis.init_model`` + ``inference_topdown`` (mmpose 1.x) behind
:class:`~posegen.pose.backends.PoseBackend`. The user brings a local config (``.py``) and a local
checkpoint (``.pth``); both must exist (a URL or a missing path is a :class:`FileNotFoundError`,
so mmengine never downloads). ``init_model`` drops the backbone's ``init_cfg`` (which in the
RTMPose configs points at a pretrained URL), so building the model reads nothing from the network.

Person box: for re-ID crops the crop is the box, passed explicitly as the whole image
``(-0.5, -0.5, W - 0.5, H - 0.5)`` in pixel-index coordinates (the same box as
:class:`~posegen.pose.rtmpose.RTMPoseBackend`); mmpose then pads it (1.25 for the RTMPose configs)
and fixes its aspect ratio. For whole-frame images ``crop="keypoints"`` runs a second pass on the
box of the first pass's confident joints (no detector; the user's own boxes can be passed to
:meth:`MMPoseBackend.estimate_box`).

mmpose returns keypoints in image pixels (its affine maps the box centre to the input centre and
back, like posegen's RTMPose backend); the first 17 keypoints must be COCO-17 (COCO and
COCO-WholeBody models). mmpose takes BGR images; posegen's RGB input is converted.

Installing mmpose needs mmcv 2.x built from source on a CPU-only machine and pulls
``opencv-python`` (which clashes with mediapipe's ``opencv-contrib-python``): install it in a
separate environment if possible. This module imports mmpose only when a backend is created.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np

from .backends import NoPersonFound, PoseBackend
from .rtmpose import TopDownBackend
from .keypoints import NUM_KEYPOINTS

__all__ = ["MMPoseBackend", "mmpose_result_to_coco17"]


def mmpose_result_to_coco17(keypoints: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """One mmpose instance (``keypoints [K, 2]`` or ``[1, K, 2]``, ``scores [K]`` or ``[1, K]``) to
    COCO-17 ``float32 [17, 3]`` (the first 17 keypoints; scores clipped to ``[0, 1]``)."""
    kp = np.asarray(keypoints, dtype=np.float32).reshape(-1, 2)
    sc = np.asarray(scores, dtype=np.float32).reshape(-1)
    if kp.shape[0] < NUM_KEYPOINTS or sc.shape[0] != kp.shape[0]:
        raise ValueError(f"mmpose returned {kp.shape[0]} keypoints and {sc.shape[0]} scores; COCO-17 needs 17")
    return np.concatenate([kp[:NUM_KEYPOINTS], np.clip(sc[:NUM_KEYPOINTS], 0.0, 1.0)[:, None]], axis=1)


class MMPoseBackend(TopDownBackend):
    """An mmpose 1.x top-down pose model.

    Args:
        config: local mmpose config file (e.g. ``rtmpose-m_8xb256-420e_coco-256x192.py``).
        checkpoint: local checkpoint file. ``None`` builds the model with random weights (for
            tests of the adapter only; the outputs are meaningless).
        device: torch device (``"cpu"``).
        crop: ``"image"`` (default, the image is the box) or ``"keypoints"`` (second pass on the
            box of the confident joints, for whole frames).
        min_crop_score: joint score for the ``"keypoints"`` box.
        min_person_score: raise :class:`NoPersonFound` below this mean COCO-17 score.
        name: backend name recorded in outputs (default ``"mmpose"``).

    Raises:
        FileNotFoundError: the config or the checkpoint does not exist (the path is named).
        ImportError: mmpose is not installed (``pip install 'posegen[mmpose]'``).
    """

    def __init__(
        self,
        config: str | os.PathLike,
        checkpoint: str | os.PathLike | None,
        *,
        device: str = "cpu",
        crop: str = "image",
        min_crop_score: float = 0.3,
        min_person_score: float = 0.05,
        name: str = "mmpose",
    ):
        config = Path(config)
        if not config.is_file():
            raise FileNotFoundError(f"mmpose config not found: {str(config)!r} (a local .py config file)")
        if checkpoint is not None and not Path(checkpoint).is_file():
            raise FileNotFoundError(
                f"mmpose checkpoint not found: {str(checkpoint)!r} (a local .pth file; posegen never downloads weights)"
            )
        if crop not in ("image", "keypoints"):
            raise ValueError(f"crop must be 'image' or 'keypoints', got {crop!r}")
        if importlib.util.find_spec("mmpose") is None:
            raise ImportError("the mmpose backend needs mmpose 1.x (pip install 'posegen[mmpose]', see the README)")
        from mmpose.apis import inference_topdown, init_model

        self._inference = inference_topdown
        self._model = init_model(str(config), None if checkpoint is None else str(checkpoint), device=device)
        self.crop = crop
        self.min_crop_score = float(min_crop_score)
        self.min_person_score = float(min_person_score)
        self.name = name
        self.weights = str(checkpoint) if checkpoint is not None else f"random-init:{config.name}"

    def estimate_box(self, image: np.ndarray, box) -> np.ndarray:
        """COCO-17 keypoints of the person in ``box`` = ``(x0, y0, x1, y1)``, not clipped."""
        if self._model is None:
            raise RuntimeError("the backend is closed")
        bgr = np.ascontiguousarray(image[..., ::-1])
        boxes = np.asarray([box], dtype=np.float32)
        results = self._inference(self._model, bgr, bboxes=boxes, bbox_format="xyxy")
        if not results:
            raise NoPersonFound("no person found")
        inst = results[0].pred_instances
        return mmpose_result_to_coco17(inst.keypoints[0], inst.keypoint_scores[0])

    def close(self) -> None:
        self._model = None


def mmpose_factory(weights: str | None = None, *, config: str | None = None, **options) -> PoseBackend:
    """Factory for :data:`posegen.pose.backends.BACKENDS`.

    ``weights`` is either the checkpoint (``.pth``, with the ``config`` option naming the config)
    or a folder holding exactly one ``.py`` config and one ``.pth`` checkpoint (so that
    ``posegen extract-poses --backend mmpose --weights FOLDER`` works without more options).
    """
    if weights is None:
        raise ValueError("the mmpose backend needs --weights PATH: a .pth checkpoint (with config=PATH) or a folder with one .py config and one .pth")
    path = Path(weights)
    if config is None:
        if not path.exists():
            raise FileNotFoundError(f"mmpose weights not found: {str(path)!r} (a local folder or .pth file; posegen never downloads weights)")
        if not path.is_dir():
            raise ValueError("the mmpose backend needs config=PATH with a .pth checkpoint, or --weights FOLDER with one .py and one .pth")
        configs, checkpoints = sorted(path.glob("*.py")), sorted(path.glob("*.pth"))
        if len(configs) != 1 or len(checkpoints) != 1:
            raise ValueError(f"{path} must hold exactly one .py config and one .pth checkpoint, found {len(configs)} and {len(checkpoints)}")
        config, path = configs[0], checkpoints[0]
    return MMPoseBackend(config, path, **options)
