"""Each supported family beyond SD1.x erased in a real graph on the CPU, from a tiny random-weight checkpoint
or diffusion model that ComfyUI's own loader detects as that family: the untouched branch bit-identical, the
erased branch different, and the saved erasure read by the stock LoraLoaderModelOnly (strength 1: the erased
branch; strength 0: the original)."""
import functools
import json
from pathlib import Path

import pytest
from graphs import (SHIPPED, erase_graph, fewest_passes, latent, lora_graph, plain_graph, run, same, saved_lora_name,
                    with_saved_erasure)
from safetensors import safe_open

from comfyui_unlearn.unlearning import read_erasure_metadata

pytestmark = pytest.mark.comfyui
WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows" / "api"
# Families sampled and trained with the erase graph's steps rather than the fewest passes: with one sampling step the
# tiny Wan's erased branch came out bit-identical to the original's, and its passes are cheap.
FULL_PASSES = ("WAN21_T2V",)


def written_model(writer_name, folder, file_name):
    """models/<folder>/file_name, written by random_models.<writer_name> (the SD2 and SDXL checkpoints hold their
    family's full text encoders: 0.7-1.9 GiB)."""
    import folder_paths
    import random_models

    getattr(random_models, writer_name)(Path(folder_paths.get_folder_paths(folder)[0]) / file_name)
    return file_name


@pytest.fixture(scope="module")
def tiny_dits(runner):
    """The tiny Flux.1 dev (about 1 GiB: Flux's width is fixed) in diffusion_models, and CLIP-L in text_encoders."""
    written_model("write_clip_l", "text_encoders", "tiny_clip_l.safetensors")
    written_model("write_tiny_flux", "diffusion_models", "tiny_flux.safetensors")


class TextEncoderOfWidth:
    """Test-only loader: ComfyUI's own CLIP (CLIP-L's tokenizer and text model, one layer) at another width with seeded
    random weights, for a family whose text encoder is beyond a CPU test and whose width no smaller encoder in
    ComfyUI gives (Qwen-Image: Qwen2.5-VL 7B's 3584)."""

    RETURN_TYPES = ("CLIP",)
    FUNCTION = "load"
    CATEGORY = "testing"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"width": ("INT", {"default": 768, "min": 64, "max": 8192, "step": 64})}}

    def load(self, width):
        import comfy.sd
        import comfy.sd1_clip
        import comfy.supported_models_base
        import random_models

        config = random_models.clip_l_config(hidden_size=width, num_attention_heads=width // 64,
                                             intermediate_size=width, num_hidden_layers=1)
        text_model = functools.partial(comfy.sd1_clip.SD1ClipModel, clip_model=comfy.sd1_clip.SDClipModel,
                                       textmodel_json_config=config)
        clip = comfy.sd.CLIP(comfy.supported_models_base.ClipTarget(comfy.sd1_clip.SD1Tokenizer, text_model))
        clip.load_sd(random_models.clip_text_state_dict(config))
        return (clip,)


@pytest.fixture(scope="module")
def text_encoder_of_width(runner):
    import nodes

    nodes.NODE_CLASS_MAPPINGS["TextEncoderOfWidth"] = TextEncoderOfWidth
    yield "TextEncoderOfWidth"
    del nodes.NODE_CLASS_MAPPINGS["TextEncoderOfWidth"]


@pytest.fixture(scope="module")
def tiny_sd2(runner):
    return written_model("write_tiny_sd2", "checkpoints", "tiny_sd2.safetensors")


@pytest.fixture(scope="module")
def tiny_sdxl(runner):
    return written_model("write_tiny_sdxl", "checkpoints", "tiny_sdxl.safetensors")


def v_prediction(graph, nodes_taking_the_model):
    """The checkpoint's MODEL through the stock ModelSamplingDiscrete (v_prediction), as SD2's 768-v models
    sample, into each of `nodes_taking_the_model`."""
    graph["40"] = {"class_type": "ModelSamplingDiscrete",
                   "inputs": {"model": ["1", 0], "sampling": "v_prediction", "zsnr": False}}
    for node_id in nodes_taking_the_model:
        graph[node_id]["inputs"]["model"] = ["40", 0]
    return graph


