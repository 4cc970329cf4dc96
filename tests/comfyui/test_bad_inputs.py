"""Bad inputs stop with an error that names the input and the fix; the loaded model samples as before.
docs/errors.md lists them with their messages."""
from pathlib import Path

import pytest
import torch
from graphs import (CHECKPOINT as CKPT, TRAINING_DATA, add_option_node, erase_graph, interrupting_hook, latent,
                    plain_graph, progress_hook, same, set_options)

pytestmark = pytest.mark.comfyui


def with_latents(graph, node):
    graph["30"] = node
    graph[TRAINING_DATA]["inputs"]["latents"] = ["30", 0]
    return graph


def chained_twice(graph, class_type):
    add_option_node(graph, class_type, reuse=False)
    return graph


def on_diffusion_model(graph, file_name):
    graph["31"] = {"class_type": "UNETLoader", "inputs": {"unet_name": file_name, "weight_dtype": "default"}}
    graph["3"]["inputs"]["model"] = ["31", 0]
    return graph


def pair(graph, target, anchor):
    graph["2"]["inputs"].update(target=target, anchor=anchor)
    return graph


CASES = {
    "empty target": (lambda g: pair(g, "  \n", "a painting"), "target is empty"),
    "more anchors than targets": (lambda g: pair(g, "Van Gogh", "a painting\na photo"),
                                  "anchor has 2 lines but target has 1"),
    "missing concept file": (lambda g: g["2"]["inputs"].update(concept_file="no_such_list.txt") or g,
                             "concept_file 'no_such_list.txt' cannot be read"),
    "zero steps": (lambda g: g["3"]["inputs"].update(steps=0) or g, "steps"),
    "NaN learning rate": (lambda g: g["3"]["inputs"].update(learning_rate=float("nan")) or g,
                          "learning_rate must be a finite positive number"),
    "16-channel latents": (lambda g: with_latents(g, {"class_type": "EmptySD3LatentImage",
                                                      "inputs": {"width": 64, "height": 64, "batch_size": 1}}),
                           "latents has shape (1, 16, 8, 8) but this model takes 4-channel latents"),
    "video latents": (lambda g: with_latents(g, {"class_type": "EmptyHunyuanLatentVideo",
                                                 "inputs": {"width": 64, "height": 64, "length": 5, "batch_size": 1}}),
                      "latents has shape (1, 16, 2, 8, 8) but this model takes 4-channel latents"),
    "unsupported model": (lambda g: on_diffusion_model(g, "tiny_hunyuan_dit.safetensors"),
                          "model is a HunyuanDiT model, which this pack cannot train yet"),
    "renyi of order 0": (lambda g: set_options(g, divergence="renyi", alpha=0.0),
                         "alpha = 0.0 cannot be used with the renyi divergence"),
    "vdu with lora": (lambda g: set_options(g, "vdu", parameters="lora"), "the vdu objective needs full weight deltas"),
    "critic options with a closed form": (lambda g: set_options(g, critic_warmup=2),
                                          "critic settings apply to the variational_* divergences only"),
    "LoRA options without the lora preset": (lambda g: set_options(g, rank=4),
                                             "LoRA options apply to the lora preset only"),
    "two training data nodes": (lambda g: chained_twice(g, "UnlearnTrainingData"),
                                "two Unlearn Training Data nodes are chained"),
    "images without a vae": (lambda g: with_image(g) or g, "images is connected but vae is not"),
    "both latents and images": (lambda g: with_image(g) or with_latents(g, {"class_type": "EmptyLatentImage", "inputs": {
        "width": 64, "height": 64, "batch_size": 1}}), "has both latents and images connected"),
    "no concepts": (lambda g: g["3"]["inputs"].pop("concepts") and g, "concepts"),
    "unknown divergence": (lambda g: g["3"]["inputs"].update(divergence="mse") or g, "divergence"),
    "zero learning rate": (lambda g: g["3"]["inputs"].update(learning_rate=0.0) or g, "learning_rate"),
    "negative temperature": (lambda g: set_options(g, temperature=-1.0), "temperature"),
    "objective parameter out of range": (lambda g: set_options(g, "esd", guidance=50.0), "guidance"),
    "two objective nodes": (lambda g: set_options(g, "esd") and chained_twice(g, "UnlearnObjectiveVDU"),
                            "two Unlearn Objective nodes are chained"),
    "neighbourhood with esd": (lambda g: set_options(g, "esd", radius=0.5),
                               "the concept neighbourhood applies to the anchor objective, and the objective is esd"),
    "element reduction with a variational divergence": (
        lambda g: set_options(g, divergence="variational_kl", reduction="element"), "closed forms only"),
    "300-character file name": (lambda g: g["13"]["inputs"].update(filename_prefix="x" * 300) or g,
                                "filename_prefix has a name of more than 200 characters"),
}


def with_image(graph):
    graph["50"] = {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}}
    graph[TRAINING_DATA]["inputs"]["images"] = ["50", 0]


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_names_the_input_and_leaves_the_model_intact(runner, references, case):
    spoil, message = CASES[case]
    result = runner.run(spoil(erase_graph(CKPT, seed=1)))
    assert not result.success and message in result.error, result.error
    later = runner.run(plain_graph(CKPT, seed=2))
    assert later.success and same(latent(later, "20"), references[2])


