"""Registers the pack's nodes with ComfyUI (V3 extension)."""
from comfy_api.latest import ComfyExtension

from .erase import UnlearnConceptPair, UnlearnModel
from .save import UnlearnSaveErasure


class UnlearnExtension(ComfyExtension):
    async def get_node_list(self):
        return [UnlearnConceptPair, UnlearnModel, UnlearnSaveErasure]


async def comfy_entrypoint():
    return UnlearnExtension()
