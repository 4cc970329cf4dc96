"""The erasure engine: pure torch, no ComfyUI import (it drives any Denoiser and NoiseSchedule).

Where things live: config.py turns an ErasureConfig into objects (resolve); engine.py is the loop;
objectives.py the objectives; families.py the model-family profiles; parameters.py the presets.
"""
from .concepts import (PHRASING_TEMPLATES, Concept, ConceptPair, ConceptSet, PreservedPrompt, expanded_pairs, pair_prompts,
                       phrasings_of, prompt_lines)
from .config import ErasureConfig, ErasurePlan, resolve
from .deltas import LoraDeltas, LoraSettings, WeightDeltas
from .engine import Denoiser, ErasureRun, NonFiniteLossError, StepRecord, Toolbox, erase
from .erasure import PACK_VERSION, Erasure, erasure_metadata
from .export import erasure_from_state_dict, lora_state_dict, next_free_path, read_erasure_metadata, write_erasure
from .families import (FAMILIES, FLUX_DEV, FLUX_SCHNELL, SD1, SD2, SD3, SDXL, FamilyProfile, FusedParts, Sampling,
                       family_for, register_family)
from .neighbourhood import Neighbourhood
from .objectives import OBJECTIVES, Objective, dual_ascent, get_objective, register_objective
from .parameters import PRESETS, select_parameters
from .sampling import euler_sample
from .schedule import DiscreteVPSchedule, NoiseSchedule
from .sources import FORGET_IMAGES, RETAIN_IMAGES, Trajectory
from .torch_module import ModuleDenoiser, preset_shapes

__all__ = [
    "Concept", "ConceptPair", "ConceptSet", "Denoiser", "DiscreteVPSchedule", "Erasure", "ErasureConfig",
    "ErasurePlan", "ErasureRun", "FAMILIES", "FLUX_DEV", "FLUX_SCHNELL", "FORGET_IMAGES", "FamilyProfile",
    "FusedParts", "LoraDeltas", "LoraSettings", "ModuleDenoiser", "Neighbourhood", "NoiseSchedule",
    "NonFiniteLossError", "OBJECTIVES", "Objective", "PACK_VERSION", "PHRASING_TEMPLATES", "PRESETS",
    "PreservedPrompt", "RETAIN_IMAGES", "SD1", "SD2", "SD3", "SDXL", "Sampling", "StepRecord", "Toolbox",
    "Trajectory", "WeightDeltas", "dual_ascent", "erase", "erasure_from_state_dict", "erasure_metadata",
    "euler_sample", "expanded_pairs", "family_for", "get_objective", "lora_state_dict", "next_free_path",
    "pair_prompts", "phrasings_of", "preset_shapes", "prompt_lines", "read_erasure_metadata", "register_family",
    "register_objective", "resolve", "select_parameters", "write_erasure",
]
