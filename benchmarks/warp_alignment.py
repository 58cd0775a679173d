"""Does the keypoint-driven warp (posegen.repose.warp) bring a source closer to a real target?

For same-pid CUHK03 train pairs (fixed pids and image pairs: view A -> view B and view A -> view A),
with BlazePose keypoints, at 128x64: mean L1 (images in [-1, 1]) between the real target and (a) the
source, (b) the source warped by :func:`limb_flow` to the target pose, over the pixels where the
flow's weight > 0.5. Prints a table and writes ``benchmarks/results/warp_alignment.{json,md}``::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/warp_alignment.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import repose_quality as rq  # noqa: E402

from posegen._io import atomic_write_json, atomic_write_text  # noqa: E402
from posegen.data.images import ImageReadError, read_image  # noqa: E402
from posegen.pose.backends import NoPersonFound, get_backend  # noqa: E402
from posegen.repose.render import image_to_tensor  # noqa: E402
from posegen.repose.warp import keypoints_to_frame, limb_flow, warp  # noqa: E402

TRAIN = rq.SHARED / "data" / "cuhk03-detected" / "detected" / "train"
PIDS = (0, 3, 7, 12, 20, 33, 50, 80, 100, 150)
PAIRS = ((0, 5), (1, 7), (0, 3))
HW = (128, 64)


def main() -> None:
    if not TRAIN.is_dir():
        sys.exit(f"data not found: {TRAIN} (the ../shared folder beside the repository)")
    rows = []
    with get_backend("blazepose") as be:
        for pid in PIDS:
            for ka, kb in PAIRS:
                try:
                    a, b = (read_image(TRAIN / f"{pid:04d}_{k:02d}.jpg") for k in (ka, kb))
                    kpa, kpb = be.estimate(a), be.estimate(b)
                except (ImageReadError, NoPersonFound):  # a missing image or no person: skip the pair
                    continue
                sk = keypoints_to_frame(kpa[None], [a.shape[1::-1]], HW)
                tk = keypoints_to_frame(kpb[None], [b.shape[1::-1]], HW)
                grid, weight = limb_flow(sk, tk, HW)
                src, tgt = image_to_tensor(a, HW)[None], image_to_tensor(b, HW)[None]
                m = (weight > 0.5).float()
                l1 = lambda x: float(((x - tgt).abs() * m).sum() / (3 * m.sum().clamp_min(1)))  # noqa: E731
                rows.append({"pid": pid, "source": f"{pid:04d}_{ka:02d}", "target": f"{pid:04d}_{kb:02d}",
                             "l1_source": l1(src), "l1_warped": l1(warp(src, grid))})  # fmt: skip
    u = np.array([r["l1_source"] for r in rows])
    w = np.array([r["l1_warped"] for r in rows])
    res = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "commit": rq.commit(), "pairs": len(rows),
           "mean_l1_source": float(u.mean()), "mean_l1_warped": float(w.mean()),
           "share_improved": float((w < u).mean()), "rows": rows}  # fmt: skip
    md = (f"# Warp alignment on real pairs (128x64)\n\n`{res['command']}` at commit {res['commit']}\n\n"
          "| pairs | mean L1 source -> target | mean L1 warped source -> target | pairs improved |\n|---:|---:|---:|---:|\n"
          f"| {len(rows)} | {u.mean():.3f} | {w.mean():.3f} | {(w < u).mean():.0%} |\n")  # fmt: skip
    print(md)
    atomic_write_json(rq.RESULTS / "warp_alignment.json", res)
    atomic_write_text(rq.RESULTS / "warp_alignment.md", md)


if __name__ == "__main__":
    main()
