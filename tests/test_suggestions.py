"""Concept suggestions and kept words (unlearning/suggestions.py) on toy text encoders whose nearness is known."""
import itertools
import string

import pytest
import torch

from comfyui_unlearn.unlearning.suggestions import (NOT_KEPT_NEAREST, Vocabulary, candidate_count, candidate_phrases,
                                                       kept_words, suggest, with_article)

# Directions of a toy meaning space: footwear, sport, clothing, and noise words.
MEANINGS = {"sneaker": [1, 1, 0], "trainer": [1, 0.9, 0], "running": [0.3, 1, 0], "shoe": [1, 0, 0],
            "sandal": [1, -0.5, 0], "shirt": [0, 0, 1], "cloud": [0, -1, -1], "table": [-1, 0, 0.3]}


def toy_vocabulary():
    return Vocabulary.from_tokens(list(MEANINGS), torch.tensor(list(MEANINGS.values()), dtype=torch.float32))


def toy_sentences(texts):
    """A phrase's sentence vector: the sum of its words' meanings."""
    return torch.stack([sum((torch.tensor(MEANINGS[w], dtype=torch.float32) for w in text.split()
                             if w in MEANINGS), torch.zeros(3)) for text in texts])


def token_vector(words):
    return torch.tensor(MEANINGS[words.split()[-1]], dtype=torch.float32)


def test_the_nearest_phrases_come_first_in_the_concepts_article_and_the_concept_itself_is_not_suggested():
    shown = suggest("a sneaker", token_vector, toy_vocabulary(), toy_sentences, count=3, shortlist=4)
    phrases = [phrase for phrase, _ in shown]
    assert "a trainer" in phrases and not any(word in p for p in phrases for word in ("cloud", "table", "shirt"))
    assert all(phrase.startswith("a ") and "sneaker" not in phrase for phrase in phrases)
    scores = [score for _, score in shown]
    assert scores == sorted(scores, reverse=True) and len(shown) == 3


def test_excluded_words_are_never_suggested_and_nothing_nearer_an_excluded_phrase_than_the_concept():
    shown = suggest("a sneaker", token_vector, toy_vocabulary(), toy_sentences, count=20, shortlist=8,
                    exclude=("a sandal",))
    phrases = [phrase for phrase, _ in shown]
    assert not any("sandal" in phrase for phrase in phrases)
    assert "a shoe" not in phrases          # the nearest word to the excluded sandal, though near the sneaker too
    assert "a trainer" in phrases


def test_the_vocabulary_keeps_whole_words_of_every_tokenizers_marking_once():
    tokens = ["<|startoftext|>", "sne", "sneaker</w>", "▁trainer", "Ġboot", "##ing", "[PAD]", "sneaker", "ab", "x1"]
    vocabulary = Vocabulary.from_tokens(tokens, torch.arange(len(tokens), dtype=torch.float32)[:, None])
    assert vocabulary.words == ["sne", "sneaker", "trainer", "boot"]
    assert vocabulary.rows.tolist() == [1, 2, 3, 4]        # a word held twice keeps its first row


def test_two_word_phrases_come_from_the_nearest_words_only():
    words = [f"w{i}" for i in range(12)]
    phrases = candidate_phrases(words)
    assert len(phrases) == candidate_count(12) == 12 + 8 * 7 and "w0 w1" in phrases and "w9 w0" not in phrases
    assert candidate_count(3) == 3 + 3 * 2


def test_a_line_without_a_concept_is_refused_naming_it():
    with pytest.raises(ValueError, match="'a 42' names no concept"):
        suggest("a 42", token_vector, toy_vocabulary(), toy_sentences, count=3)


def test_a_phrase_takes_the_article_its_first_letter_needs():
    assert with_article("a ", "air sole") == "an air sole" and with_article("An ", "boot") == "A boot"
    assert with_article("the ", "air sole") == "the air sole" and with_article("", "boot") == "boot"


def random_vocabulary(size=1000, width=16):
    words = ["".join(letters) for letters in itertools.islice(itertools.product(string.ascii_lowercase, repeat=3), size)]
    return Vocabulary.from_tokens(words, torch.randn(size, width, generator=torch.Generator().manual_seed(0)))


def test_kept_words_are_a_fixed_draw_that_never_holds_a_targets_neighbours_or_a_written_word():
    vocabulary = random_vocabulary()
    targets = [vocabulary.table[3], vocabulary.table[500]]
    kept = kept_words(vocabulary, 64, targets, skip={"aab", "bcd"})
    near = {word for target in targets for word in vocabulary.nearest(target, NOT_KEPT_NEAREST, set())}
    assert len(kept) == len(set(kept)) == 64 and not near & set(kept) and not {"aab", "bcd"} & set(kept)
    assert kept == kept_words(vocabulary, 64, targets, {"aab", "bcd"})       # the same words in every workflow
    assert kept_words(vocabulary, 16, targets, {"aab", "bcd"}) == kept[:16]   # more words keep the fewer ones
    # Spread over the vocabulary rather than its first rows.
    assert max(vocabulary.words.index(word) for word in kept) > len(vocabulary.words) // 2


def test_kept_words_stop_at_what_the_vocabulary_holds_beyond_the_targets_neighbours():
    vocabulary = random_vocabulary(size=NOT_KEPT_NEAREST + 10)
    assert len(kept_words(vocabulary, 64, [vocabulary.table[0]], set())) == 10
