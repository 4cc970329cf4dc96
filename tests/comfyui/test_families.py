"""Each supported family beyond SD1.x erased in a real graph on the CPU, from a tiny random-weight checkpoint
that ComfyUI's own loader detects as that family: the untouched branch bit-identical, the erased branch
different, and the saved erasure read by the stock LoraLoaderModelOnly (strength 1: the erased branch;
strength 0: the original)."""
import json
from pathlib import Path

import pytest
from graphs import SHIPPED, erase_graph, latent, lora_graph, plain_graph, run, same, saved_lora_name, with_saved_erasure
from safetensors import safe_open

from comfyui_unlearn.unlearning import read_erasure_metadata

pytestmark = pytest.mark.comfyui
WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows" / "api"


def written_checkpoint(writer_name, file_name):
    """checkpoints/file_name, written by random_models.<writer_name> (the family's full text encoders make it
    0.7-1.9 GiB)."""
    import folder_paths
    import random_models

    getattr(random_models, writer_name)(Path(folder_paths.get_folder_paths("checkpoints")[0]) / file_name)
    return file_name


@pytest.fixture(scope="module")
def tiny_sd2(runner):
    return written_checkpoint("write_tiny_sd2", "tiny_sd2.safetensors")


@pytest.fixture(scope="module")
def tiny_sdxl(runner):
    return written_checkpoint("write_tiny_sdxl", "tiny_sdxl.safetensors")


def v_prediction(graph, nodes_taking_the_model):
    """The checkpoint's MODEL through the stock ModelSamplingDiscrete (v_prediction), as SD2's 768-v models
    sample, into each of `nodes_taking_the_model`."""
    graph["40"] = {"class_type": "ModelSamplingDiscrete",
                   "inputs": {"model": ["1", 0], "sampling": "v_prediction", "zsnr": False}}
    for node_id in nodes_taking_the_model:
        graph[node_id]["inputs"]["model"] = ["40", 0]
    return graph


def check_erasure_and_lora(runner, checkpoint, family, workflow=SHIPPED, through=lambda graph, nodes: graph):
    """Erase in `workflow` (shrunk), `through` a node between the loader and the nodes taking the MODEL."""
    import folder_paths

    runner.reset()
    reference = latent(run(runner, through(plain_graph(checkpoint, seed=1), ["7"])), "20")
    graph = through(erase_graph(checkpoint, seed=1, workflow=workflow, learning_rate=1e-3), ["3", "7"])
    result = run(runner, with_saved_erasure(graph, "float32", f"test/{family}"))
    erased = latent(result, "21")
    assert same(latent(result, "20"), reference) and not same(erased, reference)

    name = saved_lora_name(result)
    assert same(latent(run(runner, through(lora_graph(checkpoint, name, 1.0, seed=1), ["30"])), "20"), erased)
    assert same(latent(run(runner, through(lora_graph(checkpoint, name, 0.0, seed=1), ["30"])), "20"), reference)
    path = Path(folder_paths.get_folder_paths("loras")[0]) / name
    assert read_erasure_metadata(path)["base_model"]["family"] == family
    keys = safe_open(str(path), "pt").keys()
    assert keys and all(key.split(".")[0].endswith(("attn2_to_k", "attn2_to_v")) for key in keys)   # cross_attention_kv


def test_sd2_with_v_prediction_erases_in_the_graph_and_saves_a_lora_the_stock_loader_reads(runner, tiny_sd2):
    check_erasure_and_lora(runner, tiny_sd2, "SD20", through=v_prediction)


def test_the_sdxl_example_workflow_erases_and_saves_a_lora_the_stock_loader_reads(runner, tiny_sdxl):
    """The shipped SDXL variant of the example (1024 px; shrunk here): SDXL's pooled text and size embedding
    reach the model through ComfyUI's own conditioning path, in training and in sampling."""
    check_erasure_and_lora(runner, tiny_sdxl, "SDXL", json.loads((WORKFLOWS / "erase_concept_sdxl.json").read_text()))
