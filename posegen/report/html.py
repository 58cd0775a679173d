"""``OUT/report.html``: a contact sheet of an augment run that a person checks in a browser.

One table row per generated image: source | target skeleton | output | scores and decision, in two
sections (kept, rejected). Plain HTML and CSS: no scripts, no network resources. Thumbnails are
PNG files under ``OUT/.posegen/report/`` referenced by relative paths, so the page stays small and
the folder can be moved or zipped as a whole.
"""

from __future__ import annotations

import hashlib
import html
import os
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from .._io import atomic_save_image, atomic_write_text, stable_seed
from ..data.images import read_image
from ..filter.scores import reason_kind
from ..pose.formats import read_poses
from ..pose.keypoints import scale_keypoints
from .plots import plot_scores

__all__ = ["write_report", "sample_rows", "skeleton_image", "REPORT_NAME", "PLOT_NAME", "THUMB_DIR"]

REPORT_NAME = "report.html"
#: Thumbnail folder, relative to OUT (hidden: a dataset parser must not count report images as data).
THUMB_DIR = ".posegen/report"
#: The score histograms, relative to OUT (beside the thumbnails, for the same reason).
PLOT_NAME = f"{THUMB_DIR}/scores.png"
_THUMB_HEIGHT = 128
#: Images are decoded at most this large (pixels, longest side) for thumbnails, and skeletons are
#: drawn at most this high: memory stays small whatever the image size.
_THUMB_MAX_SIDE = 512
#: Most rejected input images listed by name in the report.
_MAX_INPUT_ROWS = 200


