"""Which side of a side-on person faces the camera: :func:`posegen.pose.keypoints.near_side` checked.

The depth-ordered warp (:func:`posegen.repose.warp.limb_flow` ``depth_order``) puts a side-on
person's far arm behind the torso and the far leg behind the near leg; which side is far comes from
the way the nose points (:func:`~posegen.pose.keypoints.near_side`). Two checks, neither of which
the rule sees:

1. **Ground truth**: the 19,732 annotated poses of ``market-annotation-test.csv`` (Pose-Transfer
   annotations, OpenPose-18 -> COCO-17). Annotators leave out joints they cannot see, so on a
   side-on person the far arm has fewer annotated joints. Over the poses the rule decides and whose
   two arms have different numbers of annotated joints (shoulder, elbow, wrist): the share where
   the arm the rule calls near is the more annotated one.
2. **Estimated poses**: the 938 CUHK03 val crops with ``--backend`` (posegen's default, cached like
   ``benchmarks/repose_quality.py``'s): the share where the near arm has the higher mean keypoint
   score (the estimator is less sure of the arm it cannot see).

Prints the table and writes ``benchmarks/results/near_side.md`` and ``.json``. Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/near_side.py [--backend auto]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from _common import RESULTS, SHARED, commit, machine
from posegen._io import atomic_write_json, atomic_write_text
from posegen.pose.formats import keypoints_array, read_poses
from posegen.pose.keypoints import near_side, pose_view

MARKET_GT = SHARED / "data" / "market1501-keypoints" / "market-annotation-test.csv"
LEFT_ARM, RIGHT_ARM = [5, 7, 9], [6, 8, 10]


def check(kp: np.ndarray, left: np.ndarray, right: np.ndarray) -> dict:
    """``kp`` ``[N, 17, 3]``; ``left``/``right`` ``[N]`` the evidence for each arm (annotated joints
    or mean score). Returns counts and the agreement where the evidence differs."""
    near = near_side(kp)
    view = pose_view(kp)
    side_on = int(((view["facing"] == 0) & np.isfinite(view["dx"])).sum())
    decided = near != 0
    usable = decided & (left != right)
    agree = ((left > right) == (near == 1))[usable]
    return {"poses": int(len(kp)), "side_on": side_on, "decided": int(decided.sum()), "left_near": int((near == 1).sum()),
            "right_near": int((near == -1).sum()), "with_evidence": int(usable.sum()),
            "agreement": float(agree.mean()) if len(agree) else float("nan")}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default=None, help="pose backend for the CUHK03 val crops (default: posegen's)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    rows = {}
    if not MARKET_GT.is_file():
        sys.exit(f"data not found: {MARKET_GT} (the ../shared folder beside the repository)")
    kp = keypoints_array(read_poses(MARKET_GT))
    pres = kp[..., 2] >= 0.5
    rows["Market-1501 test, ground truth (annotated arm joints)"] = check(kp, pres[:, LEFT_ARM].sum(1), pres[:, RIGHT_ARM].sum(1))

    from repose_quality import val_poses  # noqa: E402 (the benchmark's cached CUHK03 val poses)

    from posegen.pose.backends import DEFAULT_BACKEND, get_backend

    with get_backend(args.backend or DEFAULT_BACKEND) as be:
        _, poses = val_poses(be)
        name = be.name
    poses = poses[poses["status"] == "ok"]
    kp = keypoints_array(poses)
    rows[f"CUHK03 val, {name} (mean arm keypoint score)"] = check(kp, kp[:, LEFT_ARM, 2].mean(1), kp[:, RIGHT_ARM, 2].mean(1))

    result = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "commit": commit(), "machine": machine(),
              "rows": rows, "seconds": time.perf_counter() - t0}  # fmt: skip
    head = "| poses | n | side-on | decided (left near / right near) | with evidence | near arm = more evidence |\n| --- | ---: | ---: | ---: | ---: | ---: |"
    lines = [f"| {k} | {v['poses']} | {v['side_on']} | {v['decided']} ({v['left_near']} / {v['right_near']}) | "
             f"{v['with_evidence']} | {100 * v['agreement']:.1f} % |" for k, v in rows.items()]  # fmt: skip
    md = (f"# near_side: which side of a side-on person faces the camera\n\n`{result['command']}` at commit {result['commit']} "
          f"({result['machine']}; {result['seconds']:.0f} s)\n\n{head}\n" + "\n".join(lines) + "\n")  # fmt: skip
    print(md)
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_json(RESULTS / "near_side.json", result)
    atomic_write_text(RESULTS / "near_side.md", md)


if __name__ == "__main__":
    main()
