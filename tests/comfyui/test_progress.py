"""nodes/progress.py: the one progress bar and Cancel check of the nodes that sample or train, on ComfyUI's own
ProgressBar, and Unlearn Model's bar over its sampling and training steps with their previews."""
import pytest
import torch
from graphs import CHECKPOINT as CKPT, UNLEARN, erase_graph, progress_hook, run

pytestmark = pytest.mark.comfyui


class RecordingPreviewer:
    """Stands in for ComfyUI's latent previewers: records the shape of each latent it is asked to show."""

    def __init__(self):
        self.shapes = []

    def decode_latent_to_preview_image(self, preview_format, x0):
        self.shapes.append(tuple(x0.shape))
        return preview_format, None, 512


def updates_of(node_id):
    """A progress hook recording (value, total, whether a preview came) for node_id's bar; returns (hook, seen)."""
    seen = []

    def hook(value, total, preview, node_id=None, _node=node_id):
        if node_id == _node:
            seen.append((value, total, preview is not None))

    return hook, seen


def test_step_at_and_done_move_one_bar_under_the_nodes_id(runner):
    from comfyui_unlearn.nodes.progress import NodeProgress

    hook, seen = updates_of("n1")
    with progress_hook(hook):
        progress = NodeProgress("n1", 5)
        progress.step()
        progress.step(torch.zeros(2, 4, 8, 8))      # a latent, but no previewer: no preview
        progress.at(4)
        progress.step()
        progress.step()                             # past the end: held at the total
        progress.done()
    assert seen == [(1, 5, False), (2, 5, False), (4, 5, False), (5, 5, False), (5, 5, False), (5, 5, False)]


def test_a_bar_with_nothing_to_count_still_has_an_end(runner):
    from comfyui_unlearn.nodes.progress import NodeProgress

    hook, seen = updates_of("n2")
    with progress_hook(hook):
        NodeProgress("n2", 0).done()
    assert seen == [(1, 1, False)]


def test_a_previewer_shows_the_first_latent_of_each_step_that_has_one(runner):
    from comfyui_unlearn.nodes.progress import NodeProgress

    previewer = RecordingPreviewer()
    hook, seen = updates_of("n3")
    with progress_hook(hook):
        progress = NodeProgress("n3", 3, previewer)
        progress.step(torch.zeros(2, 4, 8, 8))
        progress.step()
        progress.at(3, torch.zeros(1, 4, 8, 8))
    assert seen == [(1, 3, True), (2, 3, False), (3, 3, True)]
    assert previewer.shapes == [(1, 4, 8, 8), (1, 4, 8, 8)]


def test_cancel_stops_at_the_next_step_or_position(runner):
    import comfy.model_management

    from comfyui_unlearn.nodes.progress import NodeProgress

    progress = NodeProgress("n4", 10)
    for move in (progress.step, lambda: progress.at(5)):
        comfy.model_management.interrupt_current_processing(True)
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            move()
    progress.step()      # the Cancel was consumed: work goes on
    assert progress.bar.current == 6


def test_unlearn_model_previews_its_sampling_and_training_steps_on_one_bar(runner, monkeypatch):
    """With previews on (ComfyUI's --preview-method), each step of the training images' sampling and, at 4 steps,
    each training step shows a preview; the bar counts the sampling steps, then the training steps."""
    import latent_preview

    previewer = RecordingPreviewer()
    monkeypatch.setattr(latent_preview, "get_previewer", lambda device, latent_format: previewer)
    hook, seen = updates_of(UNLEARN)
    graph = erase_graph(CKPT, seed=1, steps=4, images_per_prompt=2, sampling_steps=2)
    graph[UNLEARN]["inputs"]["seed"] = 123       # images no earlier test sampled: none come from the cache
    runner.reset()
    with progress_hook(hook):
        run(runner, graph)
    # One anchor prompt sampled in 2 steps, then 4 training steps, each with a preview.
    assert seen == [(value, 6, True) for value in range(1, 7)]
