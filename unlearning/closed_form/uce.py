"""Unified Concept Editing (UCE, arXiv 2308.14761): a closed-form edit of the projections that read the
text (cross-attention keys and values on UNets), over every target phrasing and preserved prompt.

For a projection W and token states c (rows of the prompts' text states), UCE solves

    min_W' sum_i |W' t_i - W v_i|^2 + s_p sum_j |W' p_j - W p_j|^2 + lam |W' - W|^2

(t_i a target's tokens, a_i its anchor's at the same position, p_j a preserved prompt's tokens; the edit
preserves the anchors' own prompts too):
W' = (W V^T T + s_p W P^T P + lam W)(T^T T + s_p P^T P + lam I)^-1. UCE's destination is the anchor,
v_i = a_i; with `guidance` eta it lies past the anchor, away from the target: v_i = a_i + eta (a_i - t_i)
(ESD's negative guidance, arXiv 2303.07345, applied to UCE's destinations; ours). An erasure onto the
anchor leaves the concept as often as the model's own anchor images resemble it; eta > 0 goes further.
Tokens are paired by position (UCE pairs them from the concept's last token on; the engine does not
know the tokenizer), up to the shorter prompt. lam is `regularisation` times the mean eigenvalue of
T^T T, so that it means the same for every text encoder's scale and preserving more prompts does not
weaken the edit (UCE's own lam is absolute).
"""
from typing import TYPE_CHECKING, NamedTuple

import torch

from ...divergences import Parameter
from ..families import FamilyProfile
from ..parameters import select_parameters
from .base import ClosedFormEdit, Edit, EditInputs

if TYPE_CHECKING:
    from ..engine import Denoiser

PRESERVE_SCALE = Parameter("preserve_scale", 30.0, 0.0, 1000.0, "UCE's weight of keeping the preserved prompts' "
                                                                 "keys and values where they are.")
REGULARISATION = Parameter("regularisation", 1.0, 1e-6, 100.0, "UCE's pull towards the original weights, relative "
                                                                "to the target prompts' own scale: higher edits less.")
UCE_GUIDANCE = Parameter("guidance", 0.25, 0.0, 5.0, "How far past the anchor the targets' keys and values move, "
                                                     "away from the concept's: 0 = onto the anchor's (UCE), 0.25 = a "
                                                     "quarter of the anchor-to-target gap beyond it.")


def token_rows(states: torch.Tensor) -> torch.Tensor:
    """[tokens, width] float64 rows of a prompt's text states [1, tokens, width]."""
    return states.detach().reshape(-1, states.shape[-1]).to("cpu", torch.float64)


def paired_tokens(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(T, A): the targets' token rows and their anchors' at the same positions, over every pair."""
    targets, anchors = [], []
    for target, anchor in pairs:
        t, a = token_rows(target), token_rows(anchor)
        n = min(len(t), len(a))
        targets.append(t[:n])
        anchors.append(a[:n])
    return torch.cat(targets), torch.cat(anchors)


def uce_operator(targets: torch.Tensor, destinations: torch.Tensor, preserved: torch.Tensor, preserve_scale: float,
                 regularisation: float) -> torch.Tensor:
    """E = R (C + lam I)^-1 - I [width, width] (float64): the UCE edit of any projection W that reads these rows is
    W' - W = W E, since W' = W R (C + lam I)^-1 with R = V^T T + s_p P^T P + lam I and C = T^T T + s_p P^T P. It
    depends on the rows alone, so one solve serves every weight that reads the same text states."""
    gram_preserved = preserve_scale * (preserved.T @ preserved)
    # Relative to the targets' own scale alone: preserving more prompts must not weaken the edit.
    lam = regularisation * (targets.T @ targets).diagonal().mean().clamp_min(1e-12)
    identity = torch.eye(targets.shape[1], dtype=torch.float64)
    covariance = targets.T @ targets + gram_preserved + lam * identity
    right = destinations.T @ targets + gram_preserved + lam * identity
    return torch.linalg.solve(covariance, right.T).T - identity     # R C^-1 (C symmetric), less I


def uce_edit(weight: torch.Tensor, targets: torch.Tensor, destinations: torch.Tensor, preserved: torch.Tensor,
             preserve_scale: float, regularisation: float) -> torch.Tensor:
    """The delta W' - W of one projection weight [out, width] (float32, on the weight's device) that moves
    the `targets` token rows to where W puts the `destinations` rows."""
    return edit_by(weight, uce_operator(targets, destinations, preserved, preserve_scale, regularisation))


def edit_by(weight: torch.Tensor, operator: torch.Tensor) -> torch.Tensor:
    """W E for a weight W and an edit operator E (uce_operator), float32 on the weight's device."""
    return (weight.detach().to("cpu", torch.float64) @ operator).to(weight.device, torch.float32)


