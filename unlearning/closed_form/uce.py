"""Unified Concept Editing (UCE, arXiv 2308.14761): a closed-form edit of the linear weights that read the
text encoder's states (each family's `text_input` preset: a UNet's cross-attention keys and values, a DiT's text
embedder), over every target phrasing and preserved prompt.

For a projection W and token states c (rows of the prompts' text states), UCE solves

    min_W' sum_i |W' t_i - W v_i|^2 + s_p sum_j |W' p_j - W p_j|^2 + lam |W' - W|^2

(t_i a target's tokens, a_i the anchor's token paired with it, p_j a preserved prompt's tokens, each as the
weights read it: after the family's `text_input_through` modules, such as Qwen-Image's RMSNorm; the edit
preserves the anchors' own prompts too):
W' = (W V^T T + s_p W P^T P + lam W)(T^T T + s_p P^T P + lam I)^-1. UCE's destination is the anchor,
v_i = a_i; with `guidance` eta it lies past the anchor, away from the target: v_i = a_i + eta (a_i - t_i)
(ESD's negative guidance, arXiv 2303.07345, applied to UCE's destinations; ours). An erasure onto the
anchor leaves the concept as often as the model's own anchor images resemble it; eta > 0 goes further.
Tokens are paired by the token ids behind them where the node knows them (row_pairs: the concept's own
tokens aligned from its last, as UCE does; shared tokens with their counterparts), by position otherwise.
lam is `regularisation` times the mean eigenvalue of T^T T, so that it means the same for every text encoder's
scale and preserving more prompts does not weaken the edit (UCE's own lam is absolute). A layer's bias is
added after W on both sides (W' t + b = W v + b), so it stays. Every weight that reads the same rows takes the
same operator E (W' = W (I + E)): one solve.
An edit at a DiT's text embedder changes what every block sees of every token of a prompt that shares the
target's rows, so the preserved prompts' rows matter more there than at one UNet layer's keys and values.
"""
import difflib
import functools
import re
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

import torch

from ...divergences import Parameter
from ..parameters import select_parameters, weight_name
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


def paired_tokens(pairs: list[tuple]) -> tuple[torch.Tensor, torch.Tensor]:
    """(T, A): the targets' token rows and the anchor row each is paired with (row_pairs), over every pair of
    (target rows, anchor rows [tokens, width], target token ids or None, anchor token ids or None)."""
    targets, anchors = [], []
    for t, a, *ids in pairs:
        target_index, anchor_index = row_pairs(*(ids or (None, None)), len(t), len(a))
        targets.append(t[target_index])
        anchors.append(a[anchor_index])
    return torch.cat(targets), torch.cat(anchors)


def row_pairs(target_ids: torch.Tensor | None, anchor_ids: torch.Tensor | None, target_rows: int,
              anchor_rows: int) -> tuple[list[int], list[int]]:
    """(target rows, their anchor rows). With the token ids behind the rows, they are aligned by token: the tokens
    both prompts share (the sentence frame, the end token, padding) with their counterparts, the concept's own
    tokens with the anchor's that stand in their place, aligned from the end (the last with the last, extra
    leading target tokens with the anchor's first), and target tokens with no counterpart (an empty anchor) with
    the anchor's row where they would be (its end token). "Van Gogh" against "a painting" so pairs "Gogh" with
    "painting" and the end token with the end token, where pairing by position, up to the shorter prompt (without
    the ids), would pair unrelated tokens once the two differ in length."""
    if target_ids is None or anchor_ids is None:
        rows = min(target_rows, anchor_rows)
        return list(range(rows)), list(range(rows))
    matcher = difflib.SequenceMatcher(None, target_ids.tolist(), anchor_ids.tolist(), autojunk=False)
    pairs = []
    for operation, t_start, t_end, a_start, a_end in matcher.get_opcodes():
        if operation == "equal":
            pairs += zip(range(t_start, t_end), range(a_start, a_end))
        elif operation == "replace":
            pairs += [(i, max(a_start, a_end - (t_end - i))) for i in range(t_start, t_end)]
        elif operation == "delete":
            pairs += [(i, min(a_start, anchor_rows - 1)) for i in range(t_start, t_end)]
    return [t for t, _ in pairs], [a for _, a in pairs]


