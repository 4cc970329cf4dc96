"""Unlearn Report and Unlearn Strength Curve in real ComfyUI graphs: the two example workflows run headless,
their outputs' shapes and types, the score's +1 by construction, the erased target below the original."""
import copy
import json
from pathlib import Path

import numpy as np
import pytest
from graphs import CHECKPOINT as CKPT, FAST_UNLEARN, progress_hook, run, saved_lora_name
from PIL import Image

from comfyui_unlearn.unlearning import read_erasure_metadata

pytestmark = pytest.mark.comfyui
WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows" / "api"
SMALL = dict(width=64, height=64, steps=1)    # the score and the grid need one sampling step each


def report_graph(prefix="test/report"):
    """The shipped "erase, then report" workflow shrunk for the CPU."""
    graph = json.loads((WORKFLOWS / "erase_and_report.json").read_text())
    graph["1"]["inputs"]["ckpt_name"] = CKPT
    graph["3"]["inputs"].update(steps=10, learning_rate=1e-3)
    graph["14"]["inputs"].update(images_per_prompt=FAST_UNLEARN["images_per_prompt"], sampling_steps=2, width=64,
                                 height=64)
    graph["15"]["inputs"].update(SMALL)
    graph["13"]["inputs"].update(filename_prefix=prefix, dtype="float32")
    return graph


def sweep_graph(erasure_name):
    """The shipped "load a saved erasure, sweep its strength" workflow on the CPU."""
    graph = json.loads((WORKFLOWS / "strength_sweep.json").read_text())
    graph["1"]["inputs"]["ckpt_name"] = CKPT
    graph["2"]["inputs"]["erasure_name"] = erasure_name
    graph["4"]["inputs"].update(SMALL)
    return graph


def preview_image(result, node_id):
    import folder_paths

    entry = result.outputs[node_id]["images"][0]
    return np.asarray(Image.open(Path(folder_paths.get_temp_directory()) / entry["subfolder"] / entry["filename"]))


def table_rows(markdown):
    """{prompt: [cells after the prompt]} of a Markdown table."""
    rows = [line.strip("|").split(" | ") for line in markdown.splitlines()[2:]]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows}


@pytest.fixture(scope="module")
def report_run(runner):
    seen = []

    def hook(value, total, preview, node_id=None):
        if node_id == "15":
            seen.append((value, total))

    with progress_hook(hook):
        result = run(runner, report_graph())
    return result, seen


def test_the_report_workflow_runs_headless_with_a_grid_and_a_table(report_run):
    result, progress = report_run
    report = result.outputs["17"]["text"][0]
    rows = table_rows(report)
    # Default probes: the target as written and in three sentences, the anchor, the preserved prompt (the
    # phrasings switch's own template phrasings are not probes).
    assert list(rows) == ["Van Gogh", "an artwork of Van Gogh", "a scene featuring Van Gogh",
                          "Van Gogh, highly detailed", "a painting", "a painting by Claude Monet"]
    grid = preview_image(result, "16")
    assert grid.shape[1] == 2 * 64 and grid.shape[0] > len(rows) * 64 and grid.shape[2] == 3
    assert progress and progress[-1][0] == progress[-1][1]          # the bar reaches its end
    assert len({total for _, total in progress}) == 1


def test_the_target_scores_plus_one_on_the_original_model_and_lower_once_erased(report_run):
    rows = table_rows(report_run[0].outputs["17"]["text"][0])
    role, before, after, drift, word = rows["Van Gogh"]
    assert role == "target" and before == "+1.00"                   # by construction
    assert float(after) < float(before) and float(drift) > 0
    assert rows["a painting"][1] == "-1.00"                          # the anchor, by construction
    assert all(float(cells[2]) < float(cells[1]) for cells in rows.values() if cells[0] == "target")


def test_the_saved_erasure_keeps_the_report_in_its_header(runner, report_run):
    import folder_paths

    name = saved_lora_name(report_run[0])
    metadata = read_erasure_metadata(Path(folder_paths.get_folder_paths("loras")[0]) / name)
    assert metadata["report"] == report_run[0].outputs["17"]["text"][0]


def test_the_strength_sweep_workflow_draws_a_curve_from_plus_one_down(runner, report_run):
    import folder_paths

    name = saved_lora_name(report_run[0])
    result = run(runner, sweep_graph(name))
    rows = table_rows(result.outputs["6"]["text"][0])
    scores = [float(v) for v in rows["Van Gogh"][1:]]
    assert len(scores) == 5 and scores[0] == pytest.approx(1.0) and scores[-1] < scores[0]
    curve = preview_image(result, "5")
    assert curve.ndim == 3 and curve.shape[2] == 3 and curve.shape[1] == 720
    assert Path(folder_paths.get_folder_paths("loras")[0], name).is_file()


def test_strengths_that_are_not_numbers_are_refused_naming_the_input(runner, report_run):
    graph = sweep_graph(saved_lora_name(report_run[0]))
    graph["4"]["inputs"]["strengths"] = "0, half, 1"
    result = runner.run(copy.deepcopy(graph))
    assert not result.success and "strengths '0, half, 1' is not a list of numbers" in str(result.error)


def test_an_erased_model_of_another_family_is_refused_naming_the_input(runner):
    graph = report_graph()
    graph["31"] = {"class_type": "UNETLoader", "inputs": {"unet_name": "tiny_sd3.safetensors", "weight_dtype": "default"}}
    graph["15"]["inputs"]["erased_model"] = ["31", 0]
    result = runner.run(graph)
    assert not result.success and "erased_model is a SD3 model and model a SD15 model" in str(result.error)
