"""The README main job's wall time by stage, for several ``--workers`` values.

Runs :func:`posegen.augment.augment` in this process exactly as the README's main job does (the
first ``--limit`` images of CUHK03-detected *train*, the shipped default model, the default recipe,
the OSNet x0.25 re-ID weights, the pose backend ``auto``) once per ``--workers`` value, each into a
fresh temporary OUT, and times the stages from the progress callback: ``poses``, ``targets`` (from
the end of the copy to the start of the identity references: the target choice with its honour
check), ``identity``, ``generate`` (re-posing, the filter and the writes), ``report`` (the manifest
and ``report.html``), and the total from the call to its return (the CLI's count adds the imports,
about 9 s). Also the kept count, so runs can be compared: the outputs of ``--workers`` values differ
only by float rounding between torch thread counts.

Prints a table and writes ``benchmarks/results/main_job_speed[-TAG].{json,md}``. Usage (both
cores free; about 6 min per value on the 2-core machine)::

    .venv/bin/python benchmarks/main_job_speed.py --workers 1 2
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from posegen._io import atomic_write_json, atomic_write_text
from posegen.augment import augment, summarize
from posegen.pose.backends import DEFAULT_BACKEND, get_backend
from posegen.recipe import load_recipe
from _common import RESULTS, SHARED, commit, machine

STAGES = ("poses", "targets", "identity", "generate", "report", "total")


def run_once(data: Path, reid: Path, limit: int, workers: int, backend_name: str) -> dict:
    """One main job into a temporary OUT; seconds per stage (:data:`STAGES`) and the counts."""
    marks: dict[str, list[float]] = {}

    def progress(stage, done, total):
        now = time.perf_counter()
        marks.setdefault(stage, [now, now])[1] = now

    with tempfile.TemporaryDirectory(prefix="main-job-") as tmp, get_backend(backend_name) as be:
        t0 = time.perf_counter()
        manifest = augment(data, Path(tmp) / "out", recipe=load_recipe("default"), backend=be, limit=limit,
                           reid_weights=reid, progress=progress, workers=workers)  # fmt: skip
        t_end = time.perf_counter()
    s = summarize(manifest)
    sec = {
        "poses": marks["poses"][1] - marks["poses"][0],
        "targets": marks["identity"][0] - marks["copy"][1],
        "identity": marks["identity"][1] - marks["identity"][0],
        "generate": marks["generate"][1] - marks["generate"][0],
        "report": t_end - marks["generate"][1],
        "total": t_end - t0,
    }
    return {"workers": workers, "seconds": sec, "generated": int(s["generated"]), "kept": int(s["kept"])}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--limit", type=int, default=120)
    ap.add_argument("--data", type=Path, default=SHARED / "data" / "cuhk03-detected" / "detected" / "train")
    ap.add_argument("--reid-weights", type=Path, default=SHARED / "weights" / "osnet" / "osnet_x0_25_msmt17.onnx")
    ap.add_argument("--backend", default=DEFAULT_BACKEND)
    ap.add_argument("--tag", default="")
    a = ap.parse_args(argv)
    for p in (a.data, a.reid_weights):
        if not p.exists():
            sys.exit(f"not found: {p}")
    rows = [run_once(a.data, a.reid_weights, a.limit, w, a.backend) for w in a.workers]

    table = Table(title=f"README main job ({a.limit} images), seconds")
    for col in ("workers", *STAGES, "generated", "kept"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r["workers"]), *(f"{r['seconds'][k]:.1f}" for k in STAGES), str(r["generated"]), str(r["kept"]))
    Console().print(table)

    env = [f"{k}={os.environ[k]}" for k in ("POSEGEN_TAEF2_PRECISION", "OMP_NUM_THREADS") if os.environ.get(k)]
    cmd = " ".join([*env, Path(sys.executable).name, *sys.argv])
    result = {"command": cmd, "commit": commit(), "machine": machine(), "torch_threads": torch.get_num_threads(), "runs": rows}
    stem = "main_job_speed" + (f"-{a.tag}" if a.tag else "")
    atomic_write_json(RESULTS / f"{stem}.json", result)
    md = [
        f"# README main job, wall time by stage ({a.limit} CUHK03 train images, default model)", "",
        f"`{cmd}` at commit {result['commit']} ({result['machine']}; torch threads {result['torch_threads']})", "",
        "| workers | " + " | ".join(STAGES) + " | generated | kept |",
        "| ---: | " + " | ".join("---:" for _ in STAGES) + " | ---: | ---: |",
    ]  # fmt: skip
    for r in rows:
        md.append(f"| {r['workers']} | " + " | ".join(f"{r['seconds'][k]:.1f}" for k in STAGES) + f" | {r['generated']} | {r['kept']} |")
    md += ["", "Seconds; `generated` counts the rows (including those rejected before generation); `total` is "
           "the `augment` call (the CLI adds the imports)."]  # fmt: skip
    atomic_write_text(RESULTS / f"{stem}.md", "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
