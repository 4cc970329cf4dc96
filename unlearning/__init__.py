"""The erasure engine: pure torch, no ComfyUI import (it drives any Denoiser and NoiseSchedule)."""
from .concepts import ConceptPair, pair_prompts
from .deltas import WeightDeltas
from .erasure import PACK_VERSION, Erasure
from .engine import Concept, Denoiser, ErasureConfig, NonFiniteLossError, StepRecord, erase
from .parameters import PARAMETER_PRESETS, select_parameters
from .schedule import DiscreteVPSchedule, NoiseSchedule
from .torch_module import ModuleDenoiser

__all__ = [
    "Concept", "ConceptPair", "Denoiser", "DiscreteVPSchedule", "Erasure", "ErasureConfig", "ModuleDenoiser",
    "NoiseSchedule", "NonFiniteLossError", "PACK_VERSION", "PARAMETER_PRESETS", "StepRecord", "WeightDeltas", "erase",
    "pair_prompts", "select_parameters",
]
