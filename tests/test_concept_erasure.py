"""The mechanisms that erase a concept rather than one phrase of it: phrasings, the concept
neighbourhood (random and adversarial points, weighted by how the frozen model treats them) and the
per-element reduction."""
import math

import pytest
import torch

from comfyui_unlearn.divergences import divergence_loss, get_divergence
from comfyui_unlearn.unlearning import (PHRASING_TEMPLATES, Neighbourhood, erase, expanded_pairs, phrasings_of,
                                        resolve, ErasureConfig)
from comfyui_unlearn.unlearning import Step, Toolbox
from comfyui_unlearn.unlearning.closed_form.uce import (EditRows, edit_rows, paired_tokens, token_rows, uce_deltas,
                                                       uce_operator, uce_residuals)
from comfyui_unlearn.unlearning.neighbourhood import NeighbourhoodSampler
from comfyui_unlearn.unlearning.objectives.anchor import concept_weighted_target
from test_engine import discrepancy, make_concept
from toy_models import plan, toy_setup


def test_phrasings_keep_the_text_first_and_pair_each_template_on_both_sides():
    assert phrasings_of("a sneaker")[0] == "a sneaker"
    assert phrasings_of("a sneaker")[1:] == [t.format("a sneaker") for t in PHRASING_TEMPLATES]
    expanded = expanded_pairs([("a sneaker", "a sandal"), ("Van Gogh", "")])
    per_pair = len(PHRASING_TEMPLATES) + 1
    assert len(expanded) == 2 * per_pair
    assert expanded[3] == (PHRASING_TEMPLATES[2].format("a sneaker"), PHRASING_TEMPLATES[2].format("a sandal"), 0)
    assert {a for t, a, i in expanded if i == 1} == {""}          # an empty anchor stays the empty prompt
    assert [t for t, a, i in expanded if i == 1] == phrasings_of("Van Gogh")


