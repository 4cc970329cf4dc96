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


class ModuleDenoiser:
    """Runs `module` with W + D for every weight that `deltas` trains, without touching its weights.

    `predict(call, x_t, sigma, cond)` turns the module's native output into a denoised x0, where
    `call(*args, **kwargs)` runs the module with the deltas applied.
    """

    def __init__(self, module: torch.nn.Module, schedule: NoiseSchedule, deltas: WeightDeltas,
                 predict: Callable[[Callable[..., torch.Tensor], torch.Tensor, torch.Tensor, Any], torch.Tensor]):
        self.module = module.requires_grad_(False)
        self.schedule = schedule
        self.deltas = deltas
        self.predict = predict
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

    @staticmethod
    def text_states(cond: Any) -> torch.Tensor:
        """A conditioning here is the token states, or a tuple that starts with them (states, mask, ...)."""
        return cond[0] if isinstance(cond, tuple) else cond

    @staticmethod
    def with_text_states(cond: Any, states: torch.Tensor) -> Any:
        return (states, *cond[1:]) if isinstance(cond, tuple) else states
