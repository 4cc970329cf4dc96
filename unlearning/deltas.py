"""Trainable weight deltas, switched off to get the frozen model from the same weights."""
import contextlib

import torch


class WeightDeltas:
    """Additive deltas D for chosen weights: while enabled, the model computes with W + D.

    The deltas live in float32 whatever the weights' dtype, so small updates are not rounded away.
    """

    def __init__(self, shapes, device=None):
        self.tensors = {
            key: torch.zeros(shape, device=device, dtype=torch.float32, requires_grad=True)
            for key, shape in shapes.items()
        }
        self.enabled = True

    def parameters(self):
        return list(self.tensors.values())

    def apply(self, key, weight):
        if not self.enabled:
            return weight
        return weight + self.tensors[key].to(weight.dtype)

    @contextlib.contextmanager
    def disabled(self):
        """The frozen model: the same weights with every delta switched off."""
        previous, self.enabled = self.enabled, False
        try:
            yield
        finally:
            self.enabled = previous

    def export(self):
        """Detached float32 copies on the CPU, keyed like the weights."""
        return {key: tensor.detach().to("cpu", copy=True) for key, tensor in self.tensors.items()}
