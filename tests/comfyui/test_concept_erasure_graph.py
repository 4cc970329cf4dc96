"""Erasing the concept rather than the phrase, in real ComfyUI graphs: the pair node's phrasings and the
Unlearn Concept Neighbourhood option node."""
import re
from pathlib import Path

import pytest
import torch
from graphs import (CHECKPOINT as CKPT, add_option_node, erase_graph, latent, run, same, saved_lora_name,
                    with_saved_erasure)

from comfyui_unlearn.unlearning import PHRASING_TEMPLATES, read_erasure_metadata

pytestmark = pytest.mark.comfyui


def saved_path(result):
    import folder_paths

    return Path(folder_paths.get_folder_paths("loras")[0]) / saved_lora_name(result)


def saved_metadata(result):
    return read_erasure_metadata(saved_path(result))


def test_phrasings_erase_every_phrasing_and_share_one_set_of_training_images(runner, references, monkeypatch):
    import comfy.sample

    calls = []
    real_sample = comfy.sample.sample
    monkeypatch.setattr(comfy.sample, "sample", lambda *a, **k: calls.append(1) or real_sample(*a, **k))
    runner.reset()
    graph = with_saved_erasure(erase_graph(CKPT, seed=1), "float32", "test/phrasings")
    graph["2"]["inputs"].update(target="a sneaker", anchor="a sandal", preserve="a boot", phrasings=True)
    result = run(runner, graph)
    assert len(calls) == 3       # the anchor's images once for every phrasing, then the two KSamplers
    assert same(latent(result, "20"), references[1])
    assert not same(latent(result, "21"), references[1]) and torch.isfinite(latent(result, "21")).all()
    metadata = saved_metadata(result)
    phrasings = [t.format("a sneaker") for t in PHRASING_TEMPLATES]
    assert [c["target"] for c in metadata["concepts"]] == ["a sneaker", *phrasings]
    assert [c["anchor"] for c in metadata["concepts"]] == ["a sandal", *(t.format("a sandal") for t in PHRASING_TEMPLATES)]
    assert metadata["preserve"] == ["a boot", *(t.format("a boot") for t in PHRASING_TEMPLATES)]


def test_phrasings_off_keeps_the_pair_as_written(runner):
    graph = with_saved_erasure(erase_graph(CKPT, seed=1), "float32", "test/as_written")
    graph["2"]["inputs"].update(target="a sneaker", anchor="a sandal", phrasings=False)
    metadata = saved_metadata(run(runner, graph))
    assert metadata["concepts"] == [{"target": "a sneaker", "anchor": "a sandal"}]


def test_a_concept_file_adds_its_target_anchor_lines_to_the_boxes(runner):
    import folder_paths

    listing = Path(folder_paths.get_input_directory()) / "unlearn_test_concepts.txt"
    listing.parent.mkdir(parents=True, exist_ok=True)
    listing.write_text("# erased in one run\na trainer -> a sandal\n\na boot -> a bag\nan ankle boot\n",
                       encoding="utf-8")
    graph = with_saved_erasure(erase_graph(CKPT, seed=1, objective="uce"), "float32", "test/concept_file")
    graph["2"]["inputs"].update(target="a sneaker", anchor="a shirt", concept_file=listing.name)
    assert saved_metadata(run(runner, graph))["concepts"] == [
        {"target": "a sneaker", "anchor": "a shirt"}, {"target": "a trainer", "anchor": "a sandal"},
        {"target": "a boot", "anchor": "a bag"}, {"target": "an ankle boot", "anchor": "a shirt"}]


