"""Concept suggestions: the phrases a model's own text encoder places nearest a concept, to erase beside it.

A user lists the names they think of; an erasure then misses the words they did not (unlisted synonyms keep most
of the concept after a closed-form edit of the listed ones). The text encoder knows which words it treats alike:
1. shortlist: the vocabulary's whole words whose input embeddings (the encoder's token table) lie nearest the
   concept's own tokens' mean, by cosine;
2. phrases: those words, and two-word phrases of the nearest few ("running" and "shoe" -> "running shoe");
3. rank: every phrase by the cosine between its sentence vector and the concept's, through the whole encoder
   (its pooled vector where it has one, else the mean of its token states: the similarity CLIP and sentence
   encoders are trained for).
The shortlist decides what can be found: an encoder that splits the concept into pieces ("sneak" + "er") shortlists
the pieces' neighbours, and a synonym it does not hold near the concept ("trainer") is not suggested.
A phrase is left out if it names an excluded word (the anchor, a prompt to keep) or lies nearer an excluded phrase
than the concept, so that the suggestions do not erase what the concept becomes.
"""
import itertools
import re
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import torch

WORD = re.compile(r"^[a-z]{3,}$")     # whole lowercase words of three letters or more
ARTICLES = ("a ", "an ", "the ")
PAIRED_WORDS = 8                      # the nearest words that also form two-word phrases (8 x 7 of them)
SUGGESTED = 8                         # suggestions added per target line, by default
SHORTLIST = 24                        # vocabulary words shortlisted per target line, by default
CHUNK = 8192                          # table rows compared at once (a float32 copy of 8192 rows, not of the table)
KEPT_WORDS_DRAW = 0                   # the seed of the kept words' draw: the same words for the same encoder
NOT_KEPT_NEAREST = 200                # the words nearest a target that are never drawn to be kept


class Suggestion(NamedTuple):
    phrase: str       # as a target line: in the concept's own article ("a trainer" for "a sneaker")
    score: float      # cosine similarity to the concept's sentence vector


@dataclass(frozen=True)
class Vocabulary:
    """A text encoder's whole words: their rows of its token embedding table (kept as the encoder holds it, so a
    150,000-token table is not copied)."""

    words: list[str]
    table: torch.Tensor      # [tokens, width]
    rows: torch.Tensor       # each word's row

    @classmethod
    def from_tokens(cls, tokens: list[str], table: torch.Tensor) -> "Vocabulary":
        """From the tokenizer's token strings in id order and the encoder's token embedding table: the tokens that
        are whole words once the tokenizer's word markers (CLIP's '</w>', SentencePiece's '▁', byte-level BPE's 'Ġ')
        are stripped; BERT's '##' pieces and special tokens are not. A word held twice keeps its first row."""
        rows = {}
        for index, token in enumerate(tokens[:len(table)]):
            word = token.replace("</w>", "").lstrip("▁Ġ")
            if WORD.match(word) and word not in rows:
                rows[word] = index
        return cls(list(rows), table.detach(), torch.tensor(list(rows.values()), dtype=torch.long))

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, table: torch.Tensor) -> "Vocabulary":
        """From a Hugging Face tokenizer (convert_ids_to_tokens) and its encoder's token embedding table."""
        return cls.from_tokens(tokenizer.convert_ids_to_tokens(list(range(len(table)))), table)

    def nearest(self, vector: torch.Tensor, count: int, skip: set) -> list[str]:
        """The `count` words nearest `vector` by cosine, without those in `skip`."""
        vector = vector.to(self.table.device, torch.float32)[None]
        scores = torch.cat([torch.nn.functional.cosine_similarity(self.table[rows].float(), vector, dim=1).cpu()
                            for rows in self.rows.to(self.table.device).split(CHUNK)])
        ordered = (self.words[i] for i in scores.argsort(descending=True).tolist())
        return list(itertools.islice((w for w in ordered if w not in skip), count))


def mean_embedding(tokenizer: Any, table: torch.Tensor, words: str) -> torch.Tensor:
    """The mean of the embedding table's rows for the tokens a Hugging Face tokenizer splits `words` into."""
    ids = [i for i in tokenizer(words, add_special_tokens=False)["input_ids"] if i < len(table)]
    return table[ids].float().mean(0)


def concept_words(text: str) -> tuple[str, str]:
    """(article with its space or "", the concept's words) of a target line ("a sneaker" -> ("a ", "sneaker"))."""
    line = text.strip()
    article = next((a for a in ARTICLES if line.lower().startswith(a)), "")
    return line[:len(article)], line[len(article):].strip()


