"""A tiny character-level language model on text already on the machine: the Python standard
library's own source files. Nothing is fetched."""

from __future__ import annotations

import sysconfig
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rlhpo.tasks.base import (
    SEQUENCE_CLASSIFICATION,
    Split,
    Task,
    TaskFamily,
    sample_default_hparams,
    scale_init,
)

VOCAB = 128  # ASCII; any other character maps to 0
#: stdlib modules whose source makes the corpus (stable across CPython 3.10-3.13)
CORPUS_MODULES = ("argparse", "textwrap", "json/decoder", "csv", "difflib", "fractions", "calendar", "shlex")


@lru_cache(maxsize=None)
def _corpus(module: str) -> np.ndarray:
    path = Path(sysconfig.get_paths()["stdlib"]) / f"{module}.py"
    text = path.read_text(encoding="utf-8", errors="replace")
    codes = np.frombuffer(text.encode("ascii", errors="replace"), dtype=np.uint8).astype(np.int64)
    codes[codes >= VOCAB] = 0
    return codes


class CharGRU(nn.Module):
    def __init__(self, embed: int, hidden: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, embed)
        self.rnn = nn.GRU(embed, hidden, batch_first=True)
        self.head = nn.Linear(hidden, VOCAB)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.rnn(self.embed(x))
        return self.head(h)


class CharLM(TaskFamily):
    name = "char_lm"
    description = "character-level GRU language model on Python standard-library source text"
    novelty = "recurrent architecture and text data (both never seen in meta-training)"
    data_source = "stdlib source text, characters (argparse, textwrap, json.decoder, csv, difflib, fractions, calendar, shlex)"
    architecture = "CharGRU (Embedding + GRU)"
    usual_batch_size = 16

    def _sample(self, rng: np.random.Generator, seed: int) -> Task:
        module = CORPUS_MODULES[int(rng.integers(len(CORPUS_MODULES)))]
        codes = _corpus(module)
        seq = int(rng.choice([16, 32]))
        offset = int(rng.integers(seq))
        n = (len(codes) - offset - 1) // seq
        n = min(n, 3000)
        chunks = np.stack([codes[offset + i * seq : offset + i * seq + seq + 1] for i in range(n)])
        # contiguous blocks so validation/test text is not interleaved with training text
        n_train, n_val = int(0.7 * n), int(0.15 * n)
        t = torch.as_tensor(chunks)
        train = Split(t[:n_train, :-1], t[:n_train, 1:])
        val = Split(t[n_train : n_train + n_val, :-1], t[n_train : n_train + n_val, 1:])
        test = Split(t[n_train + n_val :, :-1], t[n_train + n_val :, 1:])
        embed = int(rng.choice([16, 32]))
        hidden = int(rng.choice([32, 64, 96]))
        init_scale = float(10 ** rng.uniform(-0.3, 0.3))
        opt, hp = sample_default_hparams(rng, len(train))
        return self.make_task(
            seed,
            lambda: scale_init(CharGRU(embed, hidden), init_scale),
            (train, val, test),
            SEQUENCE_CLASSIFICATION,
            int(rng.integers(3000, 8000)),
            (opt, hp),
            dict(module=module, seq=seq, embed=embed, hidden=hidden, init_scale=init_scale),
            variant=module.replace("/", "."),
            eval_max_examples=256,
        )
