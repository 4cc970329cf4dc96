"""The nodes' shapes: a small Unlearn Model, option nodes that plug in, the same erasure as its recorded
reference, and registries that the nodes read at definition time."""
import json
from pathlib import Path

import pytest
import torch
from graphs import CHECKPOINT as CKPT, erase_graph, latent, run, saved_lora_name, with_saved_erasure
from tolerances import FLOAT32_EPS, TRAINED_ULPS, assert_float32_close

pytestmark = pytest.mark.comfyui
REFERENCE = json.loads((Path(__file__).parents[1] / "data" / "default_erasure_reference.json").read_text())


def inputs_of(node_id):
    import nodes

    definition = nodes.NODE_CLASS_MAPPINGS[node_id].INPUT_TYPES()
    return {**definition["required"], **definition.get("optional", {})}


def test_unlearn_model_shows_eight_inputs_at_most(runner):
    assert list(inputs_of("UnlearnModel")) == ["model", "concepts", "divergence", "steps", "learning_rate", "seed",
                                               "parameters", "options"]


def test_every_option_node_chains_and_shows_only_its_own_settings(runner):
    from comfyui_unlearn.nodes.options import option_nodes
    from comfyui_unlearn.unlearning import OBJECTIVES

    option_ids = {node.GET_SCHEMA().node_id for node in option_nodes()}
    assert {"UnlearnDivergenceOptions", "UnlearnCriticOptions", "UnlearnTrainingData", "UnlearnLoraOptions",
            "UnlearnMemoryOptions", "UnlearnNeighbourhood", "UnlearnObjectiveAnchor", "UnlearnObjectiveESD",
            "UnlearnObjectiveVDU", "UnlearnObjectiveUCE"} <= option_ids
    for node_id in option_ids:
        assert "options" in inputs_of(node_id)
    assert set(inputs_of("UnlearnObjectiveESD")) == {"guidance", "trajectory_steps", "trajectory_cfg", "options"}
    assert set(inputs_of("UnlearnObjectiveAnchor")) == {"options"}
    assert len(option_ids) == 7 + len(OBJECTIVES)


def test_the_default_erasure_equals_its_recorded_reference(runner):
    """Recorded before the redesign, and again when the training images moved into the space the model
    denoises (process_latent_in): any other change to what the default graph computes fails here."""
    import folder_paths
    from safetensors.torch import load_file

    graph = erase_graph(CKPT, seed=1, divergence="kl", steps=10, learning_rate=5e-5)
    graph["3"]["inputs"]["seed"] = 0
    result = run(runner, with_saved_erasure(graph, "float32", "test/reference"))

    saved = load_file(str(Path(folder_paths.get_folder_paths("loras")[0]) / saved_lora_name(result)))
    assert sorted(saved) == sorted(REFERENCE["deltas"])
    for key, expected in REFERENCE["deltas"].items():
        delta = saved[key].double()
        # The sum cancels (|sum| is ~1/10,000 of the sum of |values|), so it is held to what the elements' own
        # tolerance gives it: independent errors of TRAINED_ULPS ulps of the typical value, norm / sqrt(n), add up
        # over n values to TRAINED_ULPS ulps of the norm (2.6e-5 here; another CPU moved a sum by 6.7e-6).
        assert delta.sum().item() == pytest.approx(expected["sum"], rel=0, abs=TRAINED_ULPS * FLOAT32_EPS
                                                   * expected["norm"]), key
        assert delta.norm().item() == pytest.approx(expected["norm"], rel=1e-5), key
        assert_float32_close(delta.flatten()[:8], expected["head"], TRAINED_ULPS, what=key)
    erased = latent(result, "21").flatten()
    # Sampled in float32 through the erased weights: another CPU's rounding, and its deltas' own, moved it by 8 ulps
    # of max|reference|; 256 leaves thirty times that.
    assert_float32_close(erased, REFERENCE["erased_latent"], 256, what="erased latent")


def loaded_pack():
    """The copy of the pack that ComfyUI loaded from custom_nodes/ (the tests import another)."""
    import importlib

    import nodes

    return importlib.import_module(nodes.NODE_CLASS_MAPPINGS["UnlearnModel"].__module__.rsplit(".nodes.", 1)[0])


def test_registered_divergence_objective_and_family_reach_the_nodes(runner, restore_registries, monkeypatch):
    import comfy.sd
    import folder_paths

    pack = loaded_pack()
    Divergence, Parameter, register = pack.divergences.Divergence, pack.divergences.Parameter, pack.divergences.register
    Objective, register_objective = pack.unlearning.Objective, pack.unlearning.register_objective
    FamilyProfile, register_family, family_for = (pack.unlearning.FamilyProfile, pack.unlearning.register_family,
                                                  pack.unlearning.family_for)
    erase_plan, option_nodes = pack.nodes.erase_plan, pack.nodes.options.option_nodes
    model_family, SD1 = pack.nodes.comfy_model.model_family, pack.unlearning.SD1

    register(Divergence("quartic", "A throwaway test divergence: g(m) = m^2 / 2 + m / 2.",
                        "m^2 / 2 + m / 2", lambda m: m * m / 2 + m / 2, lambda: 0.5))

    class Hold(Objective):
        name, title = "hold", "Hold Still"
        description = "A throwaway test objective with one parameter, to see its option node appear."
        formula = "none"
        parameters = (Parameter("firmness", 2.0, 0.0, 5.0, "How firmly to hold."),)

    register_objective(Hold)
    model, _, _, _ = comfy.sd.load_checkpoint_guess_config(folder_paths.get_full_path("checkpoints", CKPT))
    renamed = FamilyProfile("Test renamed SD1", (model_family(model),), SD1.presets, resolution=256)
    register_family(renamed)

    assert "quartic" in inputs_of("UnlearnModel")["divergence"][1]["options"]
    hold = next(n for n in option_nodes() if n.GET_SCHEMA().node_id == "UnlearnObjectiveHoldStill")
    schema = hold.GET_SCHEMA()
    assert schema.display_name == "Unlearn Objective: Hold Still"
    assert [i.id for i in schema.inputs] == ["firmness", "options"]
    assert family_for(model_family(model)) is renamed
    # A graph erases with the registered divergence, and the registered profile's resolution (256 px:
    # 32 x 32 latents) is what the node samples its training images at when no size is given.
    sizes, real = [], erase_plan.sampled_latents

    def recording(model, family, prompt, negative, settings, seed, on_step=None):
        sizes.append((family.name, settings.width, settings.height))
        return real(model, family, prompt, negative, settings, seed, on_step)

    monkeypatch.setattr(erase_plan, "sampled_latents", recording)
    erased = latent(run(runner, erase_graph(CKPT, seed=1, divergence="quartic", width=0, height=0,
                                            sampling_steps=1, images_per_prompt=1)), "21")
    assert torch.isfinite(erased).all() and set(sizes) == {("Test renamed SD1", 256, 256)}
