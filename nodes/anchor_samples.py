"""Clean training latents sampled from the frozen model for a pair's anchor (or target) prompt, cached.

Ablating Concepts trains on images of the anchor made by the model itself; with no LATENT wired, the
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

_CACHE = OrderedDict()
_CACHE_SIZE = 32


@dataclass(frozen=True)
class AnchorSampling:
    count: int = 4
    steps: int = 20
    cfg: float = 7.0
    width: int = 512
    height: int = 512
    sampler: str = "euler"
    scheduler: str = "normal"


def anchor_latents(model, pair, settings: AnchorSampling, seed: int, role="anchor", on_step=None) -> torch.Tensor:
    """`settings.count` clean latents of the pair's anchor (or, role="target", target) prompt, sampled
    from `model` (cached)."""
    text, cond = (pair.anchor_text, pair.anchor_cond) if role == "anchor" else (pair.target_text, pair.target_cond)
    key = (id(model.model), model.patches_uuid, text, settings, seed)
    cached = _CACHE.get(key)
    if cached is not None and cached[0]() is model.model:
        _CACHE.move_to_end(key)
        return cached[1]
    latent = torch.zeros([settings.count, 4, settings.height // 8, settings.width // 8])
    latent = comfy.sample.fix_empty_latent_channels(model, latent)
    callback = None if on_step is None else (lambda step, x0, x, total: on_step())
    samples = comfy.sample.sample(
        model, comfy.sample.prepare_noise(latent, seed), settings.steps, settings.cfg, settings.sampler,
        settings.scheduler, cond, pair.empty_cond, latent, seed=seed, callback=callback, disable_pbar=True)
    _CACHE[key] = (weakref.ref(model.model), samples)
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return samples
