"""Unlearn Load Erasure: a saved erasure loads back at a strength, is refused for another base model or
a file that is no erasure, and training continues from it."""
from pathlib import Path

import pytest
import torch
from graphs import (CHECKPOINT as CKPT, add_option_node, erase_graph, latent, plain_graph, run, same, saved_lora_name,
                    through_loader, with_saved_erasure)

pytestmark = pytest.mark.comfyui


def loras_folder():
    import folder_paths

    return Path(folder_paths.get_folder_paths("loras")[0])


@pytest.fixture(scope="module")
def saved(runner):
    """An erasure of the example's concepts, saved in float32: (its file name, the erased branch's latent)."""
    result = run(runner, with_saved_erasure(erase_graph(CKPT, seed=1, learning_rate=1e-3), "float32", "test/load"))
    return saved_lora_name(result), latent(result, "21")


def load_graph(checkpoint, name, strength, seed=1):
    """checkpoint -> Unlearn Load Erasure -> the example's KSampler -> SaveLatent (node 20)."""
    return through_loader(checkpoint, "UnlearnLoadErasure", seed, erasure_name=name, strength=strength)


def test_a_saved_erasure_loads_back_at_strength_one_and_zero(runner, references, saved):
    name, erased = saved
    assert same(latent(run(runner, load_graph(CKPT, name, 1.0)), "20"), erased)
    assert same(latent(run(runner, load_graph(CKPT, name, 0.0)), "20"), references[1])
    half = latent(run(runner, load_graph(CKPT, name, 0.5)), "20")
    assert not same(half, erased) and not same(half, references[1])


def test_training_continues_from_a_loaded_erasure(runner, saved):
    import folder_paths

    from comfyui_unlearn.unlearning import read_erasure_metadata

    name, erased = saved
    graph = with_saved_erasure(erase_graph(CKPT, seed=1, learning_rate=1e-3), "float32", "test/continued")
    graph["30"] = {"class_type": "UnlearnLoadErasure", "inputs": {"model": ["1", 0], "erasure_name": name, "strength": 1.0}}
    start = add_option_node(graph, "UnlearnStartFrom")
    graph[start]["inputs"]["erasure"] = ["30", 1]
    result = run(runner, graph)
    continued = latent(result, "21")
    assert torch.isfinite(continued).all() and not same(continued, erased)
    metadata = read_erasure_metadata(Path(folder_paths.get_folder_paths("loras")[0]) / saved_lora_name(result))
    assert metadata["started_from"]["steps_run"] == 3 and metadata["started_from"]["started_from"] is None


def test_continuing_with_another_preset_is_refused(runner, saved):
    graph = erase_graph(CKPT, seed=1, parameters="cross_attention")
    graph["30"] = {"class_type": "UnlearnLoadErasure", "inputs": {"model": ["1", 0], "erasure_name": saved[0], "strength": 1.0}}
    graph[add_option_node(graph, "UnlearnStartFrom")]["inputs"]["erasure"] = ["30", 1]
    result = runner.run(graph)
    assert not result.success and "choose the parameters preset it was made with" in result.error, result.error


def write_other_files():
    from random_models import write_tiny_sd15
    from safetensors.torch import save_file

    import folder_paths

    other = Path(folder_paths.get_folder_paths("checkpoints")[0]) / "tiny_sd15_other.safetensors"
    if not other.exists():
        write_tiny_sd15(other, seed=1)
    save_file({"lora_unet_out_2.diff_b": torch.zeros(4)}, str(loras_folder() / "test" / "plain_lora.safetensors"))
    (loras_folder() / "test" / "truncated.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")
    return other.name


@pytest.mark.parametrize("case,message", [
    ("another base model", "was made for another base model"),
    ("a plain LoRA", "is not an erasure saved by Unlearn Save Erasure"),
    ("a truncated file", "cannot be read as a .safetensors file"),
])
def test_files_that_do_not_fit_are_refused_and_the_model_stays_intact(runner, references, saved, case, message):
    other = write_other_files()
    checkpoint, name = {"another base model": (other, saved[0]), "a plain LoRA": (CKPT, "test/plain_lora.safetensors"),
                        "a truncated file": (CKPT, "test/truncated.safetensors")}[case]
    result = runner.run(load_graph(checkpoint, name, 1.0))
    assert not result.success and message in result.error and "erasure_name" in result.error, result.error
    later = runner.run(plain_graph(CKPT, seed=2))
    assert later.success and same(latent(later, "20"), references[2])


def test_a_file_for_another_model_family_is_refused(runner, saved):
    graph = load_graph(CKPT, saved[0], 1.0)
    graph["31"] = {"class_type": "UNETLoader", "inputs": {"unet_name": "tiny_sd3.safetensors", "weight_dtype": "default"}}
    graph["30"]["inputs"]["model"] = ["31", 0]
    result = runner.run({k: v for k, v in graph.items() if k not in ("7", "20")} |
                        {"40": {"class_type": "UnlearnSaveErasure", "inputs": {"erasure": ["30", 1],
                                                                              "filename_prefix": "test/never", "dtype": "float16"}}})
    assert not result.success and "was made for a SD15 model, and this model is a SD3 model" in result.error, result.error