def on_tiny_dit(workflow="erase_concept_flux.json"):
    """The Flux (or another DiT's) example workflow with its text from CLIPLoader's SD3 type on CLIP-L alone
    (4096-wide token states, as T5-XXL and umT5-XXL give, and a 2048-wide pooled vector): those encoders' fixed
    4.7 or 5.7 billion weights are beyond a CPU test. The tests compare latents, so the VAE and the image nodes go;
    a checkpoint loader becomes the diffusion-model loader that erase_graph points at the tiny model."""
    graph = json.loads((WORKFLOWS / workflow).read_text())
    if graph["1"]["class_type"] == "CheckpointLoaderSimple":     # SD3.5's checkpoint: the tiny one is the DiT alone
        graph["1"] = {"class_type": "UNETLoader", "inputs": {"unet_name": "", "weight_dtype": "default"}}
    graph["15"] = {"class_type": "CLIPLoader",
                   "inputs": {"clip_name": "tiny_clip_l.safetensors", "type": "sd3", "device": "default"}}
    return {k: v for k, v in graph.items()
            if v["class_type"] not in ("VAELoader", "VAEDecode", "SaveImage", "SaveAnimatedWEBP")}


def check_erasure_and_lora(runner, checkpoint, family, workflow=SHIPPED, through=lambda graph, nodes: graph,
                           saved_modules=("attn2_to_k", "attn2_to_v"), objective=None):
    """Erase in `workflow` (shrunk, with the fewest passes but for FULL_PASSES) with `objective` (default: the workflow's),
    `through` a node between the loader and the nodes taking the MODEL; the erasure's file changes exactly the modules
    whose names end in `saved_modules`, each of them.
    Returns the erased branch's latent."""
    import folder_paths

    passes = (lambda graph: graph) if family in FULL_PASSES else fewest_passes
    runner.reset()
    reference = latent(run(runner, passes(through(plain_graph(checkpoint, seed=1, workflow=workflow), ["7"]))), "20")
    graph = through(erase_graph(checkpoint, seed=1, objective=objective, workflow=workflow, learning_rate=1e-3),
                    ["3", "7"])
    result = run(runner, with_saved_erasure(passes(graph), "float32", f"test/{family}"))
    erased = latent(result, "21")
    assert same(latent(result, "20"), reference) and not same(erased, reference)

    name = saved_lora_name(result)
    for strength, expected in ((1.0, erased), (0.0, reference)):
        loaded = run(runner, passes(through(lora_graph(checkpoint, name, strength, seed=1, workflow=workflow), ["30"])))
        assert same(latent(loaded, "20"), expected)
    path = Path(folder_paths.get_folder_paths("loras")[0]) / name
    assert read_erasure_metadata(path)["base_model"]["family"] == family
    modules = {key.split(".")[0] for key in safe_open(str(path), "pt").keys()}
    assert all(module.endswith(saved_modules) for module in modules)
    assert all(any(module.endswith(saved) for module in modules) for saved in saved_modules)   # each one saved
    return erased


def test_sd2_with_v_prediction_erases_in_the_graph_and_saves_a_lora_the_stock_loader_reads(runner, tiny_sd2):
    check_erasure_and_lora(runner, tiny_sd2, "SD20", through=v_prediction)


def test_the_sdxl_example_workflow_erases_and_saves_a_lora_the_stock_loader_reads(runner, tiny_sdxl):
    """The shipped SDXL variant of the example (1024 px; shrunk here): SDXL's pooled text and size embedding
    reach the model through ComfyUI's own conditioning path, in training and in sampling."""
    check_erasure_and_lora(runner, tiny_sdxl, "SDXL", json.loads((WORKFLOWS / "erase_concept_sdxl.json").read_text()))


def test_sd3_erases_its_text_streams_keys_and_values_and_saves_a_lora_the_stock_loader_reads(runner, tiny_dits):
    """MMDiT: the k and v rows of each joint block's fused text-stream qkv train as slices, saved under the names
    ComfyUI's loader maps onto those rows (diffusers' add_k_proj / add_v_proj)."""
    check_erasure_and_lora(runner, "tiny_sd3.safetensors", "SD3", on_tiny_dit("erase_concept_sd35.json"),
                           saved_modules=("add_k_proj", "add_v_proj"))


def test_the_flux_example_workflow_erases_and_saves_a_lora_the_stock_loader_reads(runner, tiny_dits):
    """The shipped Flux.1 dev variant (1024 px, cfg 1 with FluxGuidance; shrunk here): the double blocks' text
    keys and values, slices of txt_attn.qkv, saved as add_k_proj / add_v_proj."""
    check_erasure_and_lora(runner, "tiny_flux.safetensors", "Flux", on_tiny_dit(),
                           saved_modules=("add_k_proj", "add_v_proj"))


