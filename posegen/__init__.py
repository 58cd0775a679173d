"""posegen: multiply person re-ID and fashion datasets with pose-guided diffusion.

Stages (each a sub-package of plain functions over plain data, see ``../shared/DESIGN.md``):

- :mod:`posegen.data`    — dataset layouts -> manifest DataFrame ``path, pid, camid, split``.
- :mod:`posegen.pose`    — keypoints (COCO-17), pose backends, keypoint file formats, extraction.
- :mod:`posegen.repose`  — the pose-conditioned diffusion model, its pipeline and training.
- :mod:`posegen.filter`  — quality filter of generated images (OKS, sanity).
- :mod:`posegen.augment` — the main job: targets -> generation -> filter -> output tree + manifest.

posegen never downloads anything: every model loads from a local path (or from a package that
bundles its weights). The Hugging Face libraries are switched to offline mode on import so that a
missing local file is an error, never a network call.
"""

import os as _os

# Offline by construction: diffusers/huggingface_hub must never try the network for a model.
_os.environ.setdefault("HF_HUB_OFFLINE", "1")
_os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
_os.environ.setdefault("DIFFUSERS_NO_ADVISORY_WARNINGS", "1")

__version__ = "0.1.0"
