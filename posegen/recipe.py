"""Recipes: one validated YAML file per dataset/scale that fixes every knob of a run.

A recipe has six sections, each a pydantic model that forbids unknown fields, so a misspelt or
wrong field is a clear error naming it (``train.stepz: Extra inputs are not permitted``):

- ``model``   — the re-posing network's architecture (:class:`ModelConfig`).
- ``train``   — DDPM training (:class:`TrainConfig`).
- ``sample``  — the sampler used by ``repose`` / ``augment`` (:class:`SampleConfig`).
- ``pose``    — keypoint confidence thresholds (:class:`PoseConfig`).
- ``filter``  — the quality filter's thresholds (:class:`FilterConfig`).
- ``augment`` — how many target poses per source image and how they are chosen (:class:`AugmentConfig`).
- ``latent``  — optional: the default model family (warp + latent diffusion repair,
  :class:`LatentConfig`); when present, ``posegen train`` trains that model.

Built-in recipes live in the repository's ``recipes/`` folder (installed as ``posegen.recipes``) and
are found by name (``tiny``, ``cuhk03``); any other value is read as a path to a YAML file.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = [
    "Recipe",
    "RecipeError",
    "ModelConfig",
    "TrainConfig",
    "SampleConfig",
    "PoseConfig",
    "FilterConfig",
    "AugmentConfig",
    "LatentConfig",
    "load_recipe",
    "builtin_recipes",
]


class RecipeError(ValueError):
    """A recipe file is missing, is not YAML, or has a wrong field (the message names it)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


class ConditioningConfig(_Strict):
    """Which conditioning paths the re-posing model has (all False = concatenation only).

    See :mod:`posegen.repose.model`: ``texture_attention`` = texture encoder tokens + cross-attention
    (PIDM), ``pose_aligned`` = keypoint flow + learned coarse-to-fine refinement of warped texture
    features (RePoseDM), ``focal_tokens`` = face / upper / lower body region tokens (MCLD). Each can
    be switched off alone for an ablation at equal training budget.
    """

    texture_attention: bool = False
    pose_aligned: bool = False
    focal_tokens: bool = False


class ModelConfig(_Strict):
    """Architecture of the pose-conditioned denoising UNet (diffusers ``UNet2DModel`` blocks, or
    ``UNet2DConditionModel`` when any ``conditioning`` path is on).

    ``resolution`` is ``(height, width)`` in pixels of the generated image; it must be divisible
    by ``2 ** (len(block_out_channels) - 1)``. ``attention_levels`` picks the self-attention levels
    of the concatenation model, or the cross-attention levels (and the texture-token levels) of
    the conditioned one.
    """

    resolution: tuple[int, int] = (128, 64)
    block_out_channels: tuple[int, ...] = (64, 128, 256, 256)
    layers_per_block: int = Field(2, ge=1)
    attention_levels: tuple[bool, ...] = (False, False, True, True)
    norm_num_groups: int = Field(16, ge=1)
    pose_sigma: float = Field(
        1.5, gt=0, description="Gaussian heatmap std, in pixels at the model's resolution"
    )
    limb_width: float = Field(1.0, gt=0, description="limb map half-width, pixels at model resolution")
    conditioning: ConditioningConfig = ConditioningConfig()
    cross_attention_dim: int = Field(64, ge=1, description="width of the cross-attention tokens")
    attention_head_dim: int = Field(8, ge=1, description="channels per attention head")
    texture_channels: tuple[int, ...] | None = Field(
        None, description="texture encoder channels per level (None: block_out_channels)"
    )
    focal_size: tuple[int, int] = Field((16, 16), description="(height, width) of the focal region crops, px")
    focal_tokens_per_region: int = Field(4, ge=1, description="tokens per focal region (a perfect square)")

    @field_validator("attention_levels")
    @classmethod
    def _attn_len(cls, v, info):
        boc = info.data.get("block_out_channels")
        if boc is not None and len(v) != len(boc):
            raise ValueError(f"needs one entry per block ({len(boc)}), got {len(v)}")
        return v

    @field_validator("texture_channels")
    @classmethod
    def _tex_len(cls, v, info):
        boc = info.data.get("block_out_channels")
        if v is not None and boc is not None and len(v) != len(boc):
            raise ValueError(f"needs one entry per block ({len(boc)}), got {len(v)}")
        return v

    @field_validator("focal_tokens_per_region")
    @classmethod
    def _square(cls, v):
        if round(v**0.5) ** 2 != v:
            raise ValueError(f"must be a perfect square (1, 4, 9, ...), got {v}")
        return v

    @field_validator("resolution")
    @classmethod
    def _res_positive(cls, v):
        if min(v) < 8:
            raise ValueError(f"resolution (height, width) must be at least 8x8, got {v}")
        return v


