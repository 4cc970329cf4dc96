"""Saved erasures load in ComfyUI's stock LoRA loader; several concepts at once; preserved prompts."""
from pathlib import Path

import pytest
import torch
from graphs import (CHECKPOINT as CKPT, erase_graph, latent, lora_graph, run, same, sample_prompts,
                    saved_lora_name, with_saved_erasure)

from comfyui_unlearn.unlearning import PACK_VERSION, read_erasure_metadata

pytestmark = pytest.mark.comfyui


def loras_folder():
    import folder_paths

    return Path(folder_paths.get_folder_paths("loras")[0])


@pytest.mark.parametrize("parameters", ["cross_attention_kv", "lora"])
def test_saved_erasure_loads_in_the_stock_lora_loader(runner, references, parameters):
    graph = with_saved_erasure(erase_graph(CKPT, seed=1, parameters=parameters, learning_rate=1e-3), "float32",
                               f"test/{parameters}")
    result = run(runner, graph)
    erased, name = latent(result, "21"), saved_lora_name(result)
    assert not same(erased, references[1])

    # Strength 1: the same latents as the in-graph erased MODEL, bit for bit (float32 file, same loader code).
    assert same(latent(run(runner, lora_graph(CKPT, name, 1.0, seed=1)), "20"), erased)
    # Strength 0: exactly the original model.
    assert same(latent(run(runner, lora_graph(CKPT, name, 0.0, seed=1)), "20"), references[1])

    metadata = read_erasure_metadata(loras_folder() / name)
    assert metadata["concepts"] == [{"target": "Van Gogh", "anchor": "a painting"},
                                    {"target": "in the style of Van Gogh", "anchor": "a painting"}]
    assert metadata["preserve"] == ["a painting by Claude Monet"]
    assert (metadata["divergence"], metadata["parameters"], metadata["steps"], metadata["seed"]) == \
        ("hellinger", parameters, 3, 0)
    assert metadata["learning_rate"] == 1e-3 and metadata["pack_version"] == PACK_VERSION
    assert metadata["base_model"]["family"] == "SD15" and len(metadata["base_model"]["weights_sha256"]) == 64
    assert (metadata["lora"] is not None) == (parameters == "lora")


def test_float16_file_samples_within_a_stated_tolerance(runner):
    """float16 rounds each delta to 11 significant bits: the latents move by well under 1% of their size."""
    result = run(runner, with_saved_erasure(erase_graph(CKPT, seed=1, learning_rate=1e-3), "float16", "test/half"))
    erased, name = latent(result, "21"), saved_lora_name(result)
    loaded = latent(run(runner, lora_graph(CKPT, name, 1.0, seed=1)), "20")
    assert (loaded - erased).norm() / erased.norm() < 1e-2


def test_lora_rank_8_file_is_small(runner):
    result = run(runner, with_saved_erasure(erase_graph(CKPT, seed=1, parameters="lora", rank=8), "float16", "test/size"))
    lora_file = loras_folder() / saved_lora_name(result)
    # The tiny model has 3 transformer blocks x 8 attention projections of 320 x (320 | 768) (see README).
    expected = 3 * (6 * 8 * (320 + 320) + 2 * 8 * (320 + 768)) * 2
    assert expected < lora_file.stat().st_size < expected + 64 * 1024    # + the header and metadata


def two_concepts_and_a_preserved_prompt(graph):
    graph["2"]["inputs"].update(target="Snoopy", anchor="a dog", preserve="")
    graph["40"] = {"class_type": "UnlearnConceptPair",
                   "inputs": {"clip": ["1", 1], "target": "Van Gogh", "anchor": "a painting", "preserve": "a cat",
                              "concepts": ["2", 0]}}
    graph["3"]["inputs"]["concepts"] = ["40", 0]
    return graph


