"""Unified Concept Editing (UCE, arXiv 2308.14761): a closed-form edit of the projections that read the
text (cross-attention keys and values on UNets), over every target phrasing and preserved prompt.

For a projection W and token states c (rows of the prompts' text states), UCE solves

    min_W' sum_i |W' t_i - W v_i|^2 + s_p sum_j |W' p_j - W p_j|^2 + lam |W' - W|^2

(t_i a target's tokens, a_i its anchor's at the same position, p_j a preserved prompt's tokens; the UCE
objective preserves the anchors' own prompts too):
W' = (W V^T T + s_p W P^T P + lam W)(T^T T + s_p P^T P + lam I)^-1. UCE's destination is the anchor,
v_i = a_i; with `guidance` eta it lies past the anchor, away from the target: v_i = a_i + eta (a_i - t_i)
(ESD's negative guidance, arXiv 2303.07345, applied to UCE's destinations; ours). An erasure onto the
anchor leaves the concept as often as the model's own anchor images resemble it; eta > 0 goes further.
Tokens are paired by position (UCE pairs them from the concept's last token on; the engine does not
know the tokenizer), up to the shorter prompt. lam is `regularisation` times the mean eigenvalue of
T^T T, so that it means the same for every text encoder's scale and preserving more prompts does not
weaken the edit (UCE's own lam is absolute).
"""
import torch


def token_rows(states: torch.Tensor) -> torch.Tensor:
    """[tokens, width] float64 rows of a prompt's text states [1, tokens, width]."""
    return states.detach().reshape(-1, states.shape[-1]).to("cpu", torch.float64)


def paired_tokens(pairs):
    """(T, A): the targets' token rows and their anchors' at the same positions, over every pair."""
    targets, anchors = [], []
    for target, anchor in pairs:
        t, a = token_rows(target), token_rows(anchor)
        n = min(len(t), len(a))
        targets.append(t[:n])
        anchors.append(a[:n])
    return torch.cat(targets), torch.cat(anchors)


def uce_edit(weight: torch.Tensor, targets, destinations, preserved, preserve_scale: float, regularisation: float):
    """The delta W' - W of one projection weight [out, width] (float32, on the weight's device) that moves
    the `targets` token rows to where W puts the `destinations` rows."""
    w = weight.detach().to("cpu", torch.float64)
    covariance = targets.T @ targets + preserve_scale * (preserved.T @ preserved)
    # Relative to the targets' own scale alone: preserving more prompts must not weaken the edit.
    lam = regularisation * (targets.T @ targets).diagonal().mean().clamp_min(1e-12)
    identity = torch.eye(w.shape[1], dtype=torch.float64)
    right = w @ (destinations.T @ targets) + preserve_scale * (w @ (preserved.T @ preserved)) + lam * w
    edited = torch.linalg.solve(covariance + lam * identity, right.T).T     # right @ inverse (symmetric)
    return (edited - w).to(weight.device, torch.float32)


def uce_deltas(denoiser, keys, pairs, preserved, preserve_scale, regularisation, guidance) -> dict:
    """{key: delta} of the UCE edit of each weight in `keys` (projections of the text states), for the
    (target, anchor) conditionings in `pairs` and the `preserved` conditionings."""
    targets, anchors = paired_tokens([(denoiser.text_states(t), denoiser.text_states(a)) for t, a in pairs])
    destinations = anchors + guidance * (anchors - targets)
    width = targets.shape[1]
    kept = [token_rows(denoiser.text_states(c)) for c in preserved]
    kept = torch.cat(kept) if kept else targets.new_zeros((0, width))
    deltas = {}
    for key in keys:
        weight = denoiser.base_weight(key)
        if weight.dim() != 2 or weight.shape[1] != width:
            raise ValueError(f"UCE edits projections that read the text states directly, and {key} has shape "
                             f"{tuple(weight.shape)} for text {width} wide: this model family's cross-attention does "
                             f"not read them directly; choose another objective")
        deltas[key] = uce_edit(weight, targets, destinations, kept, preserve_scale, regularisation)
    return deltas
