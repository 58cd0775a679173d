"""Where the default model's sampling time goes: images/s and seconds per image by stage.

Re-poses real CUHK03 *val* crops as ``augment`` does: batches of ``--batch-size`` holding each
source with ``--k`` targets (the targets of the next same-view pairs of
``benchmarks/quality_pairs_same_view.csv``, placed on the source person, ``align=True``), with the
shipped model's sampling defaults, for each SDEdit start (``--starts``). The stages are timed by
wrapping the pipeline's autoencoder ``encode`` / ``decode`` and the denoiser's ``forward`` on
this process's model objects; "other" is the rest of the call (the pixel warp, its fill and repair
mask, the latent-space warp, the letterbox). The first batch is a warm-up and not counted.

It also times the TAEF2 decoder alone on one batch of latents: the whole batch at once in the NCHW
and the NHWC (``channels_last``) memory formats, and NHWC one image at a time (what the package does
on a CPU).

Prints a table and writes ``benchmarks/results/default_model_speed[-TAG].{json,md}``. Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/default_model_speed.py --starts pixel latent
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from posegen._io import atomic_write_json, atomic_write_text
from posegen.data.images import read_image
from posegen.pose.backends import DEFAULT_BACKEND, get_backend
from posegen.repose import load_pipeline
from _common import RESULTS, commit, machine
from repose_quality import CUHK03_VAL, load_same_view_pairs, val_poses

STAGES = ("encode", "denoise", "decode", "other")


def batches(n_sources: int, k: int, batch_size: int):
    """Source ``i`` of the same-view list with the targets of pairs ``i .. i+k-1``, in batches.

    Yields ``(images, source_kp, target_kp, target_sizes)``: ``batch_size`` RGB ``uint8 [H, W, 3]``
    crops (a source repeated for each of its targets is the same array, so the pipeline encodes it
    once), COCO-17 ``float32 [B, 17, 3]`` ``(x, y, score)`` in pixels of the source and of the
    target image, and the target images' ``(width, height)``. Poses: the default backend's, cached
    by ``benchmarks/repose_quality.py``."""
    with get_backend(DEFAULT_BACKEND) as be:
        manifest, poses = val_poses(be)
    pairs = load_same_view_pairs(manifest, poses)
    kp = {p: np.asarray(k, np.float32).reshape(17, 3) for p, k in zip(poses["path"], poses["keypoints"]) if k is not None}
    size = dict(zip(poses["path"], zip(poses["width"], poses["height"])))
    sources = list(dict.fromkeys(pairs["source"]))[:n_sources]
    targets = list(pairs["target"])
    rows = [(s, targets[(i + j) % len(targets)]) for i, s in enumerate(sources) for j in range(k)]
    images = {s: read_image(CUHK03_VAL / s) for s in sources}
    for b in range(0, len(rows), batch_size):
        chunk = rows[b : b + batch_size]
        yield (
            [images[s] for s, _ in chunk], np.stack([kp[s] for s, _ in chunk]), np.stack([kp[t] for _, t in chunk]),
            [size[t] for _, t in chunk],
        )  # fmt: skip


class StageClock:
    """Seconds spent in the autoencoder's encode/decode and the denoiser of one pipeline."""

    def __init__(self, pipe):
        self.t = dict.fromkeys(STAGES, 0.0)
        ae, unet = pipe.autoencoder, pipe.unet
        ae.encode = self._timed(ae.encode, "encode")
        ae.decode = self._timed(ae.decode, "decode")
        unet.forward = self._timed(unet.forward, "denoise")

    def _timed(self, fn, key):
        def run(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self.t[key] += time.perf_counter() - t0

        return run


def decoder_layouts(pipe, batch_size: int, repeats: int = 2) -> dict[str, float]:
    """Seconds per image of the TAEF2 decoder (``pipe.autoencoder.decoder``) on random latents
    ``[batch_size, 32, 32, 16]``, the best of ``repeats``: the whole batch at once in NCHW and in
    NHWC, and NHWC one image at a time (what :meth:`posegen.latent.TAEF2.decode` does on a CPU)."""
    dec = pipe.autoencoder.decoder
    z = torch.randn(batch_size, 32, 32, 16, generator=torch.Generator().manual_seed(0))
    out = {}
    with torch.no_grad():
        for name, fmt in (("NCHW", torch.contiguous_format), ("NHWC", torch.channels_last)):
            dec.to(memory_format=fmt)
            zi = z.contiguous(memory_format=fmt)
            best = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                dec(zi)
                best = min(best, time.perf_counter() - t0)
            out[name] = best / batch_size
        dec.to(memory_format=torch.channels_last)
        zi = z.contiguous(memory_format=torch.channels_last)
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            for i in range(batch_size):
                dec(zi[i : i + 1])
            best = min(best, time.perf_counter() - t0)
        out["NHWC per image"] = best / batch_size
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sources", type=int, default=24, help="distinct source images")
    ap.add_argument("--k", type=int, default=4, help="targets per source (augment's K)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--starts", nargs="+", default=["pixel", "latent"], choices=["pixel", "latent"])
    ap.add_argument("--tag", default="", help="results file suffix")
    args = ap.parse_args()

    data = list(batches(args.sources, args.k, args.batch_size))
    rows = []
    for start in args.starts:
        pipe = load_pipeline(None)
        clock = StageClock(pipe)
        n, total = 0, 0.0
        for i, (imgs, skp, tkp, sizes) in enumerate(data):
            before = dict(clock.t)
            t0 = time.perf_counter()
            pipe(imgs, skp, tkp, target_sizes=sizes, start=start,
                 generator=[torch.Generator().manual_seed(j) for j in range(len(imgs))])  # fmt: skip
            dt = time.perf_counter() - t0
            if i == 0:  # warm-up
                clock.t = before
                continue
            n, total = n + len(imgs), total + dt
        stages = {k: clock.t[k] / n for k in STAGES[:-1]}
        stages["other"] = total / n - sum(stages.values())
        rows.append({"start": start, "images": n, "images_per_s": n / total, "s_per_image": stages})
    layouts = decoder_layouts(pipe, args.batch_size)

    table = Table(title=f"default model, batches of {args.batch_size} ({args.k} targets per source), one process")
    for c in ("start", "images", "img/s", *(f"{s} s/img" for s in STAGES)):
        table.add_column(c, justify="right")
    for r in rows:
        table.add_row(r["start"], str(r["images"]), f"{r['images_per_s']:.2f}", *(f"{r['s_per_image'][s]:.3f}" for s in STAGES))
    console = Console()
    console.print(table)
    console.print("TAEF2 decoder alone, s/img: " + ", ".join(f"{k} {v:.3f}" for k, v in layouts.items()))

    cmd = " ".join([Path(sys.executable).name, *sys.argv])
    result = {"command": cmd, "commit": commit(), "machine": machine(), "torch_threads": torch.get_num_threads(),
              "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "rows": rows, "decoder_s_per_image": layouts}  # fmt: skip
    stem = "default_model_speed" + (f"-{args.tag}" if args.tag else "")
    atomic_write_json(RESULTS / f"{stem}.json", result)
    md = [
        "# Where the default model's sampling time goes", "",
        f"`{cmd}` at commit {result['commit']} ({result['machine']}; torch threads {result['torch_threads']})", "",
        f"Real CUHK03 val crops, batches of {args.batch_size}, {args.k} targets per source, the shipped model's sampling defaults; "
        "the first batch is a warm-up.", "",
        "| start | images | img/s | " + " | ".join(f"{s} s/img" for s in STAGES) + " |",
        "| --- | ---: | ---: | " + " | ".join("---:" for _ in STAGES) + " |",
    ]  # fmt: skip
    for r in rows:
        md.append(f"| {r['start']} | {r['images']} | {r['images_per_s']:.2f} | "
                  + " | ".join(f"{r['s_per_image'][s]:.3f}" for s in STAGES) + " |")  # fmt: skip
    md += ["", "TAEF2 decoder alone (random latents, one batch at once or one image at a time, best of 2), s/img: "
           + ", ".join(f"{k} {v:.3f}" for k, v in layouts.items()), ""]  # fmt: skip
    atomic_write_text(RESULTS / f"{stem}.md", "\n".join(md))


if __name__ == "__main__":
    main()