class TrainConfig(_Strict):
    """DDPM training of the re-posing model on (source, target) pairs of the same pid."""

    steps: int = Field(2000, ge=1)
    batch_size: int = Field(16, ge=1)
    learning_rate: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(100, ge=0)
    num_train_timesteps: int = Field(1000, ge=10)
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "squaredcos_cap_v2"
    prediction_type: Literal["epsilon", "v_prediction", "sample"] = Field(
        "epsilon",
        description="what the UNet predicts: the noise (DDPM), v (Salimans & Ho 2022) or the clean image x0",
    )
    flip_prob: float = Field(0.5, ge=0, le=1, description="horizontal flip with left/right swap")
    max_grad_norm: float = Field(1.0, gt=0, description="gradient clipping (global L2 norm)")
    checkpoint_every: int = Field(500, ge=1)
    sample_every: int = Field(500, ge=1)
    log_every: int = Field(10, ge=1)
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    num_workers: int = Field(0, ge=0)
    seed: int = 0
    pose_dropout: float = Field(
        0.0, ge=0, lt=1, description="probability of dropping the pose conditions of a sample (for guidance)"
    )
    appearance_dropout: float = Field(
        0.0, ge=0, lt=1, description="probability of dropping the appearance conditions (independent of pose)"
    )
    ema_decay: float = Field(
        0.0, ge=0, lt=1, description="EMA of the weights (diffusers EMAModel); 0 = off; model/ holds the EMA"
    )


class SampleConfig(_Strict):
    """Sampler used at generation time; ``scheduler`` is a name known to ``posegen.repose``."""

    scheduler: str = "ddim"
    steps: int = Field(20, ge=1)
    batch_size: int = Field(16, ge=1)
    pose_guidance: float = Field(
        1.0, description="disentangled classifier-free guidance scale of the pose (1.0 = off)"
    )
    appearance_guidance: float = Field(
        1.0, description="disentangled classifier-free guidance scale of the appearance (1.0 = off)"
    )
    prior_guidance: float = Field(
        0.0, ge=0, description="pose-prior gradient guidance step (RePoseDM; 0.0 = off)"
    )
    strength: float = Field(
        0.4, gt=0, le=1, description="latent model only: SDEdit strength (0 = the warp, 1 = pure noise)"
    )
    start: Literal["pixel", "latent"] = Field(
        "pixel", description="latent model only: SDEdit starts from the encoded pixel warp or the latent warp"
    )
    repair_only: bool = Field(
        True, description="latent model only: keep the warp's real pixels; use the model only where the warp invented pixels"
    )
    repair_strength: float | None = Field(
        None, gt=0, le=1,
        description="latent model only: SDEdit strength where the warp invented pixels (regenerated); null = strength everywhere",
    )
    turned_head: bool = Field(
        False,
        description="latent model only: with repair_strength above strength, also repaint the head of a person who "
        "turns round (front onto back or the reverse; the warp has only the other side of the head)",
    )
    person_masks: bool = Field(
        False,
        description="latent model only: remove what the source person carries or wears beyond the skeleton (a bag, loose "
        "clothes; BlazePose's person mask) near the moved parts along with the body, so that no second copy stays behind",
    )


class PoseConfig(_Strict):
    """Keypoint confidence thresholds."""

    min_score: float = Field(0.5, ge=0, le=1, description="a joint counts as present at this score")
    min_keypoints: int = Field(
        8, ge=1, le=17, description="a pose with fewer present joints is not used as source/target"
    )


