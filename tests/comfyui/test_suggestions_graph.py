"""Unlearn Concept Suggestions in a real ComfyUI graph: its targets feed Unlearn Concept Pair, and the erasure saved
lists them; its table ranks every suggestion by score and never names what is excluded."""
import re

import pytest
from graphs import CHECKPOINT as CKPT, erase_graph, run, with_saved_erasure
from test_concept_erasure_graph import saved_metadata

pytestmark = pytest.mark.comfyui
SUGGEST = "50"


def suggestions_graph(target, count, exclude="", shortlist=4):
    """A UCE erasure whose concept pair takes its targets from the suggestions node, saved; its table previewed. No
    latent is saved, so the samplers do not run."""
    graph = with_saved_erasure(erase_graph(CKPT, seed=1, objective="uce"), "float32", "test/suggested")
    del graph["20"], graph["21"]
    graph[SUGGEST] = {"class_type": "UnlearnConceptSuggestions", "inputs": {
        "clip": ["1", 1], "target": target, "count": count, "exclude": exclude, "shortlist": shortlist}}
    graph["51"] = {"class_type": "PreviewAny", "inputs": {"source": [SUGGEST, 1]}}
    graph["2"]["inputs"].update(target=[SUGGEST, 0], anchor="a sandal")
    return graph


@pytest.fixture(scope="module")
def suggested(runner):
    result = run(runner, suggestions_graph("a sneaker -> a shoe box\nVan Gogh", count=3, exclude="a boot"))
    rows = [[cell.strip() for cell in line.split("|")[1:-1]]
            for line in result.outputs["51"]["text"][0].splitlines()[2:]]
    return result, {concept: [row[1:] for row in rows if row[0] == concept] for concept in ("a sneaker", "Van Gogh")}


def test_suggestions_become_targets_of_the_erasure_each_keeping_its_lines_anchor(suggested):
    result, table = suggested
    concepts = [(c["target"], c["anchor"]) for c in saved_metadata(result)["concepts"]]
    # The random-weight encoder's suggestions are arbitrary words; the excluded phrases may leave fewer than 3.
    shown = {concept: [phrase for _, phrase, _, used in ranked if used] for concept, ranked in table.items()}
    assert concepts == [("a sneaker", "a shoe box"), ("Van Gogh", "a sandal"),
                        *((phrase, "a shoe box") for phrase in shown["a sneaker"]),
                        *((phrase, "a sandal") for phrase in shown["Van Gogh"])]
    assert all(0 < len(phrases) <= 3 for phrases in shown.values()) and len(set(concepts)) == len(concepts)
    assert all(re.match(r"an? ", phrase) for phrase in shown["a sneaker"])     # in the line's own article
    for phrase, _ in concepts[2:]:     # the anchor's and the excluded prompt's words are never suggested
        assert not re.search(r"\b(shoe|box|boot|sneaker|van|gogh)\b", phrase.lower())


def test_the_table_ranks_every_suggestion_by_score_and_marks_those_in_the_targets(suggested):
    for ranked in suggested[1].values():
        assert [int(rank) for rank, *_ in ranked] == list(range(1, len(ranked) + 1))
        scores = [float(score) for _, _, score, _ in ranked]
        assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
        marked = min(3, len(ranked))
        assert [used for *_, used in ranked] == ["yes"] * marked + [""] * (len(ranked) - marked)


def test_no_suggestions_pass_the_targets_through(runner):
    result = run(runner, suggestions_graph("a sneaker", count=0, shortlist=1))
    assert [c["target"] for c in saved_metadata(result)["concepts"]] == ["a sneaker"]