@pytest.mark.parametrize("radius, adversarial_steps", [(0.5, 0), (0.3, 2)])
def test_the_neighbourhood_node_changes_the_erasure_and_is_recorded(runner, references, radius, adversarial_steps):
    plain = run(runner, with_saved_erasure(erase_graph(CKPT, seed=1), "float32", "test/plain"))
    graph = with_saved_erasure(erase_graph(CKPT, seed=1), "float32", "test/neighbourhood")
    node = add_option_node(graph, "UnlearnNeighbourhood")
    graph[node]["inputs"].update(radius=radius, adversarial_steps=adversarial_steps)
    result = run(runner, graph)
    assert same(latent(result, "20"), references[1])
    erased = latent(result, "21")
    assert torch.isfinite(erased).all() and not same(erased, references[1])
    # The weight changes differ from the plain erasure's (the float16 model can round tiny differences away
    # in the latents).
    changed, unchanged = saved_deltas(result), saved_deltas(plain)
    assert changed.keys() == unchanged.keys() and any(not torch.equal(changed[k], unchanged[k]) for k in changed)
    assert saved_metadata(result)["neighbourhood"] == {"radius": radius, "adversarial_steps": adversarial_steps}


def saved_deltas(result):
    from safetensors.torch import load_file

    return load_file(str(saved_path(result)))


def test_uce_over_the_phrasings_moves_past_the_anchor_with_guidance(runner, references):
    """The recommended set-up: synonyms listed, a neighbour preserved, phrasings on, the UCE objective."""
    def uce_graph(guidance, prefix):
        graph = with_saved_erasure(erase_graph(CKPT, seed=1, objective="uce", guidance=guidance), "float32", prefix)
        graph["2"]["inputs"].update(target="a sneaker\na trainer", anchor="a sandal", preserve="a boot", phrasings=True)
        return run(runner, graph)

    onto, past = uce_graph(0.0, "test/uce_onto"), uce_graph(0.5, "test/uce_past")
    for result in (onto, past):
        assert same(latent(result, "20"), references[1])
        assert torch.isfinite(latent(result, "21")).all() and not same(latent(result, "21"), references[1])
    assert saved_metadata(past)["objective_params"]["guidance"] == 0.5
    assert len(saved_metadata(past)["concepts"]) == 2 * (1 + len(PHRASING_TEMPLATES))
    deltas_onto, deltas_past = saved_deltas(onto), saved_deltas(past)
    assert any(not torch.equal(deltas_onto[k], deltas_past[k]) for k in deltas_onto)


def test_kept_vocabulary_words_join_the_preserved_prompts_in_every_phrasing_and_change_the_edit(runner, references):
    def uce_graph(keep_vocabulary, prefix):
        graph = with_saved_erasure(erase_graph(CKPT, seed=1, objective="uce", guidance=1.0), "float32", prefix)
        graph["2"]["inputs"].update(target="a sneaker", anchor="a sandal", preserve="a boot", phrasings=True,
                                    keep_vocabulary=keep_vocabulary)
        return run(runner, graph)

    plain, kept = uce_graph(0, "test/uce_plain"), uce_graph(6, "test/uce_kept")
    assert same(latent(kept, "20"), references[1])
    assert torch.isfinite(latent(kept, "21")).all() and not same(latent(kept, "21"), references[1])
    preserved = saved_metadata(kept)["preserve"]
    words = preserved[1:7]
    assert preserved[0] == "a boot" and len(set(words)) == 6 and len(preserved) == 7 * (1 + len(PHRASING_TEMPLATES))
    assert all(re.fullmatch(r"an? [a-z]{3,}", line) for line in words)
    assert not {"sneaker", "sandal", "boot"} & {line.split()[1] for line in words}   # no word the pair writes
    assert preserved[7:] == [t.format(line) for line in ["a boot", *words] for t in PHRASING_TEMPLATES]
    assert saved_metadata(plain)["preserve"] == ["a boot", *(t.format("a boot") for t in PHRASING_TEMPLATES)]
    deltas_plain, deltas_kept = saved_deltas(plain), saved_deltas(kept)
    assert any(not torch.equal(deltas_plain[k], deltas_kept[k]) for k in deltas_plain)
