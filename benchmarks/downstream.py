"""Downstream re-ID gain on real CUHK03: real vs real+synthetic vs real+duplicated (torchreid).

Runs :func:`posegen.downstream.evaluate_downstream` on ``../shared/data/cuhk03-detected/detected``
(train on ``train/``; ``val/`` view A = query, view B = gallery) with the three arms, every
``--real-fraction`` and every seed, prints the table, and writes
``benchmarks/results/downstream.json`` and ``benchmarks/results/downstream.md`` (with the command,
the commit and the machine); the full report (CSV, CMC plot, logs) goes to ``--work``.

The synthetic set is ``--augmented OUT`` when given; else ``runs/cuhk03-demo`` when it holds kept
synthetic images (``posegen augment`` output); else horizontally flipped copies of the real
training images (a stand-in: no new pose, so no gain is expected from it).

Defaults are sized for about 10-15 minutes on 2 shared CPU cores (a subset of the training
identities, 64x32 images, 10 epochs); pass ``--max-train-pids 0 --height 128 --width 64 --epochs 60``
on a GPU for the full protocol. Usage::

    .venv/bin/python benchmarks/downstream.py [--seeds 0,1,2] [--real-fraction 1.0] [--epochs 10] ...
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import pandas as pd
from rich.console import Console
from _common import commit as _commit

REPO = Path(__file__).resolve().parents[1]
CUHK03 = REPO.parent / "shared" / "data" / "cuhk03-detected" / "detected"
DEMO = REPO / "runs" / "cuhk03-demo"


def _has_kept_synthetic(out: Path) -> bool:
    m = out / "manifest.parquet"
    if not m.is_file():
        return False
    df = pd.read_parquet(m, columns=["synthetic", "kept", "path"])
    return bool((df["synthetic"] & df["kept"] & (df["path"] != "")).any())


def main() -> None:
    from posegen._io import atomic_write_json, atomic_write_text
    from posegen.cli.downstream import parse_floats, parse_ints, results_table
    from posegen.downstream import evaluate_downstream, markdown_table

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=CUHK03, help="real dataset with train + query/gallery")
    ap.add_argument("--augmented", type=Path, default=None, help="augment OUT (default: runs/cuhk03-demo if usable, else flip)")
    ap.add_argument("--model", default="osnet_x0_25")
    ap.add_argument("--real-fraction", default="1.0")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--height", type=int, default=64)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--loss", default="softmax")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--max-train-pids", type=int, default=100, help="first N training identities (0: all)")
    ap.add_argument("--max-test-pids", type=int, default=0, help="first N test identities (0: all)")
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "bench-downstream")
    ap.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results" / "downstream")
    args = ap.parse_args()
    if not args.data.exists():
        sys.exit(f"data not found: {args.data} (the ../shared folder beside the repository)")

    augmented, synthetic = args.augmented, None
    if augmented is None:
        if _has_kept_synthetic(DEMO):
            augmented = DEMO
        else:
            synthetic = "flip"
    command = " ".join([Path(sys.executable).name, *sys.argv])
    console = Console()
    t0 = time.perf_counter()
    result = evaluate_downstream(
        args.data, augmented, args.work, synthetic=synthetic, model=args.model,
        fractions=parse_floats(args.real_fraction, "--real-fraction"), seeds=parse_ints(args.seeds, "--seeds"),
        epochs=args.epochs, height=args.height, width=args.width, batch_size=args.batch_size, lr=args.lr,
        loss=args.loss, device=args.device, threads=args.threads or None, workers=args.workers,
        max_train_pids=args.max_train_pids or None, max_test_pids=args.max_test_pids or None, command=command,
        progress=lambda stage, done, total: print(f"\r{stage} {done}/{total}   ", end="", file=sys.stderr, flush=True),
    )  # fmt: skip
    wall = time.perf_counter() - t0
    print(file=sys.stderr)
    console.print(results_table(result, title=f"eval-downstream on CUHK03 ({wall / 60:.1f} min)"))

    import torch

    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, device {result['config']['device']}"
    if result["config"]["device"] == "cuda":
        machine += f" ({torch.cuda.get_device_name(0)})"
    record = {
        "command": command,
        "commit": _commit(),
        "machine": machine,
        "wall_seconds": wall,
        "synthetic": result["config"]["synthetic_source"],
        "config": result["config"],
        "protocol": result["protocol"],
        "summary": result["summary"],
        "runs": [{k: v for k, v in r.items() if k != "cmc"} for r in result["runs"]],
        "report_dir": str(args.work),
    }
    atomic_write_json(args.results.with_suffix(".json"), record)
    p, c = result["protocol"], result["config"]
    md = [
        "# eval-downstream benchmark (CUHK03)",
        "",
        f"Command: `{command}`  ",
        f"Commit {record['commit']}; {machine}; wall time {wall / 60:.1f} min.  ",
        f"Synthetic set: {record['synthetic']}.  ",
        f"Train: {p['n_train_images']} images of {p['n_train_pids']} identities (CUHK03 detected train"
        + (f", first {c['max_train_pids']} identities" if c["max_train_pids"] else "") + "); "
        f"test: {p['n_query']} query (view A) / {p['n_gallery']} gallery (view B), {p['n_test_pids']} identities.  ",
        f"{c['model']} from scratch, {c['loss']}, {c['epochs']} epochs, {c['height']}x{c['width']}, batch {c['batch_size']}, "
        f"Adam lr {c['lr']} (cosine), seeds {', '.join(map(str, c['seeds']))}.",
        "",
        "Percent, mean ± std over seeds; Δ = arm − real with the same seed (paired).",
        "",
        markdown_table(result["summary"]),
    ]
    atomic_write_text(args.results.with_suffix(".md"), "\n".join(md))
    console.print(f"results: {args.results.with_suffix('.json')}, {args.results.with_suffix('.md')}; report: {args.work}")


if __name__ == "__main__":
    main()
