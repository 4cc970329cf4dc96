"""Registers the pack's nodes with ComfyUI (V3 extension)."""
from comfy_api.latest import ComfyExtension

from .attack import UnlearnAttack
from .concepts import UnlearnConceptPair
from .erase import UnlearnModel
from .load import UnlearnLoadErasure
from .options import option_nodes
from .report import UnlearnReport, UnlearnStrengthCurve
from .save import UnlearnSaveErasure
from .suggestions import UnlearnConceptSuggestions


def node_list() -> list:
    """The pack's nodes: the main ones, then the option nodes (one per registered objective)."""
    return [UnlearnConceptPair, UnlearnConceptSuggestions, UnlearnModel, UnlearnSaveErasure, UnlearnLoadErasure,
            UnlearnReport, UnlearnStrengthCurve, UnlearnAttack, *option_nodes()]


class UnlearnExtension(ComfyExtension):
    async def get_node_list(self):
        return node_list()


async def comfy_entrypoint():
    return UnlearnExtension()
