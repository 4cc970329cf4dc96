"""Option nodes are generated from typed option groups: each node shows its group's fields as declared, its
tooltips read the registries, and what the chained nodes emit is typed options that make one ErasureConfig."""
from dataclasses import MISSING, fields

import pytest
import torch

pytestmark = pytest.mark.comfyui


def loaded_pack():
    """The copy of the pack that ComfyUI loaded from custom_nodes/ (the tests import another)."""
    import importlib

    import nodes

    return importlib.import_module(nodes.NODE_CLASS_MAPPINGS["UnlearnModel"].__module__.rsplit(".nodes.", 1)[0])


def shown_inputs(node_id):
    """ComfyUI's definition of a node's inputs: name -> (where, type, options)."""
    import nodes

    definition = nodes.NODE_CLASS_MAPPINGS[node_id].INPUT_TYPES()
    return {name: (where, spec[0], spec[1]) for where in ("required", "optional")
            for name, spec in definition.get(where, {}).items()}


def test_each_option_node_shows_its_groups_fields_as_declared(runner):
    import nodes

    for group in loaded_pack().nodes.options.OPTION_GROUPS:
        node = nodes.NODE_CLASS_MAPPINGS[group.node_id]
        schema = node.GET_SCHEMA()
        assert (schema.display_name, schema.description) == (group.display_name, group.description)
        assert [i.id for i in schema.inputs] == [f.name for f in fields(group)] + ["options"], group.node_id
        assert list(node.RETURN_TYPES) == ["UNLEARN_OPTIONS"]
        shown = shown_inputs(group.node_id)
        for f in fields(group):
            declared = f.metadata["input"]
            where, kind, options = shown[f.name]
            what = f"{group.node_id}.{f.name}"
            assert (where, kind) == ("optional" if declared.optional else "required", declared.kind.io_type), what
            if f.default is not MISSING and f.default is not None:
                assert options["default"] == f.default, what
            assert {key: options[key] for key in declared.limits} == declared.limits, what
            tooltip = declared.tooltip() if callable(declared.tooltip) else declared.tooltip
            assert tooltip.strip() and options["tooltip"] == tooltip, what


def test_every_option_node_input_has_a_tooltip(runner):
    import nodes

    for node in loaded_pack().nodes.options.option_nodes():
        node_id = node.GET_SCHEMA().node_id
        for name, (_, _, options) in shown_inputs(node_id).items():
            assert options.get("tooltip", "").strip(), f"{node_id}.{name}"
        assert nodes.NODE_CLASS_MAPPINGS[node_id].GET_SCHEMA().description


def test_training_data_tooltips_name_every_registered_family(runner, restore_registries):
    pack = loaded_pack()
    pack.unlearning.register_family(pack.unlearning.FamilyProfile(
        "Test family", ("TestFamilyConfig",), pack.unlearning.SD1.presets, resolution=(640, 320),
        sampling=pack.unlearning.Sampling(13, 3.5)))
    shown = shown_inputs("UnlearnTrainingData")
    tooltips = {name: shown[name][2]["tooltip"] for name in ("sampling_steps", "cfg", "width", "height")}
    for profile in pack.unlearning.FAMILIES.values():
        for name, tooltip in tooltips.items():
            assert profile.name in tooltip, f"{name} does not name {profile.name}"
    assert "13 on Test family" in tooltips["sampling_steps"] and "3.5 on Test family" in tooltips["cfg"]
    assert "640 on Test family" in tooltips["width"] and "320 on Test family" in tooltips["height"]
    assert "4 on Flux.1 schnell;" in tooltips["sampling_steps"]


def test_reduction_and_alpha_tooltips_list_the_registries(runner):
    pack = loaded_pack()
    shown = shown_inputs("UnlearnDivergenceOptions")
    assert all(f"- {name}: " in shown["reduction"][2]["tooltip"] for name in pack.divergences.REDUCTIONS)
    assert shown["reduction"][2]["options"] == list(pack.divergences.REDUCTIONS)
    assert "alpha and renyi divergences" in shown["alpha"][2]["tooltip"]


def emitted(node, **inputs):
    return node.execute(**inputs).result[0]


def node_of(group):
    from comfyui_unlearn.nodes.options import GROUP_NODES

    return next(node for node in GROUP_NODES if node.__name__ == group.node_id)


def test_chained_option_nodes_make_typed_options_and_one_config(runner):
    from comfyui_unlearn.divergences import CriticSettings
    from comfyui_unlearn.nodes.options import (OBJECTIVES, CriticOptions, DivergenceOptions, ErasureOptions,
                                               LoraOptions, MemoryOptions, NeighbourhoodOptions, TrainingData,
                                               objective_node)
    from comfyui_unlearn.unlearning import ErasureConfig, LoraSettings, Neighbourhood

    assert ErasureOptions().config(steps=3) == ErasureConfig(steps=3)
    assert (ErasureOptions().training, ErasureOptions().gradient_checkpointing) == (TrainingData(), "auto")

    options = emitted(node_of(DivergenceOptions), temperature=0.5, reduction="sum", alpha=2.0)
    options = emitted(node_of(CriticOptions), options=options, critic_learning_rate=1e-3, critic_warmup=5,
                      critic_width=16, critic_noise_level=False)
    options = emitted(node_of(TrainingData), options=options, batch_size=2, preserve_weight=0.5,
                      images_per_prompt=1, sampling_steps=0, cfg=0.0, width=0, height=0,
                      latents={"samples": torch.zeros(1, 4, 8, 8)})
    options = emitted(node_of(NeighbourhoodOptions), options=options, radius=0.25, adversarial_steps=1)
    options = emitted(node_of(LoraOptions), options=options, rank=4, lora_alpha=2.0)
    options = emitted(node_of(MemoryOptions), options=options, gradient_checkpointing="on")
    options = emitted(objective_node(OBJECTIVES["esd"]), options=options, guidance=2.0)

    assert options.critic == CriticSettings(1e-3, 5, 16, False)
    assert options.neighbourhood == Neighbourhood(0.25, 1) and options.lora == LoraSettings(4, 2.0)
    assert options.gradient_checkpointing == "on" and options.start is None
    assert options.training.batch_size == 2 and options.training.latents["samples"].shape == (1, 4, 8, 8)
    config = options.config(steps=3)
    assert (config.temperature, config.reduction, config.divergence_params) == (0.5, "sum", {"alpha": 2.0})
    assert (config.objective, config.objective_params) == ("esd", {"guidance": 2.0})
    assert (config.critic, config.lora, config.neighbourhood) == (options.critic, options.lora, options.neighbourhood)
    assert (config.batch_size, config.preserve_weight) == (2, 0.5)

    with pytest.raises(ValueError, match="options: two Unlearn LoRA Options nodes are chained into one Unlearn "
                                         "Model; keep one"):
        emitted(node_of(LoraOptions), options=options, rank=8, lora_alpha=8.0)


def test_training_data_samples_with_the_familys_defaults_where_it_sets_none(runner):
    from comfyui_unlearn.nodes.options import TrainingData
    from comfyui_unlearn.unlearning import FAMILIES

    for profile in FAMILIES.values():
        sampling = TrainingData().sampling(profile)
        assert (sampling.steps, sampling.cfg, (sampling.width, sampling.height)) == (
            profile.sampling.steps, profile.sampling.cfg, profile.size())
    chosen = TrainingData(sampling_steps=3, cfg=2.0, width=64, height=32).sampling(FAMILIES["SD15"])
    assert (chosen.steps, chosen.cfg, chosen.width, chosen.height) == (3, 2.0, 64, 32)