def test_chroma_erases_its_text_streams_keys_and_values_and_saves_a_lora_the_stock_loader_reads(runner, tiny_dits):
    """Chroma (one double and one single block, about 1.2 GiB), sampled with CFG: Flux's slices and names."""
    written_model("write_tiny_chroma", "diffusion_models", "tiny_chroma.safetensors")
    check_erasure_and_lora(runner, "tiny_chroma.safetensors", "Chroma", on_tiny_dit("erase_concept_chroma.json"),
                           saved_modules=("add_k_proj", "add_v_proj"))


def test_qwen_image_erases_its_text_streams_keys_and_values_and_saves_a_lora_the_stock_loader_reads(
        runner, tiny_dits, text_encoder_of_width):
    """Qwen-Image (one block, about 0.7 GiB; latents with a time axis of one), its text 3584 wide from a one-layer
    CLIP of that width: the text stream's own add_k_proj and add_v_proj train whole."""
    written_model("write_tiny_qwen_image", "diffusion_models", "tiny_qwen_image.safetensors")
    graph = qwen_image_graph(text_encoder_of_width)
    check_erasure_and_lora(runner, "tiny_qwen_image.safetensors", "QwenImage", graph,
                           saved_modules=("add_k_proj", "add_v_proj"))


def test_the_wan_example_workflow_erases_a_videos_cross_attention_and_saves_a_lora_the_stock_loader_reads(
        runner, tiny_dits):
    """The shipped Wan 2.1 text-to-video variant (two 128-wide blocks here): trained on single frames, sampled as a
    33-frame video (nine latent frames; 64 px here) in both branches; the cross-attention's k and v, saved under
    ComfyUI's generic names."""
    written_model("write_tiny_wan", "diffusion_models", "tiny_wan.safetensors")
    erased = check_erasure_and_lora(runner, "tiny_wan.safetensors", "WAN21_T2V",
                                    on_tiny_dit("erase_concept_wan.json"),
                                    saved_modules=("cross_attn_k", "cross_attn_v"))
    assert erased.shape == (1, 16, 9, 8, 8)


def qwen_image_graph(text_encoder_of_width):
    """The shipped Qwen-Image workflow, its text from a one-layer CLIP 3584 wide (Qwen2.5-VL 7B's width)."""
    graph = on_tiny_dit("erase_concept_qwen_image.json")
    graph["15"] = {"class_type": text_encoder_of_width, "inputs": {"width": 3584}}
    return graph


@pytest.mark.parametrize("family,model_file,writer,graph,text_input", [
    ("SD3", "tiny_sd3.safetensors", None, lambda _: on_tiny_dit("erase_concept_sd35.json"),
     ("context_embedder", "y_embedder_mlp_0")),
    ("Flux", "tiny_flux.safetensors", None, lambda _: on_tiny_dit(), ("txt_in", "vector_in_in_layer")),
    ("Chroma", "tiny_chroma.safetensors", "write_tiny_chroma", lambda _: on_tiny_dit("erase_concept_chroma.json"),
     ("txt_in",)),
    ("QwenImage", "tiny_qwen_image.safetensors", "write_tiny_qwen_image", qwen_image_graph, ("txt_in",)),
    ("WAN21_T2V", "tiny_wan.safetensors", "write_tiny_wan", lambda _: on_tiny_dit("erase_concept_wan.json"),
     ("text_embedding_0",)),
], ids=lambda value: value if isinstance(value, str) and "." not in value and "_" not in value else None)
def test_uce_edits_each_dits_text_input_and_saves_a_lora_the_stock_loader_reads(
        runner, tiny_dits, text_encoder_of_width, family, model_file, writer, graph, text_input):
    """The closed form on a DiT, with the workflow's parameters left at cross_attention_kv: it edits the family's
    text_input weights alone (SD3's context_embedder and pooled y_embedder.mlp.0, Flux's txt_in and pooled
    vector_in.in_layer, Chroma's and Qwen-Image's txt_in, the latter over txt_norm's rows, Wan's text_embedding.0),
    each saved, the untouched branch stays bit-identical, and the stock loader's strength 1 and 0 give the erased
    and the original branch."""
    if writer:
        written_model(writer, "diffusion_models", model_file)
    check_erasure_and_lora(runner, model_file, family, graph(text_encoder_of_width), saved_modules=text_input,
                           objective="uce")
