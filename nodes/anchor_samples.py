"""Clean training latents sampled from the frozen model for a pair's anchor (or target) prompt, cached.

Ablating Concepts trains on images of the anchor made by the model itself; with no images wired, the
node does the same: `count` images per prompt with ComfyUI's own sampler (the empty prompt as
negative). The data-unlearning objectives also sample images of the target when none are given. They
are cached per model, prompt and settings, so re-running with another step count, learning rate or
divergence does not sample again.
"""
import weakref
from collections import OrderedDict
from dataclasses import dataclass

import comfy.sample
import torch

from .comfy_model import latent_shape

_CACHE = OrderedDict()
_CACHE_SIZE = 32


@dataclass(frozen=True)
class ImageSampling:
    """How training images (and the objectives' trajectories) are sampled."""

    count: int
    steps: int
    cfg: float
    width: int
    height: int
    sampler: str = "euler"
    scheduler: str = "normal"


def sampled_latents(model, family, prompt, negative, settings: ImageSampling, seed: int, on_step=None) -> torch.Tensor:
    """`settings.count` clean latents of `prompt` ((text, conditioning)) against the `negative`
    conditioning, sampled from `model` of `family` (cached); on_step(x0) after each sampling step."""
    text, cond = prompt
    key = (id(model.model), model.patches_uuid, text, settings, seed)
    cached = _CACHE.get(key)
    if cached is not None and cached[0]() is model.model:
        _CACHE.move_to_end(key)
        return cached[1]
    latent = torch.zeros([settings.count, *latent_shape(model, family, settings.width, settings.height)])
    callback = None if on_step is None else (lambda step, x0, x, total: on_step(x0))
    samples = comfy.sample.sample(
        model, comfy.sample.prepare_noise(latent, seed), settings.steps, settings.cfg, settings.sampler,
        settings.scheduler, cond, negative, latent, seed=seed, callback=callback, disable_pbar=True)
    _CACHE[key] = (weakref.ref(model.model), samples)
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return samples
