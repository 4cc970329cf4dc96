"""What an erasure run produces: the learned weight deltas, what made them, and how training went."""
from dataclasses import dataclass, field
from typing import Optional

from .concepts import ConceptSet
from .config import ErasurePlan
from .engine import StepRecord

PACK_VERSION = "0.3.0"


@dataclass
class Erasure:
    deltas: dict                      # target (a weight's name, or a slice of it) -> float32 delta on the CPU
    metadata: dict                    # method, divergence and its settings, concepts, steps, seed, base model
    records: list = field(default_factory=list)   # one engine.StepRecord per step
    names: dict = field(default_factory=dict)     # slice target -> its module name in a LoRA file (export.py)


def erasure_metadata(plan: ErasurePlan, concepts: ConceptSet, records: list[StepRecord], training_images: str | dict,
                     base_model: dict, started_from: Optional[dict] = None) -> dict:
    """The header a saved erasure carries: how it was made (plan: config.ErasurePlan; concepts: a
    ConceptSet), from which images (`training_images`), on which base model (`base_model`), and the
    header of the erasure its training continued (`started_from`), if any."""
    config, objective = plan.config, plan.objective
    uses_divergence = objective.uses_divergence
    divergence = plan.divergence.settings_record() if uses_divergence else \
        {"temperature": config.temperature, "reduction": config.reduction, "divergence_params": {}}
    return {
        "method": objective.name,
        "objective_params": objective.params,
        "divergence": config.divergence if uses_divergence else None,
        **divergence,
        "concepts": [{"target": p.target_text, "anchor": p.anchor_text} for p in concepts.pairs],
        "preserve": [kept.text for kept in concepts.preserve],
        "preserve_weight": config.preserve_weight,
        "parameters": config.parameters,
        "lora": {"rank": plan.lora.rank, "alpha": plan.lora.alpha} if plan.lora else None,
        "steps": config.steps,
        "steps_run": len(records),
        "learning_rate": config.learning_rate,
        "seed": config.seed,
        "batch_size": config.batch_size,
        "neighbourhood": vars(config.neighbourhood),
        "training_images": training_images,
        "base_model": base_model,
        "started_from": started_from,
        "pack_version": PACK_VERSION,
    }
