"""API-format graphs for the ComfyUI tests, built from the shipped example workflow."""
import contextlib
import copy
import json
from pathlib import Path

import comfy_harness
import torch
from safetensors.torch import load_file

CHECKPOINT = "tiny_sd15.safetensors"   # written by the `runner` fixture (tests/conftest.py)
WORKFLOW = Path(__file__).resolve().parents[2] / "workflows" / "api" / "erase_concept.json"
SHIPPED = json.loads(WORKFLOW.read_text())
UNLEARN, TRAINING_DATA = "3", "14"      # the example's Unlearn Model and its Unlearn Training Data
FAST_UNLEARN = dict(steps=3, learning_rate=1e-4, images_per_prompt=2, sampling_steps=2, width=64, height=64)


def erase_graph(checkpoint, seed=42, objective=None, workflow=SHIPPED, **settings):
    """The example workflow (or another of the same shape) shrunk for the CPU (64 px, 3 sampling steps),
    saving both latents.

    Each setting goes to the node that declares it: Unlearn Model, its Unlearn Training Data, or an
    option node added to the chain (divergence, critic, LoRA, memory, and the objective's node when
    `objective` is given)."""
    graph = copy.deepcopy(workflow)
    graph["1"]["inputs"]["unet_name" if graph["1"]["class_type"] == "UNETLoader" else "ckpt_name"] = checkpoint
    graph["6"]["inputs"].update(width=64, height=64)
    for sampler in ("7", "8"):
        graph[sampler]["inputs"].update(steps=3, seed=seed)
    graph["20"] = _save_latent(["7", 0], "test/original")
    graph["21"] = _save_latent(["8", 0], "test/erased")
    set_options(graph, objective, **{**FAST_UNLEARN, **settings})
    return graph


def set_options(graph, objective=None, **settings):
    """Put each setting on the node of `graph` that declares it, adding option nodes to the chain."""
    from comfyui_unlearn.nodes.erase import UnlearnModel
    from comfyui_unlearn.nodes.options import OBJECTIVES, objective_node, option_nodes

    owners = [UnlearnModel, *(n for n in option_nodes() if not n.__name__.startswith("UnlearnObjective"))]
    if objective is not None:
        owners.append(objective_node(OBJECTIVES[objective]))
        add_option_node(graph, owners[-1].__name__)
    for name, value in settings.items():
        owner = next((n for n in owners if name in declared_inputs(n)), None)
        assert owner is not None, f"no Unlearn node has an input '{name}'"
        node_id = UNLEARN if owner is UnlearnModel else add_option_node(graph, owner.__name__)
        graph[node_id]["inputs"][name] = value
    return graph


def declared_inputs(node_class):
    definition = node_class.INPUT_TYPES()
    return {**definition.get("required", {}), **definition.get("optional", {})}


def add_option_node(graph, class_type, reuse=True):
    """The id of the graph's option node of class_type (a new one, with its defaults, chained in front of
    Unlearn Model's options, unless one exists and `reuse`)."""
    import nodes

    for node_id, node in graph.items():
        if reuse and node["class_type"] == class_type:
            return node_id
    required = nodes.NODE_CLASS_MAPPINGS[class_type].INPUT_TYPES()["required"]
    inputs = {name: spec[1]["default"] for name, spec in required.items() if "default" in spec[1]}
    if graph[UNLEARN]["inputs"].get("options"):
        inputs["options"] = graph[UNLEARN]["inputs"]["options"]
    node_id = str(max(int(k) for k in graph) + 1)
    graph[node_id] = {"class_type": class_type, "inputs": inputs}
    graph[UNLEARN]["inputs"]["options"] = [node_id, 0]
    return node_id


def fewest_passes(graph):
    """`graph` with one sampling step per KSampler and report node, and Unlearn Model trained one step on one image
    sampled in one step: for the tests whose claims (a branch bit-identical, another different, a file loaded back) hold after a
    single pass, on families whose fixed widths make each pass cost seconds on a CPU (Flux's 3072; Chroma's 344
    modulation vectors through a 5120-wide network in every pass)."""
    for node in graph.values():
        if node["class_type"] in ("KSampler", "UnlearnReport", "UnlearnStrengthCurve"):   # sampling steps
            node["inputs"]["steps"] = 1
    if graph.get(UNLEARN, {}).get("class_type") == "UnlearnModel":
        graph[UNLEARN]["inputs"]["steps"] = 1
    if graph.get(TRAINING_DATA, {}).get("class_type") == "UnlearnTrainingData":
        graph[TRAINING_DATA]["inputs"].update(images_per_prompt=1, sampling_steps=1)
    return graph


def plain_graph(checkpoint, seed=42, workflow=SHIPPED):
    """Only the untouched branch of the example (or of `workflow`): checkpoint -> KSampler -> SaveLatent."""
    graph = erase_graph(checkpoint, seed, workflow=workflow)
    branch, todo = set(), ["20"]
    while todo:
        node_id = todo.pop()
        branch.add(node_id)
        todo += [value[0] for value in graph[node_id]["inputs"].values() if isinstance(value, list)]
    return {k: graph[k] for k in graph if k in branch}


