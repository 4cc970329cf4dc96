"""The erasure engine: pure torch, no ComfyUI import (it drives any Denoiser and NoiseSchedule)."""
from .concepts import ConceptPair, ConceptSet, PreservedPrompt, pair_prompts, prompt_lines
from .deltas import LoraDeltas, WeightDeltas
from .erasure import PACK_VERSION, Erasure
from .export import lora_state_dict, next_free_path, read_erasure_metadata, write_erasure
from .engine import (VARIATIONAL_DIVERGENCES, Concept, Denoiser, ErasureConfig, NonFiniteLossError, StepRecord,
                     erase)
from .objectives import OBJECTIVES, dual_ascent, get_objective
from .parameters import PARAMETER_PRESETS, select_parameters
from .sampling import euler_sample
from .schedule import DiscreteVPSchedule, NoiseSchedule
from .torch_module import ModuleDenoiser, preset_shapes

__all__ = [
    "Concept", "ConceptPair", "ConceptSet", "Denoiser", "DiscreteVPSchedule", "Erasure", "ErasureConfig",
    "LoraDeltas", "ModuleDenoiser", "NoiseSchedule", "NonFiniteLossError", "OBJECTIVES", "PACK_VERSION",
    "PARAMETER_PRESETS", "VARIATIONAL_DIVERGENCES", "dual_ascent", "get_objective",
    "PreservedPrompt", "StepRecord", "WeightDeltas", "erase", "euler_sample", "lora_state_dict", "next_free_path",
    "pair_prompts", "preset_shapes",
    "prompt_lines", "read_erasure_metadata", "select_parameters", "write_erasure",
]
