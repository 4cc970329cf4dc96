"""An erasure as a user describes it (names and numbers), and the one place where those names become
objects: `resolve` turns an ErasureConfig into an ErasurePlan holding the bound divergence, the
objective with its parameters, the model family's profile and the LoRA settings. The loop receives
the plan."""
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Optional

import torch

from ..divergences import CriticSettings, get_divergence
from .closed_form import ClosedFormEdit
from .deltas import LoraSettings
from .neighbourhood import Neighbourhood
from .families import FamilyProfile, family_for
from .method import Method
from .registry import get_objective


@dataclass
class ErasureConfig:
    steps: int = 200
    learning_rate: float = 5e-5
    seed: int = 0
    divergence: str = "kl"
    divergence_params: dict = field(default_factory=dict)   # e.g. {"alpha": 0.5}
    temperature: float = 1.0
    reduction: str = "mean"
    critic: Optional[CriticSettings] = None     # variational_* divergences only; None: the defaults
    objective: str = "anchor"
    objective_params: dict = field(default_factory=dict)
    parameters: str = "cross_attention_kv"
    lora: Optional[LoraSettings] = None         # the lora preset only; None: the defaults
    family: str = "SD15"                        # ComfyUI's model-config name of the model
    batch_size: int = 1
    preserve_weight: float = 1.0  # weight of the preservation term (when there are prompts to preserve)
    max_grad_norm: float = 1.0
    autocast_dtype: Optional[torch.dtype] = None   # e.g. torch.bfloat16: mixed precision for the model passes
    loss_scaling: bool = False    # dynamic loss scaling, for models that compute in float16
    frozen_batch: int = 8         # latents per frozen pass; the steps they cover are drawn ahead
    preview_every: int = 0        # every so many steps a record carries a preview (0: never)
    neighbourhood: Neighbourhood = field(default_factory=Neighbourhood)   # train near the target, not on it only


@dataclass
class ErasurePlan:
    config: ErasureConfig
    divergence: object            # divergences.ClosedFormLoss or VariationalLoss
    objective: Method             # a training objective or a closed-form edit
    family: FamilyProfile
    lora: Optional[LoraSettings]  # None: full weight deltas

    def with_config(self, **changes) -> "ErasurePlan":
        """The same plan with some of the config's numbers changed (e.g. frozen_batch, once the latents are known)."""
        return dataclasses.replace(self, config=dataclasses.replace(self.config, **changes))


def resolve(config: ErasureConfig) -> ErasurePlan:
    """Check every setting and turn names into objects; ValueError naming the input and the fix."""
    _check_numbers(config)
    family = family_for(config.family)
    if config.parameters not in family.presets:
        raise ValueError(f"parameters preset '{config.parameters}' is unknown; choose one of: {', '.join(family.presets)}")
    if config.lora is not None and config.parameters != "lora":
        raise ValueError(f"LoRA options apply to the lora preset only, and parameters is '{config.parameters}': "
                         f"choose parameters 'lora' or remove the LoRA options")
    lora = (config.lora or LoraSettings()) if config.parameters == "lora" else None
    objective = get_objective(config.objective)(**config.objective_params)
    objective.check_deltas(lora is not None)
    objective.check_family(family)
    if isinstance(objective, ClosedFormEdit):     # one solve, on the weights it edits: the node's progress bar ends
        config = dataclasses.replace(config, parameters=objective.edits, steps=1)
    _check_neighbourhood(config.neighbourhood, objective)
    divergence = get_divergence(config.divergence).bind(config.temperature, config.reduction,
                                                       config.divergence_params, config.critic)
    return ErasurePlan(config, divergence, objective, family, lora)


def _check_neighbourhood(near: Neighbourhood, objective: Method) -> None:
    if not (math.isfinite(near.radius) and near.radius >= 0) or near.adversarial_steps < 0:
        raise ValueError(f"the neighbourhood's radius and adversarial_steps must be at least 0, got {near.radius}, "
                         f"{near.adversarial_steps}; try radius 0.5 and 0 adversarial steps")
    if near.active and not objective.trains_near:
        raise ValueError(f"the concept neighbourhood applies to the anchor objective, and the objective is "
                         f"{objective.name}: remove Unlearn Concept Neighbourhood or choose the anchor objective")


def _check_numbers(config: ErasureConfig) -> None:
    if config.steps < 1:
        raise ValueError(f"steps must be at least 1, got {config.steps}")
    if not (math.isfinite(config.learning_rate) and config.learning_rate > 0):
        raise ValueError(f"learning_rate must be a finite positive number, got {config.learning_rate}; try 5e-5")
    if not (math.isfinite(config.preserve_weight) and config.preserve_weight >= 0):
        raise ValueError(f"preserve_weight must be a finite number >= 0, got {config.preserve_weight}; try 1.0")
    if config.batch_size < 1 or config.frozen_batch < 1 or config.preview_every < 0:
        raise ValueError(f"batch_size and frozen_batch must be at least 1 and preview_every at least 0, got "
                         f"{config.batch_size}, {config.frozen_batch}, {config.preview_every}")
    if config.lora is not None and (config.lora.rank < 1 or not config.lora.alpha > 0):
        raise ValueError(f"LoRA rank must be at least 1 and alpha positive, got {config.lora.rank}, {config.lora.alpha}")
