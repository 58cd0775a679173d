"""Noise schedulers by name (all from diffusers).

Training always uses DDPM (Ho et al. 2020, "Denoising Diffusion Probabilistic Models"):
:func:`training_scheduler`. Any sampler below can then generate from the trained model, because they
share the same forward process (``num_train_timesteps``, ``beta_schedule``) and prediction type:

=================  ==========================================  ====================================
name               diffusers class                             method
=================  ==========================================  ====================================
``ddim``           ``DDIMScheduler`` (eta = 0)                 DDIM, Song et al. 2021
``dpm++``          ``DPMSolverMultistepScheduler``             DPM-Solver++ (2M), Lu et al. 2022
(``dpmsolver++``)  ``algorithm_type="dpmsolver++"``
``ddpm``           ``DDPMScheduler``                           ancestral DDPM, Ho et al. 2020
``unipc``          ``UniPCMultistepScheduler``                 UniPC, Zhao et al. 2023
``euler``          ``EulerDiscreteScheduler``                  Euler (Karras et al. 2022 form)
=================  ==========================================  ====================================

Samplers use ``timestep_spacing="trailing"`` unless a given config says otherwise, so that few-step
sampling starts from the last training timestep (Lin et al. 2024, "Common Diffusion Noise Schedules
and Sample Steps are Flawed").
"""

from __future__ import annotations

import inspect
from typing import Any, Mapping

from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

__all__ = ["SCHEDULERS", "make_scheduler", "training_scheduler", "scheduler_name"]

#: Sampler names -> (diffusers class, fixed settings for that name).
SCHEDULERS: dict[str, tuple[type[SchedulerMixin], dict[str, Any]]] = {
    "ddim": (DDIMScheduler, {}),
    "dpm++": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++"}),
    "dpmsolver++": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++"}),
    "ddpm": (DDPMScheduler, {}),
    "unipc": (UniPCMultistepScheduler, {}),
    "euler": (EulerDiscreteScheduler, {}),
}

# Settings that define the forward (noising) process and the network's output; every sampler
# inherits them from the config it is built from.
_PROCESS_KEYS = ("num_train_timesteps", "beta_schedule", "beta_start", "beta_end", "prediction_type", "trained_betas")


def _accepted(cls: type, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    params = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in kwargs.items() if k in params}


def _config_dict(config) -> dict[str, Any]:
    if config is None:
        return {}
    # a TrainConfig (pydantic) or anything with those attributes
    if hasattr(config, "num_train_timesteps") and not isinstance(config, Mapping):
        return {
            "num_train_timesteps": int(config.num_train_timesteps),
            "beta_schedule": str(config.beta_schedule),
            "prediction_type": str(config.prediction_type),
        }
    return {k: v for k, v in dict(config).items() if not str(k).startswith("_")}


def make_scheduler(name: str, config=None, **overrides) -> SchedulerMixin:
    """Build a sampler by name.

    Args:
        name: one of :data:`SCHEDULERS` (case-insensitive): ``ddim``, ``dpm++`` / ``dpmsolver++``,
            ``ddpm``, ``unipc``, ``euler``.
        config: where the forward-process settings come from: another scheduler's ``.config``
            (e.g. ``pipe.scheduler.config``, the usual way to switch samplers), a
            :class:`~posegen.recipe.TrainConfig`, a plain dict, or None (diffusers defaults).
        **overrides: scheduler constructor arguments that win over ``config``, e.g.
            ``num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="epsilon"``.
            Arguments the chosen class does not take are dropped.

    Returns:
        A new diffusers scheduler; call ``set_timesteps(n)`` before sampling.

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    key = str(name).strip().lower()
    if key not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; known schedulers: {', '.join(SCHEDULERS)}")
    cls, fixed = SCHEDULERS[key]
    cfg = _config_dict(config)
    if cfg.get("trained_betas") is None:
        cfg.pop("trained_betas", None)
    cfg.setdefault("timestep_spacing", "trailing")
    cfg.update(overrides)
    cfg.update(fixed)
    if key in ("dpm++", "dpmsolver++"):
        # a config from another solver may carry settings DPM-Solver++ rejects
        if cfg.get("final_sigmas_type") not in (None, "zero", "sigma_min"):
            cfg.pop("final_sigmas_type")
    return cls(**_accepted(cls, cfg))


def training_scheduler(train_cfg) -> DDPMScheduler:
    """The DDPM noise scheduler used for training (``add_noise``, ``get_velocity``).

    Args:
        train_cfg: a :class:`~posegen.recipe.TrainConfig` (``num_train_timesteps``,
            ``beta_schedule``, ``prediction_type``).
    """
    return DDPMScheduler(
        num_train_timesteps=int(train_cfg.num_train_timesteps),
        beta_schedule=str(train_cfg.beta_schedule),
        prediction_type=str(train_cfg.prediction_type),
        clip_sample=True,
    )


def scheduler_name(scheduler: SchedulerMixin) -> str:
    """The :data:`SCHEDULERS` name of a scheduler instance (``"dpm++"`` for DPM-Solver++), or its class name."""
    for key, (cls, _) in SCHEDULERS.items():
        if type(scheduler) is cls:
            return key
    return type(scheduler).__name__
