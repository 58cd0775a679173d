"""Sampling: re-pose source images to target poses with a trained :class:`ReposeUNet`,
optionally with disentangled classifier-free guidance and prior gradient guidance.

:class:`ReposePipeline` is a diffusers ``DiffusionPipeline`` with two components, ``unet``
(:class:`~posegen.repose.model.ReposeUNet`) and ``scheduler`` (any sampler of
:mod:`posegen.repose.schedulers`). The reverse process starts from Gaussian noise and applies the
scheduler's update rule with the network conditioned on the source image and the source/target pose
maps (pose-guided diffusion with source conditioning, after PIDM, Bhunia et al. 2023; samplers DDIM,
Song et al. 2021, or DPM-Solver++, Lu et al. 2022, ...).

A saved pipeline is a folder ``model_index.json`` + ``unet/`` + ``scheduler/``; ``model_index.json``
names the unet class by its importable module (``["posegen.repose.model", "ReposeUNet"]``), so
``ReposePipeline.from_pretrained(folder)`` works offline with nothing but posegen installed.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import logging as dlogging
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from .model import ReposeUNet
from .render import images_to_tensor, render_poses_tensor, tensor_to_uint8
from .schedulers import make_scheduler

__all__ = ["ReposePipeline", "load_pipeline", "default_model_dir"]


def default_model_dir() -> Path:
    """The default re-posing model shipped inside the package (``posegen/repose/default_model``:
    a :class:`~posegen.repose.latent_pipeline.LatentReposePipeline`, see its ``README.md``)."""
    return Path(__file__).resolve().parent / "default_model"


def _check_local_pipeline(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"re-posing model folder not found: {p}")
    if not (p / "model_index.json").is_file():
        raise FileNotFoundError(
            f"not a saved ReposePipeline (missing {p / 'model_index.json'}); "
            "train one with `posegen train` or point to its model/ folder"
        )
    for sub in ("unet", "scheduler"):
        if not (p / sub).is_dir():
            raise FileNotFoundError(f"saved ReposePipeline is incomplete: missing folder {p / sub}")
    return p


def _sizes(sizes, n: int, what: str) -> np.ndarray:
    arr = np.asarray(sizes, dtype=np.float64)
    if arr.shape == (2,):
        arr = np.broadcast_to(arr, (n, 2)).copy()
    if arr.shape != (n, 2):
        raise ValueError(f"{what} must be one (width, height) or one per sample [{n}, 2], got shape {arr.shape}")
    if (arr <= 0).any():
        raise ValueError(f"{what} must be positive (width, height) pairs")
    return arr


def check_repose_inputs(source_images, source_keypoints, target_keypoints):
    """Validate a re-posing batch (shared by both pipelines).

    Args:
        source_images: ``B`` images ``uint8 [H_i, W_i, 3]`` (a list, or a ``[B, H, W, 3]`` array).
        source_keypoints, target_keypoints: ``[B, 17, 3]`` COCO-17 ``(x, y, score)``.

    Returns:
        ``(images list, source keypoints float32 [B, 17, 3], target keypoints float32 [B, 17, 3])``.

    Raises:
        ValueError: no images, a non-RGB-uint8 image, or keypoints not ``[B, 17, 3]``.
    """
    if isinstance(source_images, np.ndarray) and source_images.ndim == 4:
        source_images = list(source_images)
    images = [np.asarray(im) for im in source_images]
    b = len(images)
    if b == 0:
        raise ValueError("no source images given")
    for i, im in enumerate(images):
        if im.ndim != 3 or im.shape[2] != 3 or im.dtype != np.uint8:
            raise ValueError(f"source image {i} must be uint8 [H, W, 3] RGB, got {im.dtype} {im.shape}")
    src_kp = np.asarray(source_keypoints, dtype=np.float32)
    tgt_kp = np.asarray(target_keypoints, dtype=np.float32)
    for name, kp in (("source_keypoints", src_kp), ("target_keypoints", tgt_kp)):
        if kp.shape != (b, 17, 3):
            raise ValueError(f"{name} must be [{b}, 17, 3] (one COCO-17 pose per image), got {kp.shape}")
    return images, src_kp, tgt_kp


class ReposePipeline(DiffusionPipeline):
    """Generate a source person in target poses.

    Components:
        unet: :class:`~posegen.repose.model.ReposeUNet`.
        scheduler: a diffusers scheduler; switch with
            ``pipe.scheduler = make_scheduler("dpm++", pipe.scheduler.config)``.
    """

    model_cpu_offload_seq = "unet"

    def __init__(self, unet: ReposeUNet, scheduler):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)

    @property
    def resolution(self) -> tuple[int, int]:
        """Output ``(height, width)``, the model's resolution."""
        return self.unet.resolution

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> "ReposePipeline":
        """Load a saved pipeline from a **local** folder (never downloads).

        Raises:
            FileNotFoundError: the folder, its ``model_index.json``, ``unet/`` or ``scheduler/`` is
                missing (the message names the path).
        """
        path = _check_local_pipeline(pretrained_model_name_or_path)
        kwargs.setdefault("local_files_only", True)
        bar_was_on = dlogging.is_progress_bar_enabled()
        dlogging.disable_progress_bar()  # the library never prints; diffusers would draw a tqdm bar
        try:
            pipe = super().from_pretrained(str(path), **kwargs)
        finally:
            if bar_was_on:
                dlogging.enable_progress_bar()
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def pose_maps(self, keypoints, image_sizes) -> torch.Tensor:
        """Pose conditioning ``float32 [B, 36, h, w]`` on the unet's device, rendered with the
        unet's own ``pose_sigma`` / ``limb_width`` / ``min_score`` (see :func:`render_pose`).

        Args:
            keypoints: ``[B, 17, 3]`` COCO-17 in pixels of images of ``image_sizes`` ``(w, h)``.
        """
        cfg = self.unet.config
        return render_poses_tensor(
            keypoints,
            image_sizes,
            self.resolution,
            cfg.pose_sigma,
            cfg.limb_width,
            cfg.min_score,
            device=self.unet.device,
            dtype=self.unet.dtype,
        )

    def guided_prediction(
        self,
        model_in: torch.Tensor,
        t,
        cond: dict,
        pose_guidance_scale: float = 1.0,
        appearance_guidance_scale: float = 1.0,
    ) -> torch.Tensor:
        """The network's prediction with disentangled classifier-free guidance.

        With ``u = pred(no pose, no appearance)``, ``p = pred(pose, no appearance)`` and
        ``f = pred(pose, appearance)``::

            pred = u + w_pose * (p - u) + w_app * (f - p)
                 = (1 - w_pose) * u + (w_pose - w_app) * p + w_app * f

        This is the cascaded two-condition form of InstructPix2Pix (Brooks et al. 2023), over
        unconditional / pose-only / full predictions; PIDM (Bhunia et al. 2023) writes its
        disentangled guidance as ``u + w_p (pose-only - u) + w_s (style-only - u)`` with a
        style-only term instead. Guidance is linear, so it applies to whatever the network predicts
        (``eps``, ``v`` or ``x0``). At ``w_pose = w_app = 1`` it is just ``f``: one forward of ``B``.
        Otherwise the terms whose coefficient is not 0 are evaluated in ONE batched forward (``3B``
        in general; ``2B`` when ``w_pose == w_app``, the classic single-scale guidance, or when
        ``w_pose == 1``).

        Args:
            model_in: ``[B, 3, h, w]`` scaled noisy sample (``scheduler.scale_model_input``).
            t: the timestep.
            cond: keyword inputs of :meth:`ReposeUNet.forward`: ``source``, ``source_pose``,
                ``target_pose`` (``[B, ...]``), and ``source_keypoints``, ``target_keypoints``,
                ``flow`` (optional).
            pose_guidance_scale, appearance_guidance_scale: ``w_pose``, ``w_app``.

        Returns:
            ``[B, 3, h, w]`` guided prediction.
        """
        wp, wa = float(pose_guidance_scale), float(appearance_guidance_scale)
        if wp == 1.0 and wa == 1.0:
            return self.unet(model_in, t, **cond)
        b = model_in.shape[0]
        # (coefficient, drop_pose, drop_appearance) of u, p, f
        terms = [(1.0 - wp, True, True), (wp - wa, False, True), (wa, False, False)]
        terms = [tm for tm in terms if tm[0] != 0.0]
        n = len(terms)
        dev = model_in.device

        def rep(v):
            if v is None:
                return None
            if isinstance(v, (tuple, list)):
                return type(v)(rep(x) for x in v)
            return torch.cat([v] * n, dim=0)

        big = {k: rep(v) for k, v in cond.items()}
        drop_pose = torch.cat([torch.full((b,), tm[1], device=dev) for tm in terms])
        drop_app = torch.cat([torch.full((b,), tm[2], device=dev) for tm in terms])
        tt = t.expand(b).repeat(n) if torch.is_tensor(t) and t.ndim == 1 else t
        out = self.unet(rep(model_in), tt, drop_pose=drop_pose, drop_appearance=drop_app, **big)
        parts = out.chunk(n, dim=0)
        pred = terms[0][0] * parts[0]
        for (c, _, _), part in zip(terms[1:], parts[1:]):
            pred = pred + c * part
        return pred

    def _prior_step(self, pose_prior, keypoints: torch.Tensor, present: torch.Tensor, step_size: float) -> torch.Tensor:
        """One gradient step of the target keypoints down ``pose_prior.energy`` (present joints only).

        ``keypoints``: ``float32 [B, 17, 3]`` model-frame pixels. The displacement is
        ``-step_size * s^2 * grad_xy E`` with ``s`` the person's scale in pixels
        (:func:`posegen.repose.warp.person_scale`): for an energy normalised by the person's
        scale, ``E(x) = e(x / s)``, this moves joints by ``step_size * s * grad e``, so
        ``step_size`` is dimensionless and the same at any resolution.
        """
        from .warp import person_scale

        with torch.enable_grad():
            xy = keypoints[..., :2].detach().clone().requires_grad_(True)
            energy = pose_prior.energy(torch.cat([xy, keypoints[..., 2:].detach()], dim=-1))
            (grad,) = torch.autograd.grad(energy.sum(), xy)
        grad = torch.nan_to_num(grad.detach().float())
        s = person_scale(keypoints, self.resolution, min_score=float(self.unet.config.min_score))
        s = s.to(keypoints.device)[:, None, None]
        move = -float(step_size) * s * s * grad * present[..., None].float()
        out = keypoints.clone()
        out[..., :2] = out[..., :2] + move
        return out

    @torch.no_grad()
    def __call__(
        self,
        source_images: Sequence[np.ndarray],
        source_keypoints,
        target_keypoints,
        *,
        source_sizes=None,
        target_sizes,
        num_inference_steps: int = 20,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "np",
        eta: float = 0.0,
        pose_guidance_scale: float = 1.0,
        appearance_guidance_scale: float = 1.0,
        pose_prior=None,
        prior_guidance_scale: float = 0.0,
        return_keypoints: bool = False,
    ):
        """Re-pose each source image to its target pose.

        Args:
            source_images: ``B`` RGB images, each ``uint8 [H_i, W_i, 3]`` (any size; resized to the
                model's resolution with a plain bicubic resize), or a ``uint8 [B, H, W, 3]`` array.
            source_keypoints: ``[B, 17, 3]`` COCO-17 ``(x, y, score)`` in pixels of each source image.
            target_keypoints: ``[B, 17, 3]`` COCO-17 in pixels of an image of ``target_sizes[i]``.
            source_sizes: ``(width, height)`` the source keypoints refer to, one or ``[B, 2]``;
                default: each source image's own size.
            target_sizes: ``(width, height)`` the target keypoints refer to, one or ``[B, 2]``
                (e.g. the size of the image the target pose was taken from).
            num_inference_steps: sampler steps.
            generator: None (global RNG), one ``torch.Generator`` for the whole batch, or a list of
                ``B`` generators, one per sample: then sample ``i`` depends only on its own inputs
                and generator, not on the rest of the batch (up to float rounding).
            output_type: ``"np"`` -> ``uint8 [B, h, w, 3]``; ``"pil"`` -> list of ``PIL.Image``;
                ``"pt"`` -> ``float32 [B, 3, h, w]`` tensor in ``[-1, 1]`` (on the CPU).
            eta: DDIM stochasticity (ignored by other samplers); 0 = deterministic DDIM.
            pose_guidance_scale, appearance_guidance_scale: disentangled classifier-free guidance
                (:meth:`guided_prediction`); 1.0 and 1.0 = no guidance (one forward per step).
                Meaningful for models trained with condition dropout.
            pose_prior: an object with ``energy(keypoints float32 [B, 17, 3] (x, y, score) pixels)
                -> float32 [B]``, differentiable in ``(x, y)``, lower = more plausible (e.g.
                ``posegen.prior.PoseValidityPrior``); used when ``prior_guidance_scale > 0``.
            prior_guidance_scale: ``eta_prior >= 0``, prior gradient guidance after RePoseDM: before
                the network is called at timestep ``t``, the target keypoints' ``(x, y)`` (present
                joints only, model frame) take one step
                ``-eta_prior * (1 - alpha_bar_t) * s^2 * grad E`` (``s``: the person's scale in
                pixels, see :meth:`_prior_step`), so the pose moves most while the image is still
                noise and not at all at the end; the target pose maps and the flow are then
                re-rendered from the moved keypoints. 0 = off.
            return_keypoints: also return the target keypoints actually used (after prior
                guidance), ``float32 [B, 17, 3]`` in pixels of ``target_sizes`` (the input's frame).

        Returns:
            Images at the model's resolution ``(h, w)``, in the format of ``output_type``; with
            ``return_keypoints``, a tuple ``(images, keypoints)``.

        Raises:
            ValueError: inconsistent batch sizes or shapes, a generator list of the wrong length,
                an unknown ``output_type``, ``num_inference_steps < 1``, a negative
                ``prior_guidance_scale`` or one > 0 without a ``pose_prior``.
        """
        from .warp import keypoints_to_frame

        if output_type not in ("np", "pil", "pt"):
            raise ValueError(f"output_type must be 'np', 'pil' or 'pt', got {output_type!r}")
        if int(num_inference_steps) < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        if prior_guidance_scale < 0:
            raise ValueError(f"prior_guidance_scale must be >= 0, got {prior_guidance_scale}")
        use_prior = prior_guidance_scale > 0
        if use_prior and pose_prior is None:
            raise ValueError("prior_guidance_scale > 0 needs a pose_prior (an object with .energy(keypoints))")
        images, src_kp, tgt_kp = check_repose_inputs(source_images, source_keypoints, target_keypoints)
        b = len(images)
        if source_sizes is None:
            source_sizes = [(im.shape[1], im.shape[0]) for im in images]
        src_sizes = _sizes(source_sizes, b, "source_sizes")
        tgt_sizes = _sizes(target_sizes, b, "target_sizes")
        if isinstance(generator, (list, tuple)):
            if len(generator) != b:
                raise ValueError(f"got {len(generator)} generators for {b} images; pass one per image")
            generator = list(generator)

        device = self.unet.device
        dtype = self.unet.dtype
        h, w = self.resolution
        source = images_to_tensor(images, (h, w)).to(device=device, dtype=dtype)
        source_pose = self.pose_maps(src_kp, src_sizes)
        target_pose = self.pose_maps(tgt_kp, tgt_sizes)
        skp = keypoints_to_frame(src_kp, src_sizes, (h, w)).to(device)
        tkp = keypoints_to_frame(tgt_kp, tgt_sizes, (h, w)).to(device)
        needs_flow = bool(getattr(self.unet.config, "pose_aligned", False))
        cond = {
            "source": source,
            "source_pose": source_pose,
            "target_pose": target_pose,
            "source_keypoints": skp,
            "target_keypoints": tkp,
        }
        if needs_flow:
            cond["flow"] = self.unet.compute_flow(skp, tkp)
        present = (tkp[..., 2] >= float(self.unet.config.min_score)) & (tkp[..., 2] > 0)

        self.scheduler.set_timesteps(int(num_inference_steps), device=device)
        latents = randn_tensor((b, 3, h, w), generator=generator, device=device, dtype=dtype)
        latents = latents * self.scheduler.init_noise_sigma
        step_params = inspect.signature(self.scheduler.step).parameters
        extra = {}
        if "generator" in step_params:
            extra["generator"] = generator
        if "eta" in step_params:
            extra["eta"] = eta
        alphas_cumprod = getattr(self.scheduler, "alphas_cumprod", None)
        if use_prior and alphas_cumprod is None:
            raise ValueError(f"{type(self.scheduler).__name__} has no alphas_cumprod; prior guidance needs one")
        for t in self.scheduler.timesteps:
            if use_prior:
                idx = int(min(max(round(float(t)), 0), len(alphas_cumprod) - 1))
                step_size = float(prior_guidance_scale) * (1.0 - float(alphas_cumprod[idx]))
                tkp = self._prior_step(pose_prior, tkp, present, step_size)
                cond["target_keypoints"] = tkp
                cond["target_pose"] = render_poses_tensor(
                    tkp, (w, h), (h, w), self.unet.config.pose_sigma, self.unet.config.limb_width,
                    self.unet.config.min_score, device=device, dtype=dtype,
                )
                if needs_flow:
                    cond["flow"] = self.unet.compute_flow(skp, tkp)
            model_in = self.scheduler.scale_model_input(latents, t)
            pred = self.guided_prediction(model_in, t, cond, pose_guidance_scale, appearance_guidance_scale)
            latents = self.scheduler.step(pred, t, latents, **extra).prev_sample

        out = latents.float().clamp(-1.0, 1.0).cpu()
        if output_type == "pt":
            result = out
        else:
            arr = tensor_to_uint8(out)
            result = [Image.fromarray(a) for a in arr] if output_type == "pil" else arr
        if not return_keypoints:
            return result
        kp_out = tkp.detach().float().cpu().numpy().copy()
        sx = (tgt_sizes[:, 0] / w).astype(np.float32)[:, None]
        sy = (tgt_sizes[:, 1] / h).astype(np.float32)[:, None]
        kp_out[..., 0] = (kp_out[..., 0] + 0.5) * sx - 0.5
        kp_out[..., 1] = (kp_out[..., 1] + 0.5) * sy - 0.5
        kp_out[..., 2] = tgt_kp[..., 2]
        return result, kp_out


