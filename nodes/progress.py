"""The progress bar and Cancel check of every node that samples or trains.

A node's long work (sampling steps, training steps, scored prompts) moves one ComfyUI progress bar under the
node's id, and every move checks Cancel: ComfyUI interrupts a node only where the node asks, so a loop that
never checked would run to its end after the user pressed Cancel.
"""
from typing import Any, Optional

import comfy.model_management
import comfy.utils
import latent_preview
import torch


def latent_previewer(model) -> Optional[Any]:
    """The previewer ComfyUI's own samplers use for `model` (its --preview-method decides which; None when
    previews are off, the default)."""
    return latent_preview.get_previewer(model.load_device, model.model.latent_format)


class NodeProgress:
    """One node's progress bar over `total` units of work, with a latent preview at a step where a previewer is
    given and the step has a latent to show."""

    def __init__(self, node_id: Optional[str], total: int, previewer: Optional[Any] = None):
        self.bar = comfy.utils.ProgressBar(max(total, 1), node_id=node_id)
        self.previewer = previewer

    def step(self, x0: Optional[torch.Tensor] = None) -> None:
        """One more unit done (a sampling step, a scored prompt); `x0` is the latent to preview, if any.
        Raises ComfyUI's InterruptProcessingException after a Cancel."""
        self.at(self.bar.current + 1, x0)

    def at(self, position: int, x0: Optional[torch.Tensor] = None) -> None:
        """The bar at `position` of its total (e.g. a training record's step, after the sampling before it);
        raises like step after a Cancel."""
        self.bar.update_absolute(position, preview=self._preview(x0))
        comfy.model_management.throw_exception_if_processing_interrupted()

    def done(self) -> None:
        """The bar at its end, where the work counted fewer units than planned."""
        self.bar.update_absolute(self.bar.total)

    def _preview(self, x0: Optional[torch.Tensor]):
        if self.previewer is None or x0 is None:
            return None
        return self.previewer.decode_latent_to_preview_image("JPEG", x0[:1])   # the first image of the batch
