"""Unlearn Attack in real ComfyUI graphs: the attack runs after an erasure, its outputs (a grid, a table of rates, a
conditioning a KSampler takes), its progress and Cancel, and the model left exactly as it was."""
import copy
import json

import pytest
import torch
from graphs import CHECKPOINT as CKPT, erase_graph, interrupting_hook, latent, plain_graph, progress_hook, run, same
from test_report_graph import WORKFLOWS, preview_image, table_rows

pytestmark = pytest.mark.comfyui
ATTACK = "40"
SMALL = dict(width=64, height=64, steps=2)


def attack_graph(attack_steps=4, samples=1):
    """A UCE erasure of the example's pair, attacked; the attacked conditioning also sampled by a KSampler."""
    graph = erase_graph(CKPT, seed=1, objective="uce")
    graph[ATTACK] = {"class_type": "UnlearnAttack", "inputs": {
        "model": ["1", 0], "erased_model": ["3", 0], "concepts": ["2", 0], "vae": ["1", 2],
        "attack_steps": attack_steps, "learning_rate": 0.05, "samples": samples, "seed": 1, **SMALL}}
    graph["41"] = {"class_type": "PreviewImage", "inputs": {"images": [ATTACK, 0]}}
    graph["42"] = {"class_type": "PreviewAny", "inputs": {"source": [ATTACK, 1]}}
    graph["43"] = copy.deepcopy(graph["8"])
    graph["43"]["inputs"]["positive"] = [ATTACK, 2]
    graph["44"] = {"class_type": "SaveLatent", "inputs": {"samples": ["43", 0], "filename_prefix": "test/attacked"}}
    return graph


def shipped_attack_graph():
    """The shipped "suggest synonyms, erase, then attack" workflow shrunk for the CPU: 4 words shortlisted, 2
    suggestions, one attack step, one judged sample of one sampling step at 64 px."""
    graph = json.loads((WORKFLOWS / "suggest_erase_attack.json").read_text())
    graph["1"]["inputs"]["ckpt_name"] = CKPT
    graph["22"]["inputs"].update(count=2, shortlist=4)
    graph[ATTACK]["inputs"].update(attack_steps=1, samples=1, width=64, height=64, steps=1)
    return graph


def rates(result):
    """{concept: [share judged the target, per column]} of the attack's table."""
    report = result.outputs["42"]["text"][0]
    table = "\n".join(line for line in report.splitlines() if line.startswith("|"))   # the note below it aside
    return {concept: [float(cell.rstrip("%")) / 100 for cell in cells] for concept, cells in table_rows(table).items()}


@pytest.fixture(scope="module")
def attack_run(runner):
    seen = []

    def hook(value, total, preview, node_id=None):
        if node_id == ATTACK:
            seen.append((value, total))

    with progress_hook(hook):
        result = run(runner, attack_graph())
    return result, seen


def test_the_attack_shows_a_grid_a_rate_per_column_and_a_conditioning_a_sampler_takes(attack_run, references):
    result, progress = attack_run
    table = rates(result)
    assert list(table) == ["Van Gogh", "in the style of Van Gogh"]           # the example's two targets
    assert all(len(row) == 3 and set(row) <= {0.0, 1.0} for row in table.values())     # one sample judged each
    grid = preview_image(result, "41")
    assert grid.shape[1] == 3 * 64 and grid.shape[0] > 2 * 64 and grid.shape[2] == 3       # a row per sample
    attacked, erased = latent(result, "44"), latent(result, "21")
    assert torch.isfinite(attacked).all() and not same(attacked, erased)     # the learned states moved
    assert same(latent(result, "20"), references[1])                          # the untouched branch
    assert progress and progress[-1][0] == progress[-1][1] and len({total for _, total in progress}) == 1


def test_no_attack_steps_sample_the_target_prompt_itself(runner):
    table = rates(run(runner, attack_graph(attack_steps=0)))
    assert all(row[2] == row[1] for row in table.values())


def test_the_attack_leaves_the_model_as_it_was(runner, attack_run, references):
    later = runner.run(plain_graph(CKPT, seed=2))
    assert later.success and same(latent(later, "20"), references[2])


def test_cancel_during_the_attack_leaves_the_model_intact(runner, references):
    # The attacker's 4 images take 2 sampling steps each; the attack's steps follow.
    hook, seen = interrupting_hook(lambda value, total: value >= 4 * SMALL["steps"] + 2, node_id=ATTACK)
    with progress_hook(hook):
        assert runner.run(attack_graph(attack_steps=1000)).interrupted
    assert seen[-1][0] == 4 * SMALL["steps"] + 2
    later = runner.run(plain_graph(CKPT, seed=2))
    assert later.success and same(latent(later, "20"), references[2])


def test_connected_images_are_what_the_attacker_learns_from_for_one_target(runner):
    graph = attack_graph()
    graph["50"] = {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 2, "color": 0}}
    graph[ATTACK]["inputs"]["images"] = ["50", 0]
    result = runner.run(graph)
    assert not result.success and "images is connected and concepts has 2 targets" in str(result.error)
    graph["2"]["inputs"]["target"] = "Van Gogh"
    assert list(rates(run(runner, graph))) == ["Van Gogh"]