class FilterConfig(_Strict):
    """Quality filter (version 2) of generated images: sanity, pose fidelity, identity, near-copies.

    The checks and the order in which the first failing one names the rejection are documented in
    :mod:`posegen.filter.scores`. Similarities are cosines of L2-normalised re-ID embeddings in
    ``[-1, 1]``; SSIM is on ``[0, 1]`` images; OKS is COCO's with the target's keypoint box as area.

    Defaults are for 128x64 outputs, measured with OSNet x0.25 (MSMT17) on 578 real CUHK03 train
    images of 60 pids, each downscaled to 128x64 and back (``benchmarks``-style numbers in
    ``posegen.filter.scores``): ``min_identity`` and ``min_identity_others`` are the 10th percentiles
    of the same-pid similarities (so 90% of real same-pid images would pass); ``max_source_ssim``
    lies between real different images of one person (99th percentile 0.28-0.37) and copies of the
    source (1st percentile 0.97); ``copy_pose_oks`` is exceeded by 0.5% of random pose pairs.
    """

    min_oks: float = Field(0.5, ge=0, le=1, description="OKS(target, re-estimated) needed to keep")
    mirror_oks: bool = Field(
        False,
        description="pose fidelity: the larger of the OKS to the target and to the target with left and right "
        "exchanged must reach min_oks (seen from behind or side-on, the estimator often swaps them)",
    )
    min_std: float = Field(
        0.02, ge=0, description="an output whose pixel std (0..1 scale) is below this is 'blank'"
    )
    min_identity: float = Field(
        0.63, ge=-1, le=1, description="cosine(re-ID embedding of output, of its source) needed to keep"
    )
    min_identity_others: float = Field(
        0.68,
        ge=-1,
        le=1,
        description="mean cosine to the pid's other real train images needed to keep (skipped when none)",
    )
    max_source_ssim: float = Field(
        0.7,
        ge=0,
        le=1,
        description="SSIM(output, source) at the model's resolution at or above which the output is a near-copy",
    )
    copy_pose_oks: float = Field(
        0.8,
        ge=0,
        le=1,
        description="the near-copy check applies when OKS(source pose, target pose) in the model frame is below this",
    )
    reid_weights: str | None = Field(
        None,
        description="re-ID embedder (OSNet ONNX file) for the identity checks, or 'colour-histogram' for the "
        "garment-colour embedder (posegen.filter.garment, fashion); None skips them (scores NaN)",
    )
    # Image-artifact checks (posegen.filter.artifacts, scored at 256x128 against the source).
    # Calibrated by benchmarks/filter_thresholds.py (results in benchmarks/results/filter_thresholds.md)
    # on real CUHK03 train crops scored against another real image of the same person (must pass)
    # and on warp-damaged real pairs (limb_flow + warp, no compositing: black holes, torn cross-view
    # warps). None disables a check (its score is still computed and stored).
    max_hole_fraction: float | None = Field(
        0.01,
        ge=0,
        le=1,
        description="share of near-black flat pixels in the person box, beyond the source's, above which "
        "the output has holes (real images: none at all)",
    )
    max_seam_fraction: float | None = Field(
        None,
        ge=-1,
        le=1,
        description="share of body pixels with edges stronger than the source's 99th percentile, beyond the "
        "source's, above which the output is torn (off by default: it did not separate warp damage from real images)",
    )
    min_sharpness_ratio: float | None = Field(
        0.77,
        ge=0,
        description="fine detail per unit of edge energy on the body relative to the source's, below which "
        "the output is smeared (about the 1st percentile of real same-person images)",
    )
    max_foreign_fraction: float | None = Field(
        None,
        ge=0,
        le=1,
        description="share of the target's body whose limb warp copies another body part of the source "
        "(ghost limbs; predicted from the two poses, posegen.filter.artifacts), above which the output is rejected; "
        "None = off",
    )
    max_invented_fraction: float | None = Field(
        None,
        ge=0,
        le=1,
        description="share of the frame the default model's warp has no source pixel for (a blurred fill: grey "
        "blobs, smeared legs; predicted from the source image and the two poses, posegen.filter.artifacts), above "
        "which the output is rejected; None = off",
    )


class AugmentConfig(_Strict):
    """How many synthetic images per source image and how target poses are drawn."""

    k: int = Field(4, ge=1, description="target poses (generated images) per source image")
    target_from_other_pids: bool = Field(
        True, description="draw target poses from other identities' images (else any other image)"
    )
    use_prior: bool = Field(
        True, description="skip target poses the pose-validity prior finds implausible, before generating"
    )
    prior_threshold: float | None = Field(
        None, description="prior energy above which a target pose is implausible; None = the prior's calibrated one"
    )
    match_view: bool = Field(
        False, description="prefer target poses seen from the source's view (facing, torso aspect)"
    )
    view_tolerance: float = Field(0.15, ge=0, description="torso-aspect tolerance of a view match")
    align_targets: bool = Field(
        True, description="latent model: place each target pose on the source person (translation + scale)"
    )
    target_pose_oks: tuple[float, float] | None = Field(
        None, description="(lo, hi): prefer targets whose pose, placed on the source, has lo <= OKS(target, source) < hi"
    )
    plausible_only: bool = Field(
        False, description="sources and targets must pass posegen.pose.plausibility (upright-crop geometry)"
    )
    avoid_hands_onto_torso: bool = Field(
        False,
        description="latent model, with target_pose_oks: put targets that hold more wrists over the torso than the source "
        "(a forearm moved onto the chest comes out as a slab) after the others",
    )
    max_arm_motion: float | None = Field(
        None,
        gt=0,
        description="latent model, with target_pose_oks: among the targets the warp can honour, prefer those that move "
        "no elbow or wrist farther than this (source torso lengths, posegen.pose.keypoints.joint_motion); null = no limit",
    )
    max_leg_motion: float | None = Field(
        None,
        gt=0,
        description="the same preference for the knees and ankles (with max_arm_motion: both limits); null = no limit",
    )
    limit_limb_motion: bool = Field(
        False,
        description="latent model, with align_targets: turn each limb of the placed target back toward the source's "
        "(bone lengths kept) until it moves at most max_arm_motion / max_leg_motion (posegen.pose.keypoints.limit_limb_motion)",
    )
    honour_invented_fraction: float | None = Field(
        None,
        ge=0,
        le=1,
        description="latent model, with target_pose_oks: the target choice's limit on the warp's predicted invented share "
        "(the honour check); stricter than filter.max_invented_fraction, it steers the choice to targets the warp "
        "honours with a margin while the filter still rejects only clear failures; null = the filter's",
    )
    honour_foreign_fraction: float | None = Field(
        None,
        ge=0,
        le=1,
        description="the same for the predicted foreign-part share (filter.max_foreign_fraction); null = the filter's",
    )
    pose_bank_size: int | None = Field(
        None,
        ge=1,
        description="with --limit (a trial on the first images), target poses are drawn from at least this many images: "
        "the sources and the next images of the chosen splits (their poses are estimated, they are neither re-posed "
        "nor copied); more candidate poses let more sources find targets that move the limbs little. null = the "
        "sources only",
    )


