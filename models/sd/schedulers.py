"""Schedulers for the VisionKit sampler: a fresh diffusers scheduler per run, built from the pipeline's config.

The cached pipeline only holds its scheduler *config* (a plain dict, `Components.scheduler_config`); a scheduler is
stateful (timesteps, step index, multistep history), so every run builds its own with
`SomeScheduler.from_config(config)` — the cached config is never modified (it is copied first).

Names (the sampler node's `scheduler` input):
- "lcm": diffusers' LCMScheduler (Latent Consistency Models: LCM-LoRA or an LCM checkpoint, 4–8 steps).
- "pipeline default": the class the pipeline's config names (SD1.5: PNDM, SDXL: Euler), for comparison.
- "euler", "euler ancestral", "dpm++ 2m", "dpm++ 2m karras", "ddim": the usual diffusers schedulers.

`schedule(...)` sets the timesteps the way diffusers' pipelines do: StableDiffusionPipeline for text-to-image,
StableDiffusionImg2ImgPipeline / InpaintPipeline's `get_timesteps` (steps × denoise, the last ones) for images.
"""
from __future__ import annotations

import inspect

from .types import GenerationError

SCHEDULERS = {  # name: (diffusers class, config overrides); None = the pipeline's own
    "lcm": ("LCMScheduler", {}),
    "pipeline default": None,
    "euler": ("EulerDiscreteScheduler", {}),
    "euler ancestral": ("EulerAncestralDiscreteScheduler", {}),
    "dpm++ 2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpm++ 2m karras": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2,
                                                        "use_karras_sigmas": True}),
    "ddim": ("DDIMScheduler", {}),
}
SCHEDULER_NAMES = tuple(SCHEDULERS)
LCM_MAX_STEPS = 50  # LCMScheduler's original_inference_steps: its schedule is a subset of 50 steps


def _scheduler_class(name: str):
    import diffusers

    cls = getattr(diffusers, name, None)
    if cls is None or not hasattr(cls, "from_config") or not hasattr(cls, "set_timesteps"):
        raise GenerationError(f"the pipeline's scheduler config names {name!r}, which is not a diffusers scheduler; "
                              "pick another scheduler than 'pipeline default'")
    return cls


def make_scheduler(name: str, config: dict, prediction: str = "epsilon"):
    """A new scheduler for one run. `config` is the pipeline's scheduler config (not modified)."""
    if name not in SCHEDULERS:
        raise GenerationError(f"scheduler {name!r} is not one of: {', '.join(SCHEDULER_NAMES)}")
    # as diffusers' `Other.from_config(pipe.scheduler.config)`: keys the config does not set (e.g. the SD1.5
    # config's timestep_spacing) take the chosen class's defaults
    cfg = dict(config or {})
    if SCHEDULERS[name] is None:
        cls, over = _scheduler_class(str(cfg.get("_class_name") or "PNDMScheduler")), {}
    else:
        cls_name, over = SCHEDULERS[name]
        cls = _scheduler_class(cls_name)
    cfg.update(over)
    if prediction and cfg.get("prediction_type", "epsilon") != prediction:
        cfg["prediction_type"] = prediction  # the pipeline knows better than a shipped default
    return cls.from_config(cfg)


def schedule(scheduler, steps: int, device=None, denoise: float | None = None):
    """(timesteps to run, number of steps) as diffusers' pipelines set them.

    denoise None: text-to-image, every timestep. Otherwise image-to-image / inpainting with strength = denoise:
    int(steps × denoise) of the last timesteps (StableDiffusionImg2ImgPipeline.get_timesteps), and the scheduler's
    begin index set to the first of them.
    """
    steps = int(steps)
    if type(scheduler).__name__ == "LCMScheduler" and steps > LCM_MAX_STEPS:
        raise GenerationError(f"the LCM scheduler runs at most {LCM_MAX_STEPS} steps (its schedule is a subset of the "
                              f"{LCM_MAX_STEPS}-step distillation schedule), not {steps}; 4–8 steps is typical")
    try:
        scheduler.set_timesteps(steps, device=device)
    except ValueError as ex:
        raise GenerationError(f"{type(scheduler).__name__} cannot run {steps} steps: {ex}") from ex
    timesteps = scheduler.timesteps
    if denoise is None:
        return timesteps, steps
    order = int(getattr(scheduler, "order", 1))
    init = min(int(steps * float(denoise)), steps)
    t_start = max(steps - init, 0)
    timesteps = timesteps[t_start * order:]
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(t_start * order)
    n = steps - t_start
    if n < 1 or len(timesteps) == 0:
        raise GenerationError(f"denoise {denoise} × {steps} steps leaves no step to run (the image would come back "
                              f"unchanged); raise denoise to at least {1 / steps:.2f} or use more steps")
    return timesteps, n


def step_kwargs(scheduler, generator, eta: float = 0.0) -> dict:
    """The extra arguments diffusers' pipelines give `scheduler.step` (prepare_extra_step_kwargs)."""
    params = set(inspect.signature(scheduler.step).parameters)
    kw = {}
    if "eta" in params:
        kw["eta"] = eta
    if "generator" in params:
        kw["generator"] = generator
    return kw
