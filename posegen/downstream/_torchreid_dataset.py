"""The torchreid ``ImageDataset`` posegen registers (imported lazily: importing it imports torchreid).

Defined at module level so DataLoader workers can unpickle it under any start method (fork, spawn,
forkserver): the instance carries its lists; the class is found by its import path.
"""

from __future__ import annotations

from torchreid.reid.data import ImageDataset

#: Lists waiting to be picked up by the data manager, keyed by the ``root`` argument torchreid passes.
PENDING: dict[str, tuple[list, list, list]] = {}


class PosegenManifestDataset(ImageDataset):
    """A torchreid ``ImageDataset`` whose train/query/gallery lists come from posegen.

    torchreid's ``ImageDataManager`` builds registered datasets by name with ``root=...``; posegen
    passes a key of :data:`PENDING` as ``root``. Each list holds ``(img_path, pid, camid)`` tuples;
    ``__getitem__`` (torchreid's) returns ``{"img": float32 tensor [3, H, W], "pid", "camid",
    "impath", "dsetid"}``.
    """

    def __init__(self, root="", **kwargs):
        train, query, gallery = PENDING[root]
        super().__init__(train, query, gallery, **kwargs)
