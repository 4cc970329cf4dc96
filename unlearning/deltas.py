"""Trainable weight deltas, switched off to get the frozen model from the same weights."""
import contextlib
from dataclasses import dataclass
from typing import Iterator, Optional

import torch

# A trained target: a weight's name, or a slice of it (name, (dim, start, size)).
WeightKey = str | tuple[str, tuple[int, int, int]]


@dataclass(frozen=True)
class LoraSettings:
    """The LoRA trained by the `lora` preset: updates (alpha / rank) up @ down."""

    rank: int = 8
    alpha: float = 8.0


def add_to_weight(target: WeightKey, weight: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """weight + delta, where a target that is a slice (name, (dim, start, size)) adds delta to those rows only."""
    if not isinstance(target, tuple):
        return weight + delta
    dim, start, size = target[1]
    before, rows, after = weight.split([start, size, weight.shape[dim] - start - size], dim)
    return torch.cat([before, rows + delta, after], dim)


def target_shape(target: WeightKey, weight_shape: tuple[int, ...]) -> tuple:
    """The shape of a target's delta: the weight's, or its slice's."""
    if not isinstance(target, tuple):
        return tuple(weight_shape)
    dim, _, size = target[1]
    return tuple(size if i == dim else n for i, n in enumerate(weight_shape))


class WeightDeltas:
    """Additive deltas D for chosen weights: while enabled, the model computes with W + D.

    Keyed by target: a weight's name, or a slice of it (name, (dim, start, size)), ComfyUI's patch key for
    part of a fused weight. The deltas live in float32 whatever the weights' dtype, so small updates are
    not rounded away.
    """

    is_lora = False

    def __init__(self, shapes: dict[WeightKey, tuple[int, ...]], device: Optional[torch.device | str] = None):
        self.tensors = {
            key: torch.zeros(shape, device=device, dtype=torch.float32, requires_grad=True)
            for key, shape in shapes.items()
        }
        self.enabled = True

    def parameters(self) -> list[torch.Tensor]:
        return list(self.tensors.values())

    def weight_keys(self) -> list[WeightKey]:
        """The targets these deltas change (weight names, or slices of weights)."""
        return list(self.tensors)

    def apply(self, key: WeightKey, weight: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return weight
        return add_to_weight(key, weight, self.tensors[key].to(weight.dtype))

    @contextlib.contextmanager
    def disabled(self) -> Iterator[None]:
        """The frozen model: the same weights with every delta switched off."""
        previous, self.enabled = self.enabled, False
        try:
            yield
        finally:
            self.enabled = previous

    def export(self) -> dict[WeightKey, torch.Tensor]:
        """Detached float32 copies on the CPU, keyed like the weights."""
        return {key: tensor.detach().to("cpu", copy=True) for key, tensor in self.tensors.items()}

    def start_from(self, exported: dict) -> None:
        """Continue from an earlier export (of the same weights): its values become the deltas."""
        _check_same_weights(self.weight_keys(), exported)
        with torch.no_grad():
            for key, value in exported.items():
                if isinstance(value, tuple):
                    raise ValueError("the erasure to start from is a LoRA, and this run trains full deltas: "
                                     "choose parameters 'lora'")
                self.tensors[key].copy_(value)


class LoraDeltas(WeightDeltas):
    """Low-rank updates D = (alpha / rank) up @ down for 2-D weights, up zero at the start (D = 0).

    The same interface as WeightDeltas; down starts random (seeded), as in LoRA, so the gradient of up
    is not zero. Exported as (up, down, alpha) per weight: ComfyUI's LoRA format.
    """

    is_lora = True

    def __init__(self, shapes: dict[WeightKey, tuple[int, ...]], rank: int, alpha: float,
                 device: Optional[torch.device | str] = None, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.rank, self.alpha = rank, alpha
        self.factors = {}
        for key, shape in shapes.items():
            if len(shape) != 2:
                raise ValueError(f"LoRA trains linear (2-D) weights only; {key} has shape {tuple(shape)}")
            down = torch.randn(rank, shape[1], generator=generator) / shape[1] ** 0.5
            self.factors[key] = (torch.zeros(shape[0], rank, device=device, requires_grad=True),
                                 down.to(device).requires_grad_(True))
        self.tensors = {(key, part): t for key, pair in self.factors.items() for part, t in zip(("up", "down"), pair)}
        self.enabled = True

    def weight_keys(self) -> list[WeightKey]:
        return list(self.factors)

    def apply(self, key: WeightKey, weight: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return weight
        up, down = self.factors[key]
        return add_to_weight(key, weight, ((self.alpha / self.rank) * (up @ down)).to(weight.dtype))

    def export(self) -> dict[WeightKey, tuple[torch.Tensor, torch.Tensor, float]]:
        return {key: (up.detach().to("cpu", copy=True), down.detach().to("cpu", copy=True), float(self.alpha))
                for key, (up, down) in self.factors.items()}

    def start_from(self, exported: dict) -> None:
        _check_same_weights(self.weight_keys(), exported)
        with torch.no_grad():
            for key, value in exported.items():
                if not isinstance(value, tuple) or value[0].shape[1] != self.rank or value[2] != self.alpha:
                    raise ValueError(f"the erasure to start from is not a LoRA of rank {self.rank} and alpha "
                                     f"{self.alpha:g}: set Unlearn LoRA Options to its rank and alpha")
                for factor, saved in zip(self.factors[key], value[:2]):
                    factor.copy_(saved)


def _check_same_weights(keys, exported):
    if set(keys) != set(exported):
        raise ValueError(f"the erasure to start from changes {len(exported)} weights and this run trains "
                         f"{len(keys)} others: choose the parameters preset it was made with")
