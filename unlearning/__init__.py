"""The erasure engine: pure torch, no ComfyUI import (it drives any Denoiser and NoiseSchedule).

Where things live: config.py turns an ErasureConfig into objects (resolve); engine.py is the loop (and the
run of a closed-form edit); objectives/ the training objectives, one file each; closed_form/ the closed-form
edits; registry.py the objectives a user can pick; evaluation/ what measures an erasure; families.py the
model-family profiles; parameters.py the presets.
"""
from .concepts import (PHRASING_TEMPLATES, Concept, ConceptPair, ConceptSet, PreservedPrompt, expanded_pairs, pair_prompts,
                       phrasings_of, prompt_lines)
from .config import ErasureConfig, ErasurePlan, resolve
from .deltas import LoraDeltas, LoraSettings, WeightDeltas
from .closed_form import ClosedFormEdit, Edit, EditInputs
from .draws import Bank, Draw, FrozenPass, Role, Step
from .engine import Denoiser, EditRun, ErasureRun, NonFiniteLossError, StepRecord, erase, new_run
from .erasure import PACK_VERSION, Erasure, erasure_metadata
from .export import erasure_from_state_dict, lora_state_dict, next_free_path, read_erasure_metadata, write_erasure
from .families import (FAMILIES, FLUX_DEV, FLUX_SCHNELL, SD1, SD2, SD3, SDXL, FamilyProfile, FusedParts, Sampling,
                       family_for, register_family)
from .neighbourhood import Neighbourhood
from .method import Method
from .objectives import Loss, Objective, dual_ascent
from .registry import OBJECTIVES, get_objective, register_objective
from .parameters import PRESETS, select_parameters
from .sampling import euler_sample
from .schedule import DiscreteVPSchedule, FlowSchedule, NoiseSchedule
from .sources import FORGET_IMAGES, RETAIN_IMAGES, ImageSource, Source, Trajectory
from .toolbox import Comparison, Toolbox
from .torch_module import ModuleDenoiser, preset_shapes

__all__ = [
    "Bank", "ClosedFormEdit", "Comparison", "Concept", "ConceptPair", "ConceptSet", "Denoiser",
    "DiscreteVPSchedule", "Draw", "Edit", "EditInputs", "EditRun", "Erasure", "ErasureConfig", "ErasurePlan",
    "ErasureRun", "FAMILIES", "FLUX_DEV", "FLUX_SCHNELL", "FORGET_IMAGES", "FamilyProfile", "FlowSchedule",
    "FrozenPass", "FusedParts", "ImageSource", "LoraDeltas", "LoraSettings", "Loss", "Method", "ModuleDenoiser", "Neighbourhood",
    "NoiseSchedule", "NonFiniteLossError", "OBJECTIVES", "Objective", "PACK_VERSION", "PHRASING_TEMPLATES",
    "PRESETS", "PreservedPrompt", "RETAIN_IMAGES", "Role", "SD1", "SD2", "SD3", "SDXL", "Sampling", "Source",
    "Step", "StepRecord", "Toolbox", "Trajectory", "WeightDeltas", "dual_ascent", "erase",
    "erasure_from_state_dict", "erasure_metadata", "euler_sample", "expanded_pairs", "family_for", "get_objective",
    "lora_state_dict", "new_run", "next_free_path", "pair_prompts", "phrasings_of", "preset_shapes", "prompt_lines",
    "read_erasure_metadata", "register_family", "register_objective", "resolve", "select_parameters",
    "write_erasure",
]