def _save_latent(samples, prefix):
    return {"class_type": "SaveLatent", "inputs": {"samples": samples, "filename_prefix": prefix}}


def run(runner, graph):
    """Run a graph that must succeed."""
    result = runner.run(graph)
    assert result.success, result.error
    return result


def latent(result, node_id):
    """The latent tensor a SaveLatent node wrote in this run."""
    entry = result.outputs[node_id]["latents"][0]
    return load_file(str(comfy_harness.output_dir() / entry["subfolder"] / entry["filename"]))["latent_tensor"]


def reference_latents(runner, checkpoint, seeds=(1, 2)):
    """The untouched branch's latents from a fresh executor cache, per seed."""
    runner.reset()
    refs = {seed: latent(run(runner, plain_graph(checkpoint, seed)), "20") for seed in seeds}
    runner.reset()
    return refs


def same(a, b):
    return a.shape == b.shape and torch.equal(a, b)


def with_saved_erasure(graph, dtype="float32", prefix="test/erasure"):
    graph["13"]["inputs"].update(dtype=dtype, filename_prefix=prefix)
    return graph


def saved_lora_name(result):
    """The loras-relative file name that UnlearnSaveErasure reported."""
    text = result.outputs["13"]["text"][0]
    return text.split("saved ", 1)[1].split(" in the loras folder")[0]


def through_loader(checkpoint, class_type, seed=42, workflow=SHIPPED, **inputs):
    """The checkpoint's MODEL through a loader node (30) of class_type -> the example's (or `workflow`'s) KSampler
    -> SaveLatent."""
    graph = plain_graph(checkpoint, seed, workflow)
    graph["30"] = {"class_type": class_type, "inputs": {"model": ["1", 0], **inputs}}
    graph["7"]["inputs"]["model"] = ["30", 0]
    return graph


def lora_graph(checkpoint, lora_name, strength, seed=42, workflow=SHIPPED):
    """Stock LoraLoaderModelOnly on the checkpoint's MODEL -> the example's (or `workflow`'s) KSampler -> SaveLatent."""
    return through_loader(checkpoint, "LoraLoaderModelOnly", seed, workflow, lora_name=lora_name,
                          strength_model=strength)


def saved_erasure_graph(workflow, lora_name, checkpoint=CHECKPOINT):
    """A shipped workflow that samples through a saved erasure (no Unlearn Model in it), shrunk for the CPU: its
    loader reads `lora_name`, 64 px, 3 sampling steps, both latents saved."""
    graph = copy.deepcopy(workflow)
    graph["1"]["inputs"]["ckpt_name"] = checkpoint
    graph["30"]["inputs"]["lora_name"] = lora_name
    graph["6"]["inputs"].update(width=64, height=64)
    for sampler in ("7", "8"):
        graph[sampler]["inputs"].update(steps=3)
    graph["20"] = _save_latent(["7", 0], "test/original")
    graph["21"] = _save_latent(["8", 0], "test/with_erasure")
    return graph


def sample_prompts(graph, model, prompts, first_id, prefix):
    """Add CLIPTextEncode -> KSampler (seed 42, 3 steps) -> SaveLatent per prompt on `model`; {prompt: save id}."""
    saves = {}
    for offset, prompt in enumerate(prompts):
        encode, sampler, save = (str(first_id + 3 * offset + i) for i in range(3))
        graph[encode] = {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": prompt}}
        graph[sampler] = copy.deepcopy(graph["7"])
        graph[sampler]["inputs"].update(model=model, positive=[encode, 0])
        graph[save] = _save_latent([sampler, 0], f"{prefix}/{offset}")
        saves[prompt] = save
    return saves


def interrupting_hook(should_interrupt, node_id=UNLEARN):
    """A progress hook that records the node's (Unlearn Model's by default) (value, total) and interrupts the run
    once, the first time should_interrupt(value, total) holds; returns (hook, seen)."""
    import comfy.model_management

    seen, fired = [], []

    def hook(value, total, preview, node_id=None, watched=node_id):
        if node_id == watched:
            seen.append((value, total))
            if not fired and should_interrupt(value, total):
                fired.append(True)
                comfy.model_management.interrupt_current_processing(True)

    return hook, seen


@contextlib.contextmanager
def progress_hook(hook):
    """ComfyUI's global progress hook set to `hook` for the duration, seeing every update the node makes: where
    ComfyUI throttles the hook (0.33: 100 ms and 0.5% apart, for the browser's sake), the throttle is lifted."""
    import comfy.utils

    previous = comfy.utils.PROGRESS_BAR_HOOK
    throttle = {name: getattr(comfy.utils, name) for name in ("PROGRESS_THROTTLE_MIN_INTERVAL",
                                                               "PROGRESS_THROTTLE_MIN_PERCENT") if hasattr(comfy.utils, name)}
    comfy.utils.set_progress_bar_global_hook(hook)
    for name in throttle:
        setattr(comfy.utils, name, 0)
    try:
        yield
    finally:
        comfy.utils.set_progress_bar_global_hook(previous)
        for name, value in throttle.items():
            setattr(comfy.utils, name, value)