def load_pipeline(
    path: str | os.PathLike,
    scheduler: str | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    autoencoder: str | os.PathLike | None = None,
):
    """Load a trained re-posing model folder, offline: a saved :class:`ReposePipeline`, or a
    :class:`~posegen.repose.latent_pipeline.LatentReposePipeline` (posegen's default model family,
    recognised by ``model_index.json``'s ``_class_name``).

    Args:
        path: the folder (``model_index.json`` + ``unet/`` + ``scheduler/``), e.g. ``RUN/model``;
            None = the default model shipped with posegen (:func:`default_model_dir`).
        autoencoder: latent models only: the TAEF2 folder (None = the default location).
        scheduler: None to keep the saved sampler, or a name of :data:`SCHEDULERS` to switch to it
            (same forward process and prediction type as the saved one).
        device: where to run (``"cpu"``, ``"cuda"``, ...).
        dtype: optional weights dtype (e.g. ``torch.float16`` on a GPU).

    Raises:
        FileNotFoundError: missing folder or files (named in the message).
        ValueError: unknown scheduler name; unreadable or mismatched model files.
    """
    path = default_model_dir() if path is None else path
    if not Path(path).is_dir():
        raise FileNotFoundError(f"re-posing model folder not found: {path}")
    index = Path(path) / "model_index.json"
    if index.is_file():
        import json

        try:
            cls_name = json.loads(index.read_text()).get("_class_name")
        except (ValueError, OSError) as exc:
            raise ValueError(f"cannot read {index}: {exc}") from exc
        if cls_name == "LatentReposePipeline":
            from .latent_pipeline import load_latent_pipeline

            if scheduler not in (None, "ddim"):
                raise ValueError(f"the latent model samples with ddim only, got scheduler {scheduler!r}")
            return load_latent_pipeline(path, autoencoder=autoencoder, device=device, dtype=dtype)
    try:
        pipe = ReposePipeline.from_pretrained(path)
    except FileNotFoundError:
        raise  # a missing file keeps its own error, which names the path
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"cannot load the re-posing model in {path}: {first}") from exc
    if scheduler is not None:
        pipe.scheduler = make_scheduler(scheduler, pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    pipe = pipe.to(device)
    if dtype is not None:
        pipe = pipe.to(dtype=dtype)
    return pipe
