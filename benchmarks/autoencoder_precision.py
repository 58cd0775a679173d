"""TAEF2 in float32 and in bfloat16: speed and what the lower precision changes.

Encodes and decodes ``--n`` real CUHK03 *val* crops, letterboxed into posegen's 256x128 frame
(:mod:`posegen.latent.frame`), once per precision (:meth:`posegen.latent.TAEF2.set_precision`;
bfloat16 runs under ``torch.autocast`` on the CPU), one thread, the package's own
one-image-at-a-time CPU path. For each precision: milliseconds per image for ``encode`` and for
``decode`` (the best of ``--repeats`` passes over the crops), and the reconstruction's SSIM and PSNR
to the input (:func:`posegen.metrics.ssim`, :func:`posegen.metrics.psnr`). Then how far bfloat16 is
from float32: the latents (mean absolute difference, in units of the float32 latents' std) and the
decoded images of the same float32 latents (mean and largest absolute difference, in grey levels
0..255). bfloat16 is fast only where the CPU computes it natively
(:func:`posegen.latent.taef2.native_bf16`); the table says whether it does.

Prints a table and writes ``benchmarks/results/autoencoder_precision[-TAG].{json,md}``. Usage::

    .venv/bin/python benchmarks/autoencoder_precision.py --n 64
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import RESULTS, SHARED, commit, machine  # noqa: E402
from posegen._io import atomic_write_json, atomic_write_text  # noqa: E402
from posegen.data.images import read_image  # noqa: E402
from posegen.latent import letterbox_params, load_taef2  # noqa: E402
from posegen.latent.taef2 import native_bf16  # noqa: E402
from posegen.metrics import psnr, ssim  # noqa: E402
from posegen.repose.latent import FRAME_HW  # noqa: E402

VAL = SHARED / "data" / "cuhk03-detected" / "detected" / "val"


def crops(n: int) -> torch.Tensor:
    """The first ``n`` val crops (sorted names), letterboxed: ``float32 [n, 3, 256, 128]`` in 0..1."""
    files = sorted(VAL.glob("*.jpg"))[:n]
    if not files:
        raise SystemExit(f"no CUHK03 val crops in {VAL}")
    frames = []
    for f in files:
        img = read_image(f)
        frames.append(letterbox_params((img.shape[1], img.shape[0]), FRAME_HW).image_to_frame(img))
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255.0


def best_ms(fn, x: torch.Tensor, repeats: int) -> tuple[float, torch.Tensor]:
    """Best time of ``repeats`` calls of ``fn(x)`` after a warm-up, in ms per image, and the output."""
    out = fn(x)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn(x)
        times.append(time.perf_counter() - t)
    return 1000.0 * min(times) / len(x), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=64, help="val crops")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--tag", default="", help="results file suffix")
    args = ap.parse_args()
    torch.set_num_threads(1)
    x = crops(args.n)
    ae = load_taef2()
    rows, lat, dec = [], {}, {}
    with torch.no_grad():
        for precision in ("float32", "bfloat16"):
            ae.set_precision(precision)
            enc_ms, z = best_ms(ae.encode, x, args.repeats)
            dec_ms, rec = best_ms(ae.decode, z, args.repeats)
            a = (x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
            b = (rec.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
            rows.append(dict(precision=precision, encode_ms=enc_ms, decode_ms=dec_ms,
                             ssim=float(ssim(a, b).mean()), psnr=float(psnr(a, b).mean())))  # fmt: skip
            lat[precision] = z
            dec[precision] = ae.decode(lat["float32"])  # the same latents decoded in each precision
    z32, z16 = lat["float32"], lat["bfloat16"]
    diff = dict(
        latent_mean_abs_in_std=float((z16 - z32).abs().mean() / z32.std()),
        decoded_mean_abs_grey=float((dec["bfloat16"] - dec["float32"]).abs().mean() * 255),
        decoded_max_abs_grey=float((dec["bfloat16"] - dec["float32"]).abs().max() * 255),
    )
    speedup = dict(encode=rows[0]["encode_ms"] / rows[1]["encode_ms"], decode=rows[0]["decode_ms"] / rows[1]["decode_ms"])

    title = f"TAEF2 on {len(x)} CUHK03 val crops at 256x128, one thread (native bfloat16: {native_bf16()})"
    table = Table(title=title)
    for col in ("precision", "encode ms/img", "decode ms/img", "SSIM", "PSNR dB"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["precision"], f"{r['encode_ms']:.1f}", f"{r['decode_ms']:.1f}", f"{r['ssim']:.4f}", f"{r['psnr']:.2f}")
    Console().print(table)
    print(f"speed-up encode {speedup['encode']:.2f}x, decode {speedup['decode']:.2f}x; bfloat16 vs float32: "
          f"latents {diff['latent_mean_abs_in_std']:.4f} std, decoded images mean {diff['decoded_mean_abs_grey']:.2f} "
          f"/ max {diff['decoded_max_abs_grey']:.1f} grey levels")  # fmt: skip

    name = "autoencoder_precision" + (f"-{args.tag}" if args.tag else "")
    cmd = "python benchmarks/autoencoder_precision.py " + " ".join(sys.argv[1:])
    md = [f"# {title}\n", f"`{cmd.strip()}` at commit {commit()} on {machine()}\n",
          "| precision | encode ms/img | decode ms/img | SSIM | PSNR dB |", "| --- | ---: | ---: | ---: | ---: |"]
    md += [f"| {r['precision']} | {r['encode_ms']:.1f} | {r['decode_ms']:.1f} | {r['ssim']:.4f} | {r['psnr']:.2f} |" for r in rows]
    md += [f"\nSpeed-up of bfloat16: encode {speedup['encode']:.2f}x, decode {speedup['decode']:.2f}x. bfloat16 vs float32: "
           f"latents differ by {diff['latent_mean_abs_in_std']:.4f} of their std on average; the same latents decoded differ by "
           f"{diff['decoded_mean_abs_grey']:.2f} grey levels on average, {diff['decoded_max_abs_grey']:.1f} at most.\n"]
    atomic_write_text(RESULTS / f"{name}.md", "\n".join(md))
    atomic_write_json(RESULTS / f"{name}.json", dict(command=cmd.strip(), commit=commit(), machine=machine(), native_bf16=native_bf16(),
                                                     n=len(x), rows=rows, speedup=speedup, difference=diff))


if __name__ == "__main__":
    main()
