"""Bag-of-words text classification on words of the Python standard library's source (held-out,
``final`` group): which module does a snippet of a few lines come from?

The modules are disjoint from the ones :mod:`rlhpo.tasks.charlm` reads, and the representation
is different (a bag of lower-cased words, not a character stream). The model is a fastText-style
embedding bag (mean of word embeddings) followed by a linear classifier or one hidden layer.
Nothing is fetched.
"""

from __future__ import annotations

import re
import sysconfig
from collections import Counter
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rlhpo.tasks.base import (
    CLASSIFICATION,
    Split,
    Task,
    TaskFamily,
    sample_default_hparams,
    scale_init,
)
from rlhpo.tasks.charlm import CORPUS_MODULES

#: single-file stdlib modules present in CPython 3.10-3.13, none of them char_lm's
BOW_MODULES = (
    "ftplib", "smtplib", "imaplib", "poplib", "tarfile", "gzip", "configparser", "gettext", "mailbox",
    "platform", "selectors", "shutil", "statistics", "tempfile", "threading", "uuid", "plistlib", "pprint",
    "ipaddress", "heapq", "base64", "tokenize", "optparse", "socket", "ssl", "pdb", "bdb", "pstats",
    "webbrowser", "functools", "weakref", "zipimport", "pkgutil", "http/client", "urllib/parse",
    "email/message", "logging/handlers", "asyncio/tasks",
)  # fmt: skip
assert not set(BOW_MODULES) & set(CORPUS_MODULES)
PAD, OOV = 0, 1
MAX_TOKENS = 48
_WORD = re.compile(r"[A-Za-z]+")


@lru_cache(maxsize=None)
def _lines(module: str) -> tuple[str, ...]:
    path = Path(sysconfig.get_paths()["stdlib"]) / f"{module}.py"
    text = path.read_text(encoding="utf-8", errors="replace")
    return tuple(line for line in text.splitlines() if line.strip())


def _documents(module: str, lines_per_doc: int) -> list[list[str]]:
    lines = _lines(module)
    docs = []
    for i in range(0, len(lines) - lines_per_doc + 1, lines_per_doc):
        words = _WORD.findall(" ".join(lines[i : i + lines_per_doc]).lower())
        if len(words) >= 3:
            docs.append(words[:MAX_TOKENS])
    return docs


class MeanBag(nn.Module):
    """An embedding bag in mean mode: the mean embedding of a row's non-padding tokens.

    ``nn.EmbeddingBag(mode="mean", padding_idx=0)`` computes the same, but has no ``vmap``
    batching rule for ``padding_idx`` (the stacked trainer would fall back to a slow loop)."""

    def __init__(self, vocab: int, embed: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, embed, padding_idx=PAD)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = (x != PAD).sum(dim=-1, keepdim=True).clamp_min(1)
        return self.embed(x).sum(dim=-2) / n


class BagOfWords(nn.Module):
    def __init__(self, vocab: int, n_classes: int, embed: int, hidden: int) -> None:
        super().__init__()
        self.bag = MeanBag(vocab, embed)
        if hidden:
            self.head: nn.Module = nn.Sequential(nn.Linear(embed, hidden), nn.Hardswish(), nn.Linear(hidden, n_classes))
        else:
            self.head = nn.Linear(embed, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.bag(x))


class CodeBagOfWords(TaskFamily):
    name = "code_bow"
    description = (
        "which of 3-8 standard-library modules a 3-6 line snippet comes from, as a bag of words; "
        "embedding bag (mean) + linear or one-hidden-layer (Hardswish) classifier"
    )
    novelty = "embedding-bag architecture and word-level text classification (both never seen in meta-training)"
    data_source = "stdlib source text, words (modules disjoint from char_lm's)"
    architecture = "BagOfWords (mean embedding bag + linear/Hardswish head)"

    def _sample(self, rng: np.random.Generator, seed: int) -> Task:
        n_classes = int(rng.integers(3, 9))
        modules = [BOW_MODULES[i] for i in rng.choice(len(BOW_MODULES), n_classes, replace=False)]
        lines_per_doc = int(rng.choice([3, 4, 6]))
        docs, labels = [], []
        for label, module in enumerate(modules):
            d = _documents(module, lines_per_doc)
            docs += d
            labels += [label] * len(d)
        perm = rng.permutation(len(docs))
        n_train, n_val = int(0.6 * len(docs)), int(0.2 * len(docs))
        parts = (perm[:n_train], perm[n_train : n_train + n_val], perm[n_train + n_val :])
        # the vocabulary comes from training snippets only; rarer words map to OOV
        counts = Counter(w for i in parts[0] for w in docs[i])
        max_vocab = int(rng.choice([500, 1000, 2000]))
        kept = sorted((w for w, c in counts.items() if c >= 2), key=lambda w: (-counts[w], w))[: max_vocab - 2]
        index = {w: i + 2 for i, w in enumerate(kept)}
        vocab = len(kept) + 2
        codes = np.zeros((len(docs), MAX_TOKENS), dtype=np.int64)
        for i, words in enumerate(docs):
            codes[i, : len(words)] = [index.get(w, OOV) for w in words]
        x, y = torch.as_tensor(codes), torch.as_tensor(np.asarray(labels, dtype=np.int64))
        train, val, test = (Split(x[p], y[p]) for p in parts)
        embed = int(rng.choice([16, 32, 64]))
        hidden = int(rng.choice([0, 32, 64]))
        init_scale = float(10 ** rng.uniform(-0.3, 0.3))
        opt, hp = sample_default_hparams(rng, len(train))
        arch = dict(embed=embed, hidden=hidden, init_scale=init_scale, vocab=vocab)
        return self.make_task(
            seed,
            lambda: scale_init(BagOfWords(vocab, n_classes, embed, hidden), init_scale),
            (train, val, test),
            CLASSIFICATION,
            int(np.clip(rng.uniform(6, 15) * len(train), 4000, 20000)),
            (opt, hp),
            dict(arch, modules=tuple(modules), lines_per_doc=lines_per_doc, classes=n_classes),
            variant=f"{n_classes}way",
        )