def test_two_concepts_and_a_preserved_prompt_run_in_one_graph(runner):
    graph = with_saved_erasure(two_concepts_and_a_preserved_prompt(erase_graph(CKPT, seed=1)), prefix="test/two")
    prompts = ["Snoopy", "Van Gogh"]
    erased = sample_prompts(graph, ["3", 0], prompts, 100, "test/erased")
    original = sample_prompts(graph, ["1", 0], prompts, 200, "test/original")
    result = run(runner, graph)
    assert all(not same(latent(result, erased[p]), latent(result, original[p])) for p in prompts)
    metadata = read_erasure_metadata(loras_folder() / saved_lora_name(result))
    assert [c["target"] for c in metadata["concepts"]] == ["Snoopy", "Van Gogh"] and metadata["preserve"] == ["a cat"]


def test_preserved_prompt_prediction_moves_less_than_without_the_term(runner):
    """Measured on the epsilon prediction at fixed noisy latents (sampling a random-weight model from pure
    noise visits latents unlike any it was trained at, so its samples say little about the prediction)."""
    import comfy.sd
    import folder_paths

    from comfyui_unlearn.nodes.comfy_model import ComfyDenoiser, model_conds, train_deltas, trainable_keys
    from comfyui_unlearn.unlearning import SD1, Concept, ErasureConfig, lora_state_dict, resolve

    model, clip, _, _ = comfy.sd.load_checkpoint_guess_config(folder_paths.get_full_path("checkpoints", CKPT))
    encode = lambda text: clip.encode_from_tokens_scheduled(clip.tokenize(text))  # noqa: E731
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    concepts = [Concept(encode("Snoopy"), encode("a dog"), latents), Concept(encode("Van Gogh"), encode("a painting"), latents)]
    cat = encode("a cat")

    def epsilon(patcher, cond):
        import comfy.model_management

        comfy.model_management.load_models_gpu([patcher])
        denoiser, g = ComfyDenoiser(patcher), torch.Generator().manual_seed(5)
        x0, noise = torch.randn(8, 4, 8, 8, generator=g), torch.randn(8, 4, 8, 8, generator=g)
        sigma = denoiser.schedule.sigma_at(torch.linspace(0.05, 0.95, 8, dtype=torch.float64)).float()
        x_t = denoiser.schedule.add_noise(x0, noise, sigma)
        with torch.no_grad():
            return denoiser.schedule.eps_from_x0(x_t, denoiser.predict_x0(x_t, sigma, model_conds(patcher, cond, (1, 4, 8, 8))), sigma)

    prompts = {"a cat": cat, "Snoopy": concepts[0].target, "Van Gogh": concepts[1].target}
    before = {text: epsilon(model, cond) for text, cond in prompts.items()}
    moved = {}
    for weight in (0.0, 10.0):
        deltas, _ = train_deltas(model, concepts, [cat], trainable_keys(model, SD1, "cross_attention"),
                                 resolve(ErasureConfig(20, 1e-4, preserve_weight=weight)), None)
        erased, _ = comfy.sd.load_lora_for_models(model, None, lora_state_dict(deltas), 1.0, 0.0)
        moved[weight] = {text: ((epsilon(erased, cond) - before[text]).norm() / before[text].norm()).item()
                         for text, cond in prompts.items()}
    assert moved[10.0]["a cat"] < 0.7 * moved[0.0]["a cat"], moved
    assert moved[10.0]["Snoopy"] > 0.05 and moved[10.0]["Van Gogh"] > 0.05, moved


@pytest.mark.parametrize("prefix", ["../escape", "/tmp/absolute", "C:/windows", "", "  "])
def test_bad_file_names_are_refused(runner, prefix):
    result = runner.run(with_saved_erasure(erase_graph(CKPT, seed=1), prefix=prefix))
    assert not result.success and "filename_prefix" in result.error, result.error


def test_unwritable_folder_gives_a_clear_error(runner):
    blocked = loras_folder() / "blocked"
    blocked.parent.mkdir(parents=True, exist_ok=True)
    blocked.write_text("a file where the subfolder should be")
    result = runner.run(with_saved_erasure(erase_graph(CKPT, seed=1), prefix="blocked/erasure"))
    assert not result.success and "cannot write" in result.error and "loras folder" in result.error, result.error
