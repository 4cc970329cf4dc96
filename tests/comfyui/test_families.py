"""Each supported family beyond SD1.x erased in a real graph on the CPU, from a tiny random-weight checkpoint
that ComfyUI's own loader detects as that family: the untouched branch bit-identical, the erased branch
different, and the saved erasure read by the stock LoraLoaderModelOnly (strength 1: the erased branch;
strength 0: the original)."""
from pathlib import Path

import pytest
from safetensors import safe_open
from graphs import erase_graph, latent, lora_graph, plain_graph, run, same, saved_lora_name, with_saved_erasure

from comfyui_unlearn.unlearning import read_erasure_metadata

pytestmark = pytest.mark.comfyui


@pytest.fixture(scope="module")
def tiny_sd2(runner):
    """checkpoints/tiny_sd2.safetensors (about 700 MiB: SD2's full OpenCLIP-H text encoder), written once."""
    import folder_paths
    from random_models import write_tiny_sd2

    write_tiny_sd2(Path(folder_paths.get_folder_paths("checkpoints")[0]) / "tiny_sd2.safetensors")
    return "tiny_sd2.safetensors"


def v_prediction(graph, nodes_taking_the_model):
    """The checkpoint's MODEL through the stock ModelSamplingDiscrete (v_prediction), as SD2's 768-v models
    sample, into each of `nodes_taking_the_model`."""
    graph["40"] = {"class_type": "ModelSamplingDiscrete",
                   "inputs": {"model": ["1", 0], "sampling": "v_prediction", "zsnr": False}}
    for node_id in nodes_taking_the_model:
        graph[node_id]["inputs"]["model"] = ["40", 0]
    return graph


def test_sd2_with_v_prediction_erases_in_the_graph_and_saves_a_lora_the_stock_loader_reads(runner, tiny_sd2):
    import folder_paths

    runner.reset()
    reference = latent(run(runner, v_prediction(plain_graph(tiny_sd2, seed=1), ["7"])), "20")
    graph = v_prediction(erase_graph(tiny_sd2, seed=1, learning_rate=1e-3), ["3", "7"])
    result = run(runner, with_saved_erasure(graph, "float32", "test/sd2"))
    erased = latent(result, "21")
    assert same(latent(result, "20"), reference) and not same(erased, reference)

    name = saved_lora_name(result)
    assert same(latent(run(runner, v_prediction(lora_graph(tiny_sd2, name, 1.0, seed=1), ["30"])), "20"), erased)
    assert same(latent(run(runner, v_prediction(lora_graph(tiny_sd2, name, 0.0, seed=1), ["30"])), "20"), reference)
    path = Path(folder_paths.get_folder_paths("loras")[0]) / name
    assert read_erasure_metadata(path)["base_model"]["family"] == "SD20"
    keys = safe_open(str(path), "pt").keys()
    assert keys and all(key.split(".")[0].endswith(("attn2_to_k", "attn2_to_v")) for key in keys)   # cross_attention_kv