class UCEOperator(NamedTuple):
    """The UCE edit of any weight W that reads the rows, in low-rank form: W' - W = W E with E = D^T X^T.

    With C = T^T T + s_p P^T P + lam I and R = V^T T + s_p P^T P + lam I, UCE's W' = W R C^-1, and R - C = D^T T with
    D = V - T, so E = D^T T C^-1 = D^T X^T, X = C^-1 T^T: of rank at most the number of target rows. It depends on
    the rows alone, so one solve serves every weight that reads the same text states."""

    directions: torch.Tensor      # D = V - T [targets, width], float64
    solved: torch.Tensor          # X = C^-1 T^T [width, targets], float64


def uce_operator(targets: torch.Tensor, destinations: torch.Tensor, preserved: torch.Tensor, preserve_scale: float,
                 regularisation: float) -> UCEOperator:
    """The edit operator for these rows (UCEOperator). C is lam I plus the Gram matrix of Z = [T; sqrt(s_p) P]; with
    fewer rows than the width, X comes from Woodbury's identity, C^-1 = (I - Z^T (lam I + Z Z^T)^-1 Z) / lam, a
    rows x rows system instead of a width x width one (100 concepts of 8 tokens on a 4096-wide T5: 1000 x 1000)."""
    # Relative to the targets' own scale alone: preserving more prompts must not weaken the edit.
    lam = regularisation * (targets.square().sum() / targets.shape[1]).clamp_min(1e-12)
    rows = torch.cat([targets, preserve_scale ** 0.5 * preserved])
    if len(rows) < targets.shape[1]:
        inner = rows @ rows.T
        inner.diagonal().add_(lam)
        # Z T^T is the first len(T) columns of Z Z^T, T being Z's first rows.
        rows_by_targets = inner[:, :len(targets)] - lam * torch.eye(len(rows), len(targets), dtype=torch.float64)
        correction = torch.cholesky_solve(rows_by_targets, torch.linalg.cholesky(inner))
        solved = (targets.T - rows.T @ correction) / lam
    else:
        covariance = rows.T @ rows
        covariance.diagonal().add_(lam)
        solved = torch.cholesky_solve(targets.T.contiguous(), torch.linalg.cholesky(covariance))
    return UCEOperator(destinations - targets, solved)


class EditRows(NamedTuple):
    """The token rows an edit is solved over."""

    targets: torch.Tensor         # T: the targets' rows
    destinations: torch.Tensor    # V: where each target row goes
    preserved: torch.Tensor       # P: rows whose outputs stay


def text_rows(denoiser: "Denoiser", cond: Any, through: tuple = ()) -> torch.Tensor:
    """The rows the edited weights read for a conditioning: its text states, through each module in `through` (paths
    in the diffusion model) that the model has."""
    states = denoiser.text_states(cond)
    for path in through:
        module = denoiser.submodule(path)
        if module is not None:
            states = module(states)
    return token_rows(states)


def pooled_rows(denoiser: "Denoiser", cond: Any, width: int) -> torch.Tensor:
    """The one row a weight of input `width` reads of a conditioning's pooled text vector: its first `width`
    columns (Flux's vector_in reads the first vec_in_dim of ComfyUI's y)."""
    pooled = denoiser.pooled_states(cond)
    if pooled is None:
        raise ValueError("UCE edits a weight that reads the pooled text vector, and the conditioning has none: "
                         "encode the concepts with this model's own text encoder")
    return token_rows(pooled[..., :width].reshape(1, 1, width))


def edit_rows(pairs: list, preserved: list, guidance: float, rows: Callable[[Any], torch.Tensor]) -> EditRows:
    """The rows, by `rows` (conditioning -> the rows an edited weight reads), of the (target, anchor[, target token
    ids, anchor token ids]) conditionings in `pairs` and of the `preserved` conditionings."""
    targets, anchors = paired_tokens([(rows(t), rows(a), *ids) for t, a, *ids in pairs])
    kept = [rows(c) for c in preserved]
    return EditRows(targets, anchors + guidance * (anchors - targets),
                    torch.cat(kept) if kept else targets.new_zeros((0, targets.shape[1])))


def uce_deltas(denoiser: "Denoiser", keys: list, operator: UCEOperator) -> dict:
    """{key: delta} of the UCE edit of each weight in `keys`, all by the one operator solved for the rows they read,
    computed in float32 on each weight's device. The solve is float64, where its conditioning needs it; the
    per-weight products are sums of well-scaled terms, and in float32 they run at nearly twice float64's rate on a
    CPU (and on consumer GPUs many times it): they are most of an erasure's time on a UNet's dozens of keys and
    values."""
    width, targets = operator.solved.shape
    # Few target rows against the width: each delta is two thin products, (W D^T) X^T; many: E = D^T X^T is formed
    # once and each delta is W E.
    factors = ([operator.directions.T, operator.solved.T] if 2 * targets < width else
               [operator.directions.T @ operator.solved.T])
    on_device = {}                # device: the factors in float32 there
    deltas = {}
    for key in keys:
        weight = _text_weight(denoiser, key, width)
        if weight.device not in on_device:
            on_device[weight.device] = [factor.to(weight) for factor in factors]
        deltas[key] = functools.reduce(torch.matmul, on_device[weight.device], weight)
    return deltas


