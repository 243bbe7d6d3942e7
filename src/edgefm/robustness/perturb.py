"""Seeded, offline perturbations that turn any clean suite into an adversarial variant.

- ``typo``: character-level noise on a share of words — swap two adjacent letters, delete one,
  insert or substitute a keyboard neighbour (as in TextBugger, Li et al. NDSS 2019).
- ``synonym``: word substitution by nearest neighbours in the judged model's own input-embedding
  space (the TextFooler recipe, Jin et al. AAAI 2020, without its counter-fitted vectors: raw
  embedding neighbours can be antonyms, which makes this attack stronger and less
  meaning-preserving than TextFooler's — read its ASR with that in mind).
- ``distract``: append a tautology that changes no label ("and true is true"), the distraction
  test of Naik et al., "Stress Test Evaluation for Natural Language Inference" (COLING 2018).

We checked existing libraries first: nlpaug draws from Python's global ``random`` state and its
synonym augmenter needs a WordNet download; TextAttack and TextFlint download models and data
on first use. None runs offline and seeded as we need, so these are written here.
"""

from __future__ import annotations

import re

import numpy as np

from edgefm import EdgefmError

KEYBOARD = ["qwertyuiop", "asdfghjkl", "zxcvbnm"]
DISTRACTORS = [" and true is true .", " and false is not true .", " and a is a ."]
WORD = re.compile(r"[A-Za-z]+")
KINDS = ("typo", "synonym", "distract")


def _neighbours_on_keyboard() -> dict[str, str]:
    near: dict[str, str] = {}
    for r, row in enumerate(KEYBOARD):
        for c, ch in enumerate(row):
            around = [row[c - 1] if c > 0 else "", row[c + 1] if c + 1 < len(row) else ""]
            for rr in (r - 1, r + 1):
                if 0 <= rr < len(KEYBOARD) and c < len(KEYBOARD[rr]):
                    around.append(KEYBOARD[rr][c])
            near[ch] = "".join(around)
    return near


NEAR = _neighbours_on_keyboard()


def _typo_word(word: str, rng: np.random.Generator) -> str:
    if len(word) < 4:
        return word
    i = int(rng.integers(1, len(word) - 1))  # keep the first letter: people still read the word
    op = int(rng.integers(4))
    lower = word[i].lower()
    if op == 0:
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if op == 1:
        return word[:i] + word[i + 1 :]
    near = NEAR.get(lower, lower) or lower
    ch = near[int(rng.integers(len(near)))]
    return word[:i] + ch + word[i:] if op == 2 else word[:i] + ch + word[i + 1 :]


def typo(text: str, rng: np.random.Generator, rate: float = 0.25) -> str:
    return WORD.sub(lambda m: _typo_word(m.group(0), rng) if rng.random() < rate else m.group(0), text)


class EmbeddingSynonyms:
    """Nearest whole-word neighbours in a model's input-embedding matrix (cosine)."""

    def __init__(self, embeddings: np.ndarray, vocab: dict[str, int], k: int = 5, max_words: int = 20000):
        words = [
            w
            for w, i in sorted(vocab.items(), key=lambda x: x[1])
            if w.isalpha() and len(w) > 2 and i < len(embeddings)
        ]
        words = words[:max_words]
        ids = np.array([vocab[w] for w in words])
        emb = embeddings[ids]
        emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        self.words, self.index = words, {w: j for j, w in enumerate(words)}
        self.emb, self.k = emb, k

    def candidates(self, word: str) -> list[str]:
        j = self.index.get(word.lower())
        if j is None:
            return []
        sims = self.emb @ self.emb[j]
        order = np.argsort(-sims)[1 : self.k + 1]
        return [self.words[o] for o in order if self.words[o] != word.lower()]

    @classmethod
    def from_tokenizer_and_model(cls, tokenizer, encoder, **kw) -> EmbeddingSynonyms:
        emb = encoder.get_input_embeddings().weight.detach().cpu().numpy()
        return cls(emb, tokenizer.get_vocab(), **kw)


def synonym(text: str, rng: np.random.Generator, table: EmbeddingSynonyms, rate: float = 0.2) -> str:
    def swap(m: re.Match) -> str:
        word = m.group(0)
        if len(word) < 3 or rng.random() >= rate:
            return word
        cands = table.candidates(word)
        if not cands:
            return word
        new = cands[int(rng.integers(len(cands)))]
        return new.capitalize() if word[0].isupper() else new

    return WORD.sub(swap, text)


def distract(text: str, rng: np.random.Generator) -> str:
    return text.rstrip() + DISTRACTORS[int(rng.integers(len(DISTRACTORS)))]


def perturb_texts(
    texts: list[tuple[str, ...]],
    kind: str,
    seed: int,
    table: EmbeddingSynonyms | None = None,
) -> list[tuple[str, ...]]:
    """Perturb the last field of every example (the hypothesis/second sentence for pairs)."""
    if kind not in KINDS:
        raise EdgefmError(f"--perturb {kind!r}: unknown; expected one of {', '.join(KINDS)}")
    if kind == "synonym" and table is None:
        raise EdgefmError("--perturb synonym needs an embedding table (the judged model's, or MiniLM's)")
    out = []
    for k, fields in enumerate(texts):
        rng = np.random.default_rng([seed, k])  # per example: adding examples never shifts others
        last = fields[-1]
        new = (
            typo(last, rng)
            if kind == "typo"
            else synonym(last, rng, table)
            if kind == "synonym"
            else distract(last, rng)
        )
        out.append((*fields[:-1], new))
    return out
