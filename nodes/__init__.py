"""The pack's ComfyUI nodes (V3 schema): thin adapters from ComfyUI types to the engine."""
from comfy_api.latest import ComfyExtension

from .erase import UnlearnConceptPair, UnlearnModel


class UnlearnExtension(ComfyExtension):
    async def get_node_list(self):
        return [UnlearnConceptPair, UnlearnModel]


async def comfy_entrypoint():
    return UnlearnExtension()