def uce_residuals(operator: UCEOperator, rows: EditRows) -> dict[str, float]:
    """How far the edit left the targets from their destinations and how far it moved the preserved rows, each
    as a share of the same quantity before the edit, in the rows the weights read: the terms of UCE's objective
    for W = I, whose minimiser is I + E, as W (I + E) is every other W's. The targets go from T - V = -D to
    T (I + E)^T - V = T X D - D, and the preserved rows move by P E^T = P X D (multi_dot multiplies in the
    cheaper order for the rows' count against the width)."""
    square = lambda rows: rows.square().sum().item()  # noqa: E731
    left = torch.linalg.multi_dot([rows.targets, operator.solved, operator.directions]) - operator.directions
    moved = torch.linalg.multi_dot([rows.preserved, operator.solved, operator.directions])
    return {"target_gap_left": square(left) / max(square(operator.directions), 1e-30),
            "preserved_moved": square(moved) / max(square(rows.preserved), 1e-30)}


def _text_weight(denoiser: "Denoiser", key: str, width: int) -> torch.Tensor:
    weight = denoiser.base_weight(key)
    if weight.dim() != 2 or weight.shape[1] != width:
        raise ValueError(f"UCE edits weights that read the text states directly, and {key} has shape "
                         f"{tuple(weight.shape)} for text {width} wide: choose another objective")
    return weight.detach().float()


class UCE(ClosedFormEdit):
    name, title = "uce", "UCE"
    description = "UCE: a closed-form edit of the weights that read the text, over all targets and preserved prompts."
    formula = ("W' = (W V^T T + s_p W P^T P + lam W)(T^T T + s_p P^T P + lam I)^-1 for each weight W that reads "
               "the text; T: the targets' token states, A: the anchors', V = A + eta (A - T); P: the preserved "
               "prompts' and the anchors' own")
    parameters = (PRESERVE_SCALE, REGULARISATION, UCE_GUIDANCE)

    def edit(self, inputs: EditInputs) -> Edit:
        keys = select_parameters(inputs.keys, self.edits, inputs.family)
        if not keys:
            raise ValueError(f"UCE edits the weights that read the text encoder's states ({self.edits}), and this "
                             f"{inputs.family.name} model has none: choose an iterative objective (anchor or esd)")
        # The anchors keep their own keys and values: what the concept becomes must not move with it.
        anchors = {c.anchor_text or id(c.anchor): c.anchor for c in inputs.concepts}
        pairs = [(c.target, c.anchor, c.target_tokens, c.anchor_tokens) for c in inputs.concepts]
        preserved = [*inputs.preserve, *anchors.values()]
        pooled = inputs.family.pooled_input
        pooled_keys = [key for key in keys if pooled and re.search(pooled, weight_name(key))]
        token_keys = [key for key in keys if key not in pooled_keys]
        deltas, terms = {}, {}
        # One solve per space the weights read: the token states (after the family's `through` modules), and where
        # the family has one, the pooled vector, one row per prompt.
        if token_keys:
            rows = functools.partial(text_rows, inputs.denoiser, through=inputs.family.text_input_through)
            deltas, terms = self.solved(inputs.denoiser, token_keys, edit_rows(pairs, preserved, self.params[
                "guidance"], rows))
        if pooled_keys:
            width = inputs.denoiser.base_weight(pooled_keys[0]).shape[1]
            rows = functools.partial(pooled_rows, inputs.denoiser, width=width)
            pooled_deltas, pooled_terms = self.solved(inputs.denoiser, pooled_keys, edit_rows(
                [pair[:2] for pair in pairs], preserved, self.params["guidance"], rows))
            deltas.update(pooled_deltas)
            terms.update({f"pooled_{name}": value for name, value in pooled_terms.items()})
        return Edit(deltas, terms.get("target_gap_left", terms.get("pooled_target_gap_left")), terms)

    def solved(self, denoiser: "Denoiser", keys: list, rows: EditRows) -> tuple[dict, dict[str, float]]:
        operator = uce_operator(*rows, self.params["preserve_scale"], self.params["regularisation"])
        return uce_deltas(denoiser, keys, operator), uce_residuals(operator, rows)
