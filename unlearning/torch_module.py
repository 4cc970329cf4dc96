"""A plain torch module as an engine Denoiser (tests, benchmarks, scripts outside ComfyUI)."""
from typing import Any, Callable, Optional

import torch

from .deltas import WeightDeltas, target_shape
from .families import FamilyProfile
from .parameters import select_parameters, weight_name
from .schedule import NoiseSchedule


def preset_shapes(module: torch.nn.Module, preset: str, profile: Optional[FamilyProfile] = None) -> dict:
    """{target: shape} of what a parameters preset selects among the module's parameters (in a model family,
    default SD1.x): what WeightDeltas or LoraDeltas take."""
    shapes = {name: p.shape for name, p in module.named_parameters()}
    return {target: target_shape(target, shapes[weight_name(target)])
            for target in select_parameters(list(shapes), preset, profile, shapes)}


def module_at(root: torch.nn.Module, path: str,
              dtype: Optional[torch.dtype] = None) -> Optional[Callable[[torch.Tensor], torch.Tensor]]:
    """root's module at the dotted `path` as a function of a tensor, run without gradients on the module's device in
    `dtype` (default: its first parameter's); None where root has no module there."""
    try:
        module = root.get_submodule(path)
    except AttributeError:     # no such attribute, or one set to None (an optional layer the config leaves out)
        return None
    weight = next(module.parameters(), None)

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            if weight is not None:
                x = x.to(weight.device, dtype or weight.dtype)
            return module(x)

    return run


class ModuleDenoiser:
    """Runs `module` with W + D for every weight that `deltas` trains, without touching its weights.

    `predict(call, x_t, sigma, cond)` turns the module's native output into a denoised x0, where
    `call(*args, **kwargs)` runs the module with the deltas applied.
    """

    def __init__(self, module: torch.nn.Module, schedule: NoiseSchedule, deltas: WeightDeltas,
                 predict: Callable[[Callable[..., torch.Tensor], torch.Tensor, torch.Tensor, Any], torch.Tensor],
                 pooled: Optional[Callable[[Any], torch.Tensor]] = None):
        self.module = module.requires_grad_(False)
        self.schedule = schedule
        self.deltas = deltas
        self.predict = predict
        self.pooled = pooled        # cond -> the pooled text vector `predict` hands the module, where it takes one
        self.device = next(module.parameters()).device

    def predict_x0(self, x_t: torch.Tensor, sigma: torch.Tensor, cond: Any) -> torch.Tensor:
        overrides = dict(self.module.named_parameters())
        for target in self.deltas.weight_keys():          # slices of one fused weight add up
            name = weight_name(target)
            overrides[name] = self.deltas.apply(target, overrides[name])

        def call(*args, **kwargs):
            return torch.func.functional_call(self.module, overrides, args, kwargs)

        return self.predict(call, x_t, sigma, cond)

    def base_weight(self, key: str) -> torch.Tensor:
        return self.module.get_parameter(key)

    def submodule(self, path: str) -> Optional[Callable[[torch.Tensor], torch.Tensor]]:
        return module_at(self.module, path)

    def pooled_states(self, cond: Any) -> Optional[torch.Tensor]:
        return None if self.pooled is None else self.pooled(cond)

    @staticmethod
    def text_states(cond: Any) -> torch.Tensor:
        """A conditioning here is the token states, or a tuple that starts with them (states, mask, ...)."""
        return cond[0] if isinstance(cond, tuple) else cond

    @staticmethod
    def with_text_states(cond: Any, states: torch.Tensor) -> Any:
        return (states, *cond[1:]) if isinstance(cond, tuple) else states
