"""The contract of a closed-form edit: solved once from the text states of the concepts and the preserved
prompts, no training loop. The engine calls `edit` and records one entry (engine.EditRun)."""
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..method import Method


@dataclass(frozen=True)
class EditInputs:
    """What a closed-form edit reads."""

    denoiser: Any                 # engine.Denoiser: text_states(cond) and base_weight(key)
    keys: list                    # the weights the parameters preset lets it change
    family: Any                   # the model's families.FamilyProfile
    concepts: list                # engine Concepts: target, anchor and anchor_text of each
    preserve: list                # conditionings whose outputs must stay


@dataclass
class Edit:
    """An edit's weight changes and what the run records of it."""

    deltas: dict[Any, torch.Tensor]      # key -> W' - W (float32)
    loss: float                          # the edit's own objective at its solution, as the step's loss
    terms: dict[str, float]              # its named parts


class ClosedFormEdit(Method):
    needs: ClassVar[tuple] = ()           # it reads text states only
    uses_divergence: ClassVar[bool] = False
    full_deltas_only: ClassVar[bool] = True
    # The parameters preset it edits, whatever the node's parameters input says: it solves for exactly the weights
    # that read the text states (families.py names them per family), and training others would only add zeros.
    edits: ClassVar[str] = "text_input"

    @classmethod
    def check_family(cls, family: Any) -> None:
        if cls.edits not in family.presets:
            raise ValueError(f"the {cls.name} objective edits linear weights that read the text encoder's states, and "
                             f"the {family.name} profile names none: choose an iterative objective (anchor or esd)")

    def edit(self, inputs: EditInputs) -> Edit:
        raise NotImplementedError(f"the {self.name} closed-form edit does not define edit(inputs)")