def with_article(article: str, phrase: str) -> str:
    """The phrase after the concept's article, "a" and "an" as the phrase's first letter needs ("an air ...")."""
    if article.lower() in ("a ", "an "):
        article = article[0] + ("n " if phrase[0] in "aeiou" else " ")
    return article + phrase


def candidate_phrases(words: list[str]) -> list[str]:
    """The shortlisted words, and every ordered two-word phrase of the nearest PAIRED_WORDS of them."""
    return words + [f"{a} {b}" for a, b in itertools.permutations(words[:PAIRED_WORDS], 2)]


def candidate_count(shortlist: int) -> int:
    """How many phrases a shortlist of that many words makes (at most: the vocabulary may hold fewer)."""
    paired = min(shortlist, PAIRED_WORDS)
    return shortlist + paired * (paired - 1)


def suggest(concept: str, token_vector: Callable[[str], torch.Tensor], vocabulary: Vocabulary,
            sentence_vectors: Callable[[list[str]], torch.Tensor], count: int = SUGGESTED, shortlist: int = SHORTLIST,
            exclude: tuple = ()) -> list[Suggestion]:
    """The `count` phrases nearest `concept` (a target line such as "a sneaker"), best first.

    `token_vector`: words -> the mean input embedding of their tokens; `sentence_vectors`: texts -> [texts, width]
    vectors from the whole encoder; `exclude`: phrases (anchor, prompts to keep) whose words are never suggested and
    that no suggestion may lie nearer than the concept."""
    article, words = concept_words(concept)
    if not re.search(r"[A-Za-z]", words):
        raise ValueError(f"target line '{concept}' names no concept: write the thing to erase, such as 'a sneaker'")
    excluded = [text.strip() for text in exclude if concept_words(text)[1]]
    skip = {w.lower() for text in [words, *excluded] for w in re.findall(r"[A-Za-z]+", concept_words(text)[1])}
    phrases = candidate_phrases(vocabulary.nearest(token_vector(words), shortlist, skip))
    phrases = [with_article(article, phrase) for phrase in phrases]
    vectors = sentence_vectors([concept, *excluded, *phrases]).float()
    vectors = torch.nn.functional.normalize(vectors, dim=1)
    similar = vectors[1 + len(excluded):] @ vectors[:1 + len(excluded)].T      # [phrases, 1 + excluded]
    nearer_the_concept = similar[:, 0] >= similar.max(1).values
    ranked = sorted(((phrase, float(s[0])) for phrase, s, kept in zip(phrases, similar, nearer_the_concept) if kept),
                    key=lambda pair: -pair[1])
    return [Suggestion(*pair) for pair in ranked[:count]]


def kept_words(vocabulary: Vocabulary, count: int, target_vectors: list[torch.Tensor], skip: set) -> list[str]:
    """`count` of the vocabulary's whole words to keep where they are beside an erasure: a fixed draw over the
    vocabulary (the same words for the same encoder, in every workflow), without the NOT_KEPT_NEAREST words nearest
    each target's token vector (its synonyms are to erase, not to keep) and without `skip`. Kept as preserved
    prompts, they stand for the prompts nobody listed: a closed-form edit then moves only what sets the targets
    apart from everyday words, rather than what every prompt shares with them."""
    near = {word for vector in target_vectors for word in vocabulary.nearest(vector, NOT_KEPT_NEAREST, set())}
    order = torch.randperm(len(vocabulary.words), generator=torch.Generator().manual_seed(KEPT_WORDS_DRAW))
    drawn = (vocabulary.words[i] for i in order.tolist())
    return list(itertools.islice((word for word in drawn if word not in near and word not in skip), count))


def kept_lines(vocabulary: Vocabulary, token_vector: Callable[[str], torch.Tensor], count: int, pairs: list[tuple],
               preserve: list[str]) -> list[str]:
    """`count` prompts to keep ('a chair'): kept_words for the targets of `pairs` ([(target, anchor)] as written),
    none of them a word of a pair or of the `preserve` lines."""
    written = [*(text for pair in pairs for text in pair), *preserve]
    skip = {word.lower() for text in written for word in re.findall(r"[A-Za-z]+", text)}
    vectors = [token_vector(concept_words(target)[1]) for target, _ in pairs]
    return [with_article("a ", word) for word in kept_words(vocabulary, count, vectors, skip)]