class LatentConfig(_Strict):
    """posegen's default model family: constrained warp + latent diffusion repair (TAEF2 latents).

    Present in a recipe = ``posegen train`` trains this model (``model``/``train`` are ignored).
    """

    autoencoder: str | None = Field(
        None, description="folder with taef2_encoder.pth / taef2_decoder.pth; null = ../shared/weights/taef2 or $POSEGEN_TAEF2_DIR"
    )
    steps: int = Field(4000, ge=1)
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(2e-4, gt=0)
    warmup_steps: int = Field(100, ge=0)
    strength_max: float = Field(0.6, gt=0, le=1, description="training timesteps t < strength_max * T")
    same_view_weight: float = Field(0.85, ge=0, le=1, description="share of same-camera pairs per batch")
    ema_decay: float = Field(0.999, ge=0, lt=1)
    checkpoint_every: int = Field(200, ge=1)
    block_out_channels: list[int] = Field(default_factory=lambda: [64, 128, 128])
    layers_per_block: int = Field(1, ge=1)
    attention: bool = True
    min_keypoints: int = Field(10, ge=1, description="joints with score >= pose.min_score a training pose needs")
    seed: int = 0
    repair_loss_weight: float = Field(
        0.0, ge=0, description="extra loss weight where the warp invents pixels (1 + w * mask); 0 = plain MSE"
    )
    init_from: str | None = Field(None, description="model folder whose unet initialises training (fine-tuning); 'default' = the shipped model; null = random")


class Recipe(_Strict):
    """A complete, validated recipe. ``name`` is informative only."""

    name: str = "custom"
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    sample: SampleConfig = SampleConfig()
    pose: PoseConfig = PoseConfig()
    filter: FilterConfig = FilterConfig()
    augment: AugmentConfig = AugmentConfig()
    latent: LatentConfig | None = None

    @field_validator("model")
    @classmethod
    def _divisible(cls, m: ModelConfig):
        f = 2 ** (len(m.block_out_channels) - 1)
        h, w = m.resolution
        if h % f or w % f:
            raise ValueError(
                f"resolution {h}x{w} must be divisible by {f} (2 ** (number of blocks - 1))"
            )
        return m


def builtin_recipes() -> dict[str, Path]:
    """Names and paths of the recipes shipped with posegen (``recipes/*.yaml``)."""
    root = resources.files("posegen.recipes")
    return {
        Path(str(p)).stem: Path(str(p))
        for p in root.iterdir()
        if str(p).endswith((".yaml", ".yml"))
    }


def load_recipe(name_or_path: str | Path | None = None) -> Recipe:
    """Load and validate a recipe.

    Args:
        name_or_path: a built-in recipe name (see :func:`builtin_recipes`), a path to a YAML file,
            or None for the ``tiny`` recipe.

    Returns:
        The validated :class:`Recipe`.

    Raises:
        RecipeError: unknown name / missing file / invalid YAML / a wrong field (named in the
            message, e.g. ``train.stepz: Extra inputs are not permitted``).
    """
    name_or_path = "tiny" if name_or_path is None else name_or_path
    builtins = builtin_recipes()
    path = builtins.get(str(name_or_path)) if not str(name_or_path).endswith((".yaml", ".yml")) else None
    if path is None:
        path = Path(name_or_path)
        if not path.is_file():
            raise RecipeError(
                f"recipe not found: {name_or_path!s} (not a file; built-in recipes: {sorted(builtins)})"
            )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise RecipeError(f"recipe {path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise RecipeError(f"recipe {path} must be a mapping of sections, got {type(data).__name__}")
    data.setdefault("name", path.stem)
    try:
        return Recipe.model_validate(data)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"])
            lines.append(f"  {loc}: {err['msg']}")
        raise RecipeError(f"invalid recipe {path}:\n" + "\n".join(lines)) from None