def sample_rows(synthetic: pd.DataFrame, rows: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Pick at most ``rows`` rows, kept and rejected both represented, deterministically.

    Half of ``rows`` goes to each side; a side with fewer rows gives the rest to the other. Within a
    side, rows are ranked by a stable hash of ``(seed, source, k)`` (the same rows in every run).

    Args:
        synthetic: manifest rows of generated images (``source``, ``k``, ``kept``).
        rows: the cap (>= 0).
        seed: the run seed.

    Returns:
        ``(kept, rejected)`` DataFrames, each sorted by ``(source, k)``.
    """
    kept = synthetic[synthetic["kept"].astype(bool)]
    rej = synthetic[~synthetic["kept"].astype(bool)]
    half = rows // 2
    n_kept = min(len(kept), max(half, rows - len(rej)))
    n_rej = min(len(rej), rows - n_kept)

    def pick(df: pd.DataFrame, n: int) -> pd.DataFrame:
        if n <= 0 or not len(df):
            return df.iloc[:0]
        rank = [stable_seed(seed, "report", s, int(k)) for s, k in zip(df["source"], df["k"])]
        chosen = df.assign(_rank=rank).sort_values("_rank").head(n)
        return chosen.drop(columns="_rank").sort_values(["source", "k"])

    return pick(kept, n_kept), pick(rej, n_rej)


def skeleton_image(keypoints: np.ndarray, size: tuple[int, int], min_score: float = 0.5) -> np.ndarray:
    """The COCO-17 skeleton of a pose drawn on a black canvas (limbs coloured, joints white).

    Args:
        keypoints: ``float32 [17, 3]`` COCO-17 ``(x, y, score)`` in pixels of an image of ``size``.
        size: ``(width, height)`` of the canvas in pixels.
        min_score: joints below this score (and their limbs) are not drawn.

    Returns:
        ``uint8 [height, width, 3]`` RGB, drawn with :func:`posegen.repose.render.render_pose` and
        :func:`~posegen.repose.render.pose_to_rgb` (the model's own conditioning renderer), with a
        joint sigma and limb width proportional to the height.
    """
    from ..repose.render import pose_to_rgb, render_pose

    w, h = int(size[0]), int(size[1])
    sigma = max(1.0, h / 100.0)
    maps = render_pose(np.asarray(keypoints, dtype=np.float32), (w, h), (h, w), sigma, max(0.75, h / 160.0), min_score)
    return pose_to_rgb(maps)


def _thumb(image: np.ndarray, path: Path) -> None:
    img = Image.fromarray(np.asarray(image, dtype=np.uint8))
    w, h = img.size
    tw = max(1, round(w * _THUMB_HEIGHT / max(h, 1)))
    atomic_save_image(img.convert("RGB").resize((tw, _THUMB_HEIGHT), Image.BICUBIC), path)


def _bad_inputs_section(bad: pd.DataFrame) -> str:
    """HTML listing the real input images that could not be used (path and reason), or ``""``."""
    if not len(bad):
        return ""
    rows = "".join(
        f"<tr><td>{html.escape(str(p))}</td><td>{html.escape(str(r))}</td></tr>"
        for p, r in zip(bad["source"].head(_MAX_INPUT_ROWS), bad["reason"].head(_MAX_INPUT_ROWS))
    )
    more = f'<p class="muted">… and {len(bad) - _MAX_INPUT_ROWS} more (see manifest.parquet)</p>' if len(bad) > _MAX_INPUT_ROWS else ""
    return (
        f"<h2>Rejected input images: {len(bad)}</h2>"
        '<p class="muted">Real images of DIR that could not be read; not copied into OUT, never re-posed.</p>'
        f"<table><tr><th>image</th><th>reason</th></tr>{rows}</table>{more}"
    )


def _key(*parts) -> str:
    return hashlib.blake2b(repr(parts).encode(), digest_size=8).hexdigest()


def _fmt(v, digits: int = 2) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "—"
    return "—" if not np.isfinite(f) else f"{f:.{digits}f}"


_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; }
th { background: #f2f2f2; text-align: left; }
table.sheet td.img { padding: 2px; text-align: center; background: #fafafa; }
table.sheet img { height: 128px; image-rendering: auto; }
.kept { color: #2e7d32; font-weight: 600; } .rejected { color: #c62828; font-weight: 600; }
.scores { font-family: ui-monospace, monospace; font-size: 0.85em; white-space: nowrap; }
.muted { color: #777; font-size: 0.9em; } .note { background: #fff8e1; padding: 0.5em 0.8em; border-left: 4px solid #f9a825; }
img.plot { max-width: 100%; border: 1px solid #ddd; }
"""


def write_report(
    out_dir: str | os.PathLike,
    manifest: pd.DataFrame,
    recipe,
    *,
    prior_threshold: float | None = None,
    rows: int = 200,
    seed: int = 0,
    notes=(),
    title: str | None = None,
    place_target=None,
) -> Path:
    """Write ``OUT/report.html`` and the score plot ``OUT/.posegen/report/scores.png`` for an augment output folder.

    Args:
        out_dir: the augment output folder OUT (with the real images copied in, the synthetic and
            rejected images, and ``.posegen/poses.parquet``, the pose bank giving target poses).
        manifest: its manifest (:data:`posegen.augment.MANIFEST_COLUMNS`; ``path`` and ``source``
            relative to OUT, where the real source images were copied).
        recipe: the :class:`posegen.recipe.Recipe` whose filter thresholds are shown.
        prior_threshold: the prior energy threshold the targets were checked with (None: prior off).
        rows: most image rows in the contact sheet (split between kept and rejected, see
            :func:`sample_rows`); the summary counts all rows.
        seed: seed of the deterministic row sample.
        notes: lines shown at the top (e.g. identity checks skipped).
        title: page title (default: the folder's name).
        place_target: ``place_target(source_kp, target_kp) -> float [17, 3]``, both COCO-17
            ``(x, y, score)`` ``float32 [17, 3]`` (the source in its own image's pixels, the target in
            its bank image's): the pose the model was asked for, in source pixels (``augment`` passes
            :func:`posegen.augment.placed_target` with the default model, which places the target on
            the source person and moves its limbs back within the limb-motion limits). The target
            column then shows that pose; None: the bank pose, scaled to the output's size.

    Returns:
        The path of ``report.html``. Thumbnails are written under ``OUT/.posegen/report/``; the ones
        no longer referenced are removed. A row whose image or pose is missing shows a dash. Real
        input images that could not be used (``kept`` False) are listed with their reason.
        Images are decoded downscaled and skeletons drawn at thumbnail scale, so memory stays
        bounded for huge images.
    """
    out = Path(out_dir)
    thumbs = out / THUMB_DIR
    thumbs.mkdir(parents=True, exist_ok=True)
    syn_all = manifest[manifest["synthetic"].astype(bool)]
    syn = syn_all[syn_all["k"] > 0]
    kept_rows, rej_rows = sample_rows(syn, rows, seed)

    plot_scores(manifest, recipe, out / PLOT_NAME, prior_threshold=prior_threshold)

    bank_file = out / ".posegen" / "poses.parquet"
    bank = read_poses(bank_file).set_index("path") if bank_file.exists() else None
    min_score = recipe.pose.min_score
    used: set[str] = set()

    def img_cell(name: str, make) -> str:
        f = thumbs / name
        if not f.exists():
            try:
                _thumb(make(), f)
            except Exception:  # noqa: BLE001 - a missing or broken image shows a dash
                return '<td class="img">—</td>'
        used.add(name)
        return f'<td class="img"><img src="{html.escape(f"{THUMB_DIR}/{name}")}" alt=""></td>'

    def source_cell(src: str) -> str:
        return img_cell(f"src-{_key(src)}.png", lambda: read_image(out / src, max_side=_THUMB_MAX_SIDE))

    def pose_cell(r) -> str:
        tgt, src = r["target_pose_source"], r["source"]
        if bank is None or not tgt or tgt not in bank.index:
            return '<td class="img">—</td>'
        if r["width"] > 0:
            w, h = int(r["width"]), int(r["height"])
        elif src in bank.index:  # not generated: the canvas the output would have had
            w, h = int(bank.loc[src, "width"]), int(bank.loc[src, "height"])
        else:
            return '<td class="img">—</td>'
        tsize = (int(bank.loc[tgt, "width"]), int(bank.loc[tgt, "height"]))
        kp = np.asarray(bank.loc[tgt, "keypoints"], np.float32).reshape(17, 3)
        key = _key(tgt, w, h)
        if place_target is not None:  # the pose the model was asked for, in the source's pixels
            if src not in bank.index:
                return '<td class="img">—</td>'
            kp = np.asarray(place_target(np.asarray(bank.loc[src, "keypoints"], np.float32).reshape(17, 3), kp), np.float32)
            tsize = (int(bank.loc[src, "width"]), int(bank.loc[src, "height"]))
            key = _key(tgt, src, np.round(kp, 1).tobytes(), w, h)  # a new placement draws anew
        if h > _THUMB_MAX_SIDE:  # draw the skeleton at thumbnail scale: memory grows with its area
            w, h = max(1, round(w * _THUMB_MAX_SIDE / h)), _THUMB_MAX_SIDE
        kp = scale_keypoints(kp, tsize, (w, h))
        return img_cell(f"pose-{key}.png", lambda: skeleton_image(kp, (w, h), min_score))

    def out_cell(r) -> str:
        if not r["path"]:
            return '<td class="img muted">not generated</td>'
        p = out / r["path"]
        return img_cell(
            f"out-{_key(r['path'], p.stat().st_mtime_ns if p.exists() else 0)}.png", lambda: read_image(p, max_side=_THUMB_MAX_SIDE)
        )

    def scores_cell(r) -> str:
        decision = '<span class="kept">kept</span>' if r["kept"] else f'<span class="rejected">{html.escape(str(r["reason"]))}</span>'
        lines = [
            f"OKS {_fmt(r['oks'])} &nbsp; PCKh {_fmt(r['pck'])}",
            f"identity {_fmt(r['identity_sim'])} &nbsp; others {_fmt(r['identity_sim_others'])}",
            f"SSIM to source {_fmt(r['source_ssim'])} &nbsp; (pose OKS {_fmt(r['source_pose_oks'])})",
            f"prior energy {_fmt(r['prior_energy'])}",
        ]
        meta = f"{html.escape(str(r['source']))} → k={int(r['k'])}<br>target pose: {html.escape(str(r['target_pose_source']))}"
        return f'<td>{decision}<div class="scores">{"<br>".join(lines)}</div><div class="muted">{meta}</div></td>'

    def section(name: str, df: pd.DataFrame, total: int) -> str:
        head = f"<h2>{name}: {len(df)} shown of {total}</h2>"
        if not len(df):
            return head + '<p class="muted">none</p>'
        body = "".join(
            f"<tr>{source_cell(r['source'])}{pose_cell(r)}{out_cell(r)}{scores_cell(r)}</tr>" for _, r in df.iterrows()
        )
        return head + '<table class="sheet"><tr><th>source</th><th>target pose</th><th>output</th><th>scores</th></tr>' + body + "</table>"

    real_all = manifest[~manifest["synthetic"].astype(bool)]
    bad_inputs = real_all[~real_all["kept"].astype(bool)].sort_values("path")
    n_kept = int(syn_all["kept"].astype(bool).sum())
    n_rej_total = int((~syn_all["kept"].astype(bool)).sum())
    reasons = syn_all.loc[~syn_all["kept"].astype(bool), "reason"].map(reason_kind).value_counts()
    f = recipe.filter
    thresholds = [
        ("OKS(target, re-estimated) ≥" + (" (or to the target with left and right exchanged)" if getattr(f, "mirror_oks", False) else ""), f.min_oks),
        ("pixel std ≥", f.min_std),
        ("identity: cosine to source ≥", f.min_identity), ("identity: mean cosine to other images ≥", f.min_identity_others),
        ("SSIM to source <", f.max_source_ssim), ("… when OKS(source pose, target pose) <", f.copy_pose_oks),
        ("prior energy of target ≤", "off" if prior_threshold is None else f"{prior_threshold:g}"),
    ]  # fmt: skip
    parts = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>{html.escape(title or out.name)} — posegen report</title><style>{_CSS}</style></head><body>",
        f"<h1>posegen augment report: {html.escape(title or out.name)}</h1>",
        "".join(f'<p class="note">{html.escape(str(n))}</p>' for n in notes),
        "<table><tr><th>real images</th><th>rejected input images</th><th>generated</th><th>kept</th><th>rejected</th></tr>",
        f"<tr><td>{len(real_all) - len(bad_inputs)}</td><td>{len(bad_inputs)}</td><td>{len(syn)}</td><td>{n_kept}</td><td>{n_rej_total}</td></tr></table>",
        _bad_inputs_section(bad_inputs),
        "<h2>Thresholds</h2><table>",
        "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in thresholds),
        "</table><h2>Rejected, by reason</h2><table><tr><th>reason</th><th>images</th></tr>",
        "".join(f"<tr><td>{html.escape(str(r))}</td><td>{int(n)}</td></tr>" for r, n in reasons.items()) or "<tr><td>none</td><td>0</td></tr>",
        "</table>",
        f'<h2>Score distributions</h2><p><img class="plot" src="{PLOT_NAME}" alt="score histograms"></p>',
        section("Kept", kept_rows, int(syn["kept"].astype(bool).sum())),
        section("Rejected", rej_rows, int((~syn["kept"].astype(bool)).sum())),
        '<p class="muted">Written by posegen. Scores: see posegen.filter.scores for definitions and the order of checks.</p>',
        "</body></html>\n",
    ]
    path = atomic_write_text(out / REPORT_NAME, "".join(parts))
    plot = (out / PLOT_NAME).name
    for f_ in thumbs.iterdir():  # drop thumbnails of rows no longer shown
        if f_.is_file() and f_.name not in used and f_.name != plot:
            f_.unlink(missing_ok=True)
    return path