@pytest.mark.parametrize("target", ["Van Gogh " * 1111, "@#$%^&*()!~"])
def test_extreme_prompts_run_and_leave_the_model_intact(runner, references, target):
    """A 10,000-character prompt is encoded in 77-token chunks, like CLIPTextEncode does; punctuation alone
    is a prompt like any other."""
    graph = erase_graph(CKPT, seed=1)
    graph["2"]["inputs"]["target"] = target
    result = runner.run(graph)
    assert result.success, result.error
    assert same(latent(result, "20"), references[1]) and not same(latent(result, "21"), references[1])


def test_a_million_steps_show_progress_and_stop_on_interrupt(runner, references):
    hook, seen = interrupting_hook(lambda value, total: value >= 5)
    with progress_hook(hook):
        result = runner.run(erase_graph(CKPT, seed=1, steps=1_000_000))
    assert result.interrupted and seen and seen[-1][1] == 1_000_000 + 2     # + the training images' 2 sampling steps
    later = runner.run(plain_graph(CKPT, seed=2))
    assert later.success and same(latent(later, "20"), references[2])


def test_an_interrupt_while_training_images_are_sampled_leaves_nothing_behind(runner, references):
    hook, seen = interrupting_hook(lambda value, total: value >= 1)
    runner.reset()
    graph = erase_graph(CKPT, seed=1, images_per_prompt=3)
    with progress_hook(hook):
        assert runner.run(graph).interrupted and seen[-1][0] == 1   # after the first sampling step
    result = runner.run(graph)      # the re-queued graph samples its images again and erases
    assert result.success and same(latent(result, "20"), references[1]) and not same(latent(result, "21"), references[1])


def test_an_interrupt_during_the_save_leaves_no_partial_file(runner, references, monkeypatch):
    import comfy.model_management
    import folder_paths
    import safetensors.torch

    def interrupted_write(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise comfy.model_management.InterruptProcessingException()

    monkeypatch.setattr(safetensors.torch, "save_file", interrupted_write)
    graph = erase_graph(CKPT, seed=1)
    graph["13"]["inputs"]["filename_prefix"] = "test/interrupted_save"
    assert runner.run(graph).interrupted
    folder = Path(folder_paths.get_folder_paths("loras")[0]) / "test"
    assert not list(folder.glob("interrupted_save*"))
    monkeypatch.undo()       # SaveLatent below writes with safetensors too
    later = runner.run(plain_graph(CKPT, seed=2))
    assert later.success and same(latent(later, "20"), references[2])


def test_a_nul_byte_and_odd_characters_in_a_file_name_are_replaced(runner):
    import folder_paths

    graph = erase_graph(CKPT, seed=1)
    graph["13"]["inputs"]["filename_prefix"] = "test/odd\x00name?*"
    result = runner.run(graph)
    assert result.success, result.error
    assert "saved test/odd_name___00001.safetensors" in result.outputs["13"]["text"][0]
    assert (Path(folder_paths.get_folder_paths("loras")[0]) / "test" / "odd_name___00001.safetensors").is_file()


@pytest.fixture(scope="module")
def tiny_model_and_concepts(runner):
    import comfy.sd
    import folder_paths

    from comfyui_unlearn.nodes.concepts import UnlearnConceptPair

    model, clip, _, _ = comfy.sd.load_checkpoint_guess_config(folder_paths.get_full_path("checkpoints", CKPT))
    concepts = UnlearnConceptPair.execute(clip, "Van Gogh", "a painting").result[0]
    return model, concepts


def unlearn(model, concepts, options=None):
    from comfyui_unlearn.nodes.erase import UnlearnModel

    return UnlearnModel.execute(model, concepts, "kl", 3, 1e-4, 0, "cross_attention_kv", options)


def test_concepts_encoded_with_another_models_clip_are_refused(runner, references, tiny_model_and_concepts):
    """A 1024-wide encoding (SD2's text encoder) into SD1.5, which takes 768: no stock node makes one
    from this checkpoint, so the node is called as ComfyUI would call it."""
    from comfyui_unlearn.unlearning import ConceptPair, ConceptSet

    model, concepts = tiny_model_and_concepts
    wide = [[torch.randn(1, 77, 1024), {}]]
    other = ConceptSet([ConceptPair("Van Gogh", "a painting", wide, wide, wide)])
    with pytest.raises(ValueError, match="another model's text encoder .prompt width 1024; this model takes 768"):
        unlearn(model, other)
    later = runner.run(plain_graph(CKPT, seed=2))
    assert later.success and same(latent(later, "20"), references[2])


def test_an_empty_latent_is_refused(runner, references, tiny_model_and_concepts):
    from comfyui_unlearn.nodes.options import ErasureOptions, TrainingData

    model, concepts = tiny_model_and_concepts
    empty = TrainingData(latents={"samples": torch.zeros(0, 4, 8, 8)}, sampling_steps=20, cfg=7.0, width=64, height=64)
    options = ErasureOptions(training_data=empty)
    with pytest.raises(ValueError, match=r"latents is empty \(shape \(0, 4, 8, 8\)\)"):
        unlearn(model, concepts, options)
    later = runner.run(plain_graph(CKPT, seed=2))
    assert later.success and same(latent(later, "20"), references[2])


def test_kept_vocabulary_without_a_text_encoder_names_the_input(runner):
    """No stock loader makes a CLIP without a vocabulary, so the node is called as ComfyUI would call it."""
    from comfyui_unlearn.nodes.concepts import UnlearnConceptPair

    with pytest.raises(ValueError, match="keep_vocabulary 8 needs the text encoder's vocabulary: clip is empty.* Or "
                                         "set keep_vocabulary to 0"):
        UnlearnConceptPair.execute(None, "a sneaker", "a sandal", keep_vocabulary=8)