def toolbox(seed=0):
    _, denoiser, deltas = toy_setup()
    return Toolbox(denoiser, deltas, get_divergence("kl").bind(), ErasureConfig(), torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("radius", [0.1, 0.5, 1.5])
def test_random_points_stay_inside_each_tokens_ball(radius):
    tools = toolbox()
    near = NeighbourhoodSampler(Neighbourhood(radius), tools)
    cond = make_concept().target
    moved = torch.stack([near.random_point(cond) for _ in range(200)])
    distance, norm = (moved - cond).norm(dim=-1), cond.norm(dim=-1)
    assert (distance <= radius * norm * (1 + 1e-5)).all()
    assert distance.max() > 0.8 * radius * norm.min()          # the ball is filled, not just its centre


def test_adversarial_points_raise_the_loss_over_random_ones_and_stay_in_the_ball():
    tools = toolbox()
    concept = make_concept()
    draw = tools.draw(concept.latents)
    anchor = tools.frozen(draw, concept.anchor)

    def loss_at(cond):
        return (tools.predict(draw, cond) - anchor).square().mean()

    random_losses, adversarial_losses = [], []
    for seed in range(8):
        tools.generator.manual_seed(seed)
        random_losses.append(loss_at(NeighbourhoodSampler(Neighbourhood(0.3), tools).random_point(concept.target)).item())
        tools.generator.manual_seed(seed)
        point = NeighbourhoodSampler(Neighbourhood(0.3, 3), tools).adversarial_point(concept.target, loss_at)
        adversarial_losses.append(loss_at(point).item())
        assert ((point - concept.target).norm(dim=-1) <= 0.3 * concept.target.norm(dim=-1) * (1 + 1e-5)).all()
    assert sum(adversarial_losses) > 1.05 * sum(random_losses)


def test_a_point_is_erased_as_far_as_the_frozen_model_treats_it_as_the_concept():
    tools = toolbox()
    concept = make_concept()
    draw = tools.draw(concept.latents)
    anchor = tools.frozen(draw, concept.anchor)
    erased = anchor - 1.0                                       # any erased target
    at = lambda cond: concept_weighted_target(Step(concept, target=cond), tools, draw, erased, anchor)  # noqa: E731
    assert torch.allclose(at(concept.target), erased)                       # the concept itself: erased
    assert torch.allclose(at(concept.anchor), tools.frozen(draw, concept.anchor))   # the anchor: held


def test_radius_zero_trains_exactly_as_without_a_neighbourhood_and_a_radius_changes_the_erasure():
    results = []
    for near in (None, Neighbourhood(0.0), Neighbourhood(0.5)):
        _, denoiser, deltas = toy_setup()
        config = dict(steps=6, learning_rate=1e-3) | ({"neighbourhood": near} if near else {})
        erase(denoiser, deltas, [make_concept()], plan(**config), preserve=[make_concept(3).target])
        results.append(deltas.export())
    plain, zero, moved = results
    assert all(torch.equal(plain[k], zero[k]) for k in plain)
    assert any(not torch.allclose(plain[k], moved[k]) for k in plain)


def test_a_neighbourhood_erases_the_concept_and_adversarial_points_train():
    for near in (Neighbourhood(0.5), Neighbourhood(0.2, 2)):
        _, denoiser, deltas = toy_setup()
        concept = make_concept()
        before = discrepancy(denoiser, deltas, concept)
        records = erase(denoiser, deltas, [concept], plan(steps=40, learning_rate=3e-3, neighbourhood=near))
        assert len(records) == 40
        assert discrepancy(denoiser, deltas, concept) < 0.7 * before


def test_neighbourhood_settings_are_checked():
    with pytest.raises(ValueError, match="radius and adversarial_steps"):
        resolve(ErasureConfig(neighbourhood=Neighbourhood(-0.1)))
    for objective in ("esd", "vdu"):
        with pytest.raises(ValueError, match="the concept neighbourhood applies to the anchor objective"):
            resolve(ErasureConfig(objective=objective, neighbourhood=Neighbourhood(0.5)))


def test_the_element_reduction_is_kl_itself_for_kl_and_weighs_elements_for_bounded_divergences():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(2, 4, 8, 8, generator=g), torch.zeros(2, 4, 8, 8)
    pred[0, :, :2] *= 6                                             # a few elements far off
    kl_mean, m = divergence_loss(pred, target, "kl")
    kl_element, m_element = divergence_loss(pred, target, "kl", reduction="element")
    assert torch.allclose(kl_mean, kl_element) and torch.allclose(m, m_element)
    for name in ("hellinger", "jensen_shannon"):
        per_sample = pred.clone().requires_grad_(True)
        per_element = pred.clone().requires_grad_(True)
        divergence_loss(per_sample, target, name)[0].backward()
        divergence_loss(per_element, target, name, reduction="element")[0].backward()
        far, near = (slice(None), slice(None, 2)), (slice(None), slice(2, None))
        ratio = lambda grad: grad[0][far].abs().mean() / grad[0][near].abs().mean()  # noqa: E731
        # a bounded divergence pulls the far-off elements less hard than MSE does, within one sample
        assert ratio(per_element.grad / pred) < 0.5 * ratio(per_sample.grad / pred)
    with pytest.raises(ValueError, match="closed forms only"):
        get_divergence("variational_kl").bind(reduction="element")


class TextProjection:   # what uce_deltas asks of a denoiser: the original weight
    def __init__(self, weight):
        self.base_weight = lambda key: weight


def uce_edit(weight, targets, destinations, kept, preserve_scale, regularisation):
    operator = uce_operator(targets, destinations, kept, preserve_scale, regularisation)
    return uce_deltas(TextProjection(weight), ["w"], operator)["w"]


@pytest.mark.parametrize("tokens", [3, 40], ids=["fewer target rows than the width", "more"])
def test_uce_maps_the_targets_keys_and_values_onto_the_anchors_and_holds_the_preserved(tokens):
    """Both of the delta's forms (two thin products where the targets' rows are few, E formed once otherwise)."""
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(6, 64, generator=g)
    target, anchor, kept = (torch.randn(1, tokens, 64, generator=g) for _ in range(3))
    targets, anchors = paired_tokens([(token_rows(target), token_rows(anchor))])
    kept = token_rows(kept)[:48 - tokens]     # well inside the width: every target row can reach its anchor exactly
    edited = weight + uce_edit(weight, targets, anchors, kept, preserve_scale=1.0, regularisation=1e-6)
    scale = (anchors.float() @ weight.T).abs().max()
    assert torch.allclose(targets.float() @ edited.T, anchors.float() @ weight.T, atol=1e-3 * scale)
    assert torch.allclose(kept.float() @ edited.T, kept.float() @ weight.T, atol=1e-3 * scale)
    # a large regularisation leaves the weight nearly alone
    assert uce_edit(weight, targets, anchors, kept, 1.0, 1e4).abs().max() < 1e-2 * weight.abs().max()


def test_uce_guidance_moves_the_targets_past_the_anchor_away_from_the_concept():
    g = torch.Generator().manual_seed(1)
    weight = torch.randn(6, 8, generator=g)
    target, anchor = torch.randn(1, 3, 8, generator=g), torch.randn(1, 3, 8, generator=g)
    targets, anchors = (t.float() for t in paired_tokens([(token_rows(target), token_rows(anchor))]))
    denoiser = TextProjection(weight)
    for guidance in (0.0, 0.5):
        rows = edit_rows([(target, anchor)], [], guidance, token_rows)
        delta = uce_deltas(denoiser, ["w"], uce_operator(*rows, 1.0, 1e-6))["w"]
        moved = targets @ (weight + delta).T
        destination = (anchors + guidance * (anchors - targets)) @ weight.T
        assert torch.allclose(moved, destination, atol=1e-3)


@pytest.mark.parametrize("tokens", [3, 40], ids=["fewer target rows than the width", "more"])
def test_uce_residuals_are_the_targets_gap_and_the_preserved_move_in_the_rows_space(tokens):
    g = torch.Generator().manual_seed(3)
    targets, destinations, kept = (torch.randn(count, 64, generator=g, dtype=torch.float64) for count in (tokens,
                                                                                                      tokens, 20))
    rows = EditRows(targets, destinations, kept)
    for regularisation, gap in ((1e-6, (0.0, 0.05)), (1e4, (0.95, 1.0))):
        operator = uce_operator(*rows, 1.0, regularisation)
        change = torch.eye(64, dtype=torch.float64) + operator.directions.T @ operator.solved.T      # I + E
        residuals = uce_residuals(operator, rows)
        left = (targets @ change.T - destinations).square().sum() / (targets - destinations).square().sum()
        moved = (kept @ change.T - kept).square().sum() / kept.square().sum()
        assert residuals["target_gap_left"] == pytest.approx(left.item(), rel=1e-9, abs=1e-12)
        assert residuals["preserved_moved"] == pytest.approx(moved.item(), rel=1e-9, abs=1e-12)
        assert gap[0] <= residuals["target_gap_left"] <= gap[1]


def test_text_states_mapped_back_undo_a_uce_edit_in_every_weight_at_once():
    """Why no UCE setting holds against an attacker who writes the text states: each edited weight is the original
    times one matrix I + E of the rows alone, so the target's states times (I + E)^-T give every edited weight its
    original output for the target."""
    g = torch.Generator().manual_seed(2)
    weights = {"k": torch.randn(6, 16, generator=g), "v": torch.randn(9, 16, generator=g)}
    denoiser = type("TwoProjections", (), {"base_weight": staticmethod(weights.__getitem__)})
    target, anchor, kept = (torch.randn(1, 3, 16, generator=g) for _ in range(3))
    rows = edit_rows([(target, anchor)], [kept], 3.0, token_rows)
    operator = uce_operator(*rows, 1.0, 1.0)
    deltas = uce_deltas(denoiser, ["k", "v"], operator)
    change = torch.eye(16, dtype=torch.float64) + operator.directions.T @ operator.solved.T
    attacked = torch.linalg.solve(change, rows.targets.T).T.float()        # T (I + E)^-T
    # I + E's condition number is about 130 here: float32's 1.2e-7 times it stays well inside 1e-4.
    for key, weight in weights.items():
        original = rows.targets.float() @ weight.T
        assert not torch.allclose(rows.targets.float() @ (weight + deltas[key]).T, original, atol=0.1)
        assert torch.allclose(attacked @ (weight + deltas[key]).T, original, atol=1e-4 * original.abs().max())


# One 3-token prompt in 8 dimensions: the default pull towards the original weights, sized for the dozens of phrasings
# a real concept pair expands to, would hold most of the edit back.
TOY_UCE = {"regularisation": 0.01}


def test_the_uce_objective_keeps_the_anchors_own_keys_and_values():
    """What the concept becomes must not move with it: the anchor's token states keep their keys and values."""
    _, denoiser, deltas = toy_setup()
    concept = make_concept()
    erase(denoiser, deltas, [concept], plan(objective="uce", steps=1, objective_params=TOY_UCE))
    for key, delta in deltas.export().items():
        anchor_change = (concept.anchor[0] @ delta.T).norm()
        target_change = (concept.target[0] @ delta.T).norm()
        assert anchor_change < 0.01 * target_change, key


def test_the_uce_objective_edits_in_one_step_and_lowers_the_discrepancy():
    _, denoiser, deltas = toy_setup()
    concept = make_concept()
    before = discrepancy(denoiser, deltas, concept)
    records = erase(denoiser, deltas, [concept], plan(objective="uce", steps=50, objective_params=TOY_UCE))
    assert len(records) == 1 and math.isnan(records[0].sigma)       # solved once: no step, no noise level drawn
    assert discrepancy(denoiser, deltas, concept) < 0.5 * before
    # the record says how much of the targets' way to their destinations is left, and what the preserved moved
    assert 0 <= records[0].terms["target_gap_left"] < 0.1 and 0 <= records[0].terms["preserved_moved"] < 0.01
    with pytest.raises(ValueError, match="needs full weight deltas"):
        resolve(ErasureConfig(objective="uce", parameters="lora"))


def test_uce_solves_over_the_rows_its_weights_read_after_the_familys_through_modules():
    """A DiT whose text embedder reads normed states (Qwen-Image's txt_norm, then txt_in): the edit maps the targets'
    normed rows onto the anchors' through W, leaves the bias alone, and solved over the raw states instead it misses."""
    from comfyui_unlearn.unlearning import Concept, FamilyProfile, ModuleDenoiser, WeightDeltas
    from comfyui_unlearn.unlearning.closed_form import EditInputs
    from comfyui_unlearn.unlearning.closed_form.uce import UCE

    torch.manual_seed(0)
    model = torch.nn.Module()
    model.txt_norm, model.txt_in = torch.nn.RMSNorm(8), torch.nn.Linear(8, 6)
    torch.nn.init.uniform_(model.txt_norm.weight, 0.5, 2.0)
    target, anchor = torch.randn(1, 3, 8), torch.randn(1, 3, 8)
    denoiser = ModuleDenoiser(model, None, WeightDeltas({}), predict=None)
    weight = model.txt_in.weight.detach().double()

    def edited(through):
        profile = FamilyProfile("Test Qwen", ("TestQwen",), {"text_input": r"(^|\.)txt_in\.weight$"},
                                text_input_through=through)
        inputs = EditInputs(denoiser, ["txt_in.weight"], profile, [Concept(target, anchor, None)], [])
        deltas = UCE(regularisation=1e-6, guidance=0.0).edit(inputs).deltas
        assert list(deltas) == ["txt_in.weight"]          # the bias is added after W on both sides: it stays
        return weight + deltas["txt_in.weight"].double()

    normed = lambda x: token_rows(model.txt_norm(x))  # noqa: E731
    gap = lambda w: ((normed(target) @ w.T - normed(anchor) @ weight.T).norm() / (normed(target) @ weight.T  # noqa: E731
                                                                                    - normed(anchor) @ weight.T).norm())
    assert gap(edited(("txt_norm",))) < 1e-3
    assert gap(edited(())) > 0.1
    assert gap(edited(("txt_norm", "no_such_module"))) < 1e-3      # a module the model lacks is skipped


def test_rows_pair_by_token_the_concepts_own_from_its_last_and_shared_ones_with_themselves():
    from comfyui_unlearn.unlearning.closed_form.uce import row_pairs

    start, end, pad = 1, 2, 0
    frame, van, go, gh, a, painting = 10, 20, 21, 22, 30, 31
    target = torch.tensor([start, frame, van, go, gh, end, pad, pad])     # "<frame> Van Gogh", padded to 8 rows
    anchor = torch.tensor([start, frame, a, painting, end, pad, pad, pad])
    paired = dict(zip(*row_pairs(target, anchor, 8, 8)))
    assert paired[4] == 3 and paired[3] == 2 and paired[2] == 2          # "gh" -> "painting", "go" -> "a", "van" -> "a"
    assert paired[5] == 4 and paired[0] == 0 and paired[1] == 1          # the end token and the frame: counterparts
    assert sorted(paired) == list(range(8))                              # every target row, once
    empty = torch.tensor([start, end, pad, pad, pad, pad, pad, pad])     # erased onto the empty prompt
    paired = dict(zip(*row_pairs(target, empty, 8, 8)))
    assert [paired[i] for i in (1, 2, 3, 4)] == [1, 1, 1, 1] and paired[5] == 1
    assert row_pairs(None, anchor, 8, 6) == (list(range(6)), list(range(6)))   # no ids: by position


def test_uce_solves_the_weights_that_read_the_pooled_vector_apart_one_row_per_prompt():
    """Flux's layout: txt_in reads the token states, vector_in.in_layer the pooled vector (its first columns); each
    is solved over its own rows, and the pooled vector of each target goes where the weight puts its anchor's."""
    from comfyui_unlearn.unlearning import FLUX_DEV, Concept, ModuleDenoiser, WeightDeltas
    from comfyui_unlearn.unlearning.closed_form import EditInputs
    from comfyui_unlearn.unlearning.closed_form.uce import UCE

    torch.manual_seed(0)
    model = torch.nn.Module()
    model.txt_in, model.vector_in = torch.nn.Linear(8, 6), torch.nn.Module()
    model.vector_in.in_layer = torch.nn.Linear(5, 6)
    pooled = {}
    concepts = []
    for _ in range(2):
        target, anchor = torch.randn(1, 3, 8), torch.randn(1, 3, 8)
        pooled[id(target)], pooled[id(anchor)] = torch.randn(1, 7), torch.randn(1, 7)   # wider than vector_in reads
        concepts.append(Concept(target, anchor, None))
    denoiser = ModuleDenoiser(model, None, WeightDeltas({}), predict=None, pooled=lambda cond: pooled[id(cond)])
    keys = ["txt_in.weight", "vector_in.in_layer.weight"]
    edit = UCE(regularisation=1e-6, guidance=0.0).edit(EditInputs(denoiser, keys, FLUX_DEV, concepts, []))
    assert sorted(edit.deltas) == keys and edit.terms["pooled_target_gap_left"] < 1e-3
    weight = model.vector_in.in_layer.weight.detach()
    for concept in concepts:
        moved = pooled[id(concept.target)][:, :5] @ (weight + edit.deltas["vector_in.in_layer.weight"]).T
        assert torch.allclose(moved, pooled[id(concept.anchor)][:, :5] @ weight.T, atol=1e-3)
    assert 0 <= edit.terms["target_gap_left"] < 1      # 12 token rows in 8 dimensions: moved, not exactly
