"""Registers the pack's nodes with ComfyUI (V3 extension)."""
from comfy_api.latest import ComfyExtension

from .erase import UnlearnConceptPair, UnlearnModel


class UnlearnExtension(ComfyExtension):
    async def get_node_list(self):
        return [UnlearnConceptPair, UnlearnModel]


async def comfy_entrypoint():
    return UnlearnExtension()
