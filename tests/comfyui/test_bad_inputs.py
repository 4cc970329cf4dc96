"""Bad inputs stop with an error that names the input and the fix; the loaded model samples as before."""
import pytest
from graphs import CHECKPOINT as CKPT, TRAINING_DATA, add_option_node, erase_graph, latent, plain_graph, same, set_options

pytestmark = pytest.mark.comfyui


def with_latents(graph, node):
    graph["30"] = node
    graph[TRAINING_DATA]["inputs"]["latents"] = ["30", 0]
    return graph


def chained_twice(graph, class_type):
    add_option_node(graph, class_type, reuse=False)
    return graph


def on_tiny_sd3(graph):
    graph["31"] = {"class_type": "UNETLoader", "inputs": {"unet_name": "tiny_sd3.safetensors", "weight_dtype": "default"}}
    graph["3"]["inputs"]["model"] = ["31", 0]
    return graph


def pair(graph, target, anchor):
    graph["2"]["inputs"].update(target=target, anchor=anchor)
    return graph


CASES = {
    "empty target": (lambda g: pair(g, "  \n", "a painting"), "target is empty"),
    "more anchors than targets": (lambda g: pair(g, "Van Gogh", "a painting\na photo"),
                                  "anchor has 2 lines but target has 1"),
    "zero steps": (lambda g: g["3"]["inputs"].update(steps=0) or g, "steps"),
    "NaN learning rate": (lambda g: g["3"]["inputs"].update(learning_rate=float("nan")) or g,
                          "learning_rate must be a finite positive number"),
    "16-channel latents": (lambda g: with_latents(g, {"class_type": "EmptySD3LatentImage",
                                                      "inputs": {"width": 64, "height": 64, "batch_size": 1}}),
                           "latents has shape (1, 16, 8, 8) but this model takes 4-channel latents"),
    "unsupported model": (on_tiny_sd3, "model is a SD3 model, which this pack cannot train yet"),
    "vdu with lora": (lambda g: set_options(g, "vdu", parameters="lora"), "the vdu objective needs full weight deltas"),
    "critic options with a closed form": (lambda g: set_options(g, critic_warmup=2),
                                          "critic settings apply to the variational_* divergences only"),
    "LoRA options without the lora preset": (lambda g: set_options(g, rank=4),
                                             "LoRA options apply to the lora preset only"),
    "two training data nodes": (lambda g: chained_twice(g, "UnlearnTrainingData"),
                                "two Unlearn Training Data nodes are chained"),
    "images without a vae": (lambda g: g.update({"50": {"class_type": "EmptyImage", "inputs": {
        "width": 64, "height": 64, "batch_size": 1, "color": 0}}}) or g[TRAINING_DATA]["inputs"].update(
        images=["50", 0]) or g, "images is connected but vae is not"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_names_the_input_and_leaves_the_model_intact(runner, references, case):
    spoil, message = CASES[case]
    result = runner.run(spoil(erase_graph(CKPT, seed=1)))
    assert not result.success and message in result.error, result.error
    later = runner.run(plain_graph(CKPT, seed=2))
    assert later.success and same(latent(later, "20"), references[2])