class EditRows(NamedTuple):
    """The token rows an edit is solved over."""

    targets: torch.Tensor         # T: the targets' rows
    destinations: torch.Tensor    # V: where each target row goes
    preserved: torch.Tensor       # P: rows whose outputs stay


def edit_rows(denoiser: "Denoiser", pairs: list, preserved: list, guidance: float) -> EditRows:
    """The rows of the (target, anchor) conditionings in `pairs` and of the `preserved` conditionings."""
    targets, anchors = paired_tokens([(denoiser.text_states(t), denoiser.text_states(a)) for t, a in pairs])
    kept = [token_rows(denoiser.text_states(c)) for c in preserved]
    return EditRows(targets, anchors + guidance * (anchors - targets),
                    torch.cat(kept) if kept else targets.new_zeros((0, targets.shape[1])))


def uce_deltas(denoiser: "Denoiser", keys: list, operator: torch.Tensor) -> dict:
    """{key: delta} of the UCE edit of each weight in `keys` (projections of the text states), all by the one
    operator (uce_operator) solved for their rows."""
    width = operator.shape[0]
    deltas = {}
    for key in keys:
        weight = denoiser.base_weight(key)
        if weight.dim() != 2 or weight.shape[1] != width:
            raise ValueError(f"UCE edits projections that read the text states directly, and {key} has shape "
                             f"{tuple(weight.shape)} for text {width} wide: this model family's "
                             f"cross-attention does not read them directly; choose another objective")
        deltas[key] = edit_by(weight, operator)
    return deltas


def relative_residuals(denoiser: "Denoiser", keys: list, operator: torch.Tensor, rows: EditRows) -> dict[str, float]:
    """How far the edit left the targets from their destinations, and how far it moved the preserved rows, each
    as a share of the same quantity before the edit (summed over the edited weights). Each is |X W^T|^2 summed
    over the weights W, that is <X^T X, G> with G the sum of W^T W: one width x width product per weight, not one
    per row; with W' = W (I + E): targets X = T (I + E)^T - V, preserved X = P E^T."""
    gram = sum(w.T @ w for w in (denoiser.base_weight(key).detach().to("cpu", torch.float64) for key in keys))
    measure = lambda x: (x.T @ x).mul(gram).sum().item()  # noqa: E731
    identity = torch.eye(operator.shape[0], dtype=torch.float64)
    gap = measure(rows.targets - rows.destinations)
    gap_left = measure(rows.targets @ (identity + operator).T - rows.destinations)
    moved, kept = measure(rows.preserved @ operator.T), measure(rows.preserved)
    return {"target_gap_left": gap_left / max(gap, 1e-30), "preserved_moved": moved / max(kept, 1e-30)}


class UCE(ClosedFormEdit):
    name, title = "uce", "UCE"
    description = "UCE: a closed-form edit of the cross-attention keys and values over all targets and preserved prompts."
    formula = ("W' = (W V^T T + s_p W P^T P + lam W)(T^T T + s_p P^T P + lam I)^-1 for each key and value projection "
               "W; T: the targets' token states, A: the anchors', V = A + eta (A - T); P: the preserved prompts' and "
               "the anchors' own")
    parameters = (PRESERVE_SCALE, REGULARISATION, UCE_GUIDANCE)

    @classmethod
    def check_family(cls, family: FamilyProfile) -> None:
        if not family.projections_read_text:
            raise ValueError(f"the uce objective edits projections that read the text encoder's states, and in "
                             f"{family.name} the text is transformed on its way to them (by a text stream or a shared "
                             f"MLP): choose an iterative objective (anchor or esd)")

    def edit(self, inputs: EditInputs) -> Edit:
        keys = select_parameters(inputs.keys, "cross_attention_kv", inputs.family)
        if not keys:
            raise ValueError("UCE edits the cross-attention keys and values, and the parameters preset trains none "
                             "of them: choose parameters 'cross_attention_kv'")
        # The anchors keep their own keys and values: what the concept becomes must not move with it.
        anchors = {c.anchor_text or id(c.anchor): c.anchor for c in inputs.concepts}
        pairs, preserved = [(c.target, c.anchor) for c in inputs.concepts], [*inputs.preserve, *anchors.values()]
        rows = edit_rows(inputs.denoiser, pairs, preserved, self.params["guidance"])
        operator = uce_operator(*rows, self.params["preserve_scale"], self.params["regularisation"])
        deltas = uce_deltas(inputs.denoiser, keys, operator)
        terms = relative_residuals(inputs.denoiser, keys, operator, rows)
        return Edit(deltas, terms["target_gap_left"], terms)
