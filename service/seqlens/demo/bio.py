"""Two biology demos built as ``kind: onnx`` versions with ``seqlens.build_version``.

- ``splice``: the seed's ``MyRNN`` cell, unchanged, over one-hot nucleotides (UCI splice junctions).
  Its state has no nonlinearity (a linear recurrence), so it is trained with a small initial
  recurrent weight and gradient clipping (see RESULTS.md).
- ``peptides``: attention pooling over an ``nn.LSTM``, antimicrobial vs other peptides (modlAMP's
  AMPvsUniProt), as a sequence module ``forward(inputs, lengths)``.

Each builder seeds everything first, so a build is a pure function of the code and the data.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..schema import TokenInput
from ..tokenizers import Tokenizer, Vocabulary
from . import data as D
from .metrics import accuracy, majority_accuracy
from .train import Progress, bucketed_batches, pad_tokens, seed_everything

PAD, UNK = "<pad>", "<unk>"
SPLICE_MAX_LENGTH = 60
PEPTIDE_MAX_LENGTH = 200
REFERENCE_SIZE = 64


@dataclass
class CustomTrained:
    """A trained user-style module and the ``build_version`` arguments that describe it."""

    module: nn.Module
    build: dict[str, Any]
    metrics: dict[str, float]
    extra_seconds: dict[str, float] = field(default_factory=dict)


# --- the seed's cell, exactly as written (only type hints on the signature are absent) -----------
class MyRNN(nn.Module):
    def __init__(self, input_size, hidden_size, output_size):  # type: ignore[no-untyped-def]
        super().__init__()
        self.hidden_size = hidden_size
        self.i2h = nn.Linear(input_size + hidden_size, hidden_size)
        self.i2o = nn.Linear(input_size + hidden_size, output_size)
        self.softmax = nn.LogSoftmax(dim=1)

    def forward(self, input, hidden):  # type: ignore[no-untyped-def]
        combined = torch.cat((input, hidden), 1)
        hidden = self.i2h(combined)
        output = self.i2o(combined)
        output = self.softmax(output)
        return output, hidden

    def initHidden(self):  # type: ignore[no-untyped-def]
        return torch.zeros(1, self.hidden_size)


class AttentionLSTM(nn.Module):
    """Embedding -> LSTM -> attention pooling over the real steps -> logits. Unidirectional, so
    padding after a sequence never reaches its real steps; the attention masks it out."""

    def __init__(self, vocab_size: int, embedding_dim: int, hidden_size: int, num_labels: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.lstm = nn.LSTM(embedding_dim, hidden_size, batch_first=True)
        self.score = nn.Linear(hidden_size, 1)
        self.head = nn.Linear(hidden_size, num_labels)

    def forward(self, inputs: Tensor, lengths: Tensor) -> Tensor:
        h, _ = self.lstm(self.embedding(inputs))
        real = torch.arange(inputs.shape[1])[None, :] < lengths[:, None]
        scores = self.score(h).squeeze(-1).masked_fill(~real, -1e9)
        weights = torch.softmax(scores, dim=1)
        return self.head((weights.unsqueeze(-1) * h).sum(dim=1))


# --- shared helpers ------------------------------------------------------------------------------
def _encode(texts: list[str], tokenizer: Tokenizer) -> tuple[np.ndarray, np.ndarray]:
    return pad_tokens([[s.id for s in tokenizer.encode(t)] for t in texts], tokenizer.spec.pad_id)


@contextmanager
def one_thread() -> Iterator[None]:
    """Train these small models on one torch thread: each step runs a few tiny ops, where a second
    thread only adds synchronisation (on a loaded 2-core machine one MyRNN epoch took 127 s with 2
    threads and 6 s with 1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _fit(module: nn.Module, logits: Callable[[Tensor, Tensor], Tensor], x: np.ndarray, lengths: np.ndarray,
         y: np.ndarray, *, epochs: int, lr: float, batch_size: int, clip: float, rng: np.random.Generator,
         validate: Callable[[], float], name: str, progress: Progress) -> None:
    """Adam on cross-entropy (``logits`` may be log-probabilities), keeping the best validation epoch."""
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    xt, lt, yt = torch.from_numpy(x), torch.from_numpy(lengths), torch.from_numpy(y)
    best, best_state = -1.0, copy.deepcopy(module.state_dict())
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        module.train()
        total = 0.0
        for idx in bucketed_batches(lengths, batch_size, rng):
            i = torch.from_numpy(idx)
            t = int(lt[i].max())
            loss = F.cross_entropy(logits(xt[i, :t], lt[i]), yt[i])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), clip)
            opt.step()
            total += float(loss.detach()) * len(idx)
        module.eval()
        score = validate()
        if score > best:
            best, best_state = score, copy.deepcopy(module.state_dict())
        progress(f"[{name}] epoch {epoch}/{epochs} loss {total / len(y):.4f} validation {score:.4f} "
                 f"({time.perf_counter() - start:.1f}s)")
    module.load_state_dict(best_state)
    module.eval()


def _predict(logits: Callable[[Tensor, Tensor], Tensor], x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return logits(torch.from_numpy(x), torch.from_numpy(lengths)).argmax(dim=1).numpy()


def _reference(x: np.ndarray, lengths: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    idx = np.sort(rng.choice(len(lengths), size=min(REFERENCE_SIZE, len(lengths)), replace=False))
    t = int(lengths[idx].max())
    return np.ascontiguousarray(x[idx, :t]), lengths[idx].copy()


# --- splice: MyRNN over one-hot DNA --------------------------------------------------------------
SPLICE_HIDDEN, SPLICE_EPOCHS, SPLICE_LR, SPLICE_CLIP = 32, 20, 3e-3, 1.0
SPLICE_BATCH = 64
SPLICE_RECURRENT_GAIN, SPLICE_INPUT_GAIN = 0.97, 0.1  # recurrent block: gain x orthogonal


def run_cell(cell: MyRNN, onehot: Tensor, lengths: Tensor) -> Tensor:
    """The training-time loop over a padded batch: the same masking as the exported loop (state
    frozen after each row's length, output read at its last step)."""
    batch = onehot.shape[0]
    hidden = cell.initHidden().expand(batch, -1)
    last = torch.zeros(batch, cell.i2o.out_features)
    for t in range(onehot.shape[1]):
        out, new = cell(onehot[:, t], hidden)
        hidden = torch.where((lengths > t)[:, None], new, hidden)
        last = torch.where((lengths - 1 == t)[:, None], out, last)
    return last


@one_thread()
def splice(progress: Progress) -> CustomTrained:
    rng = seed_everything(21)
    seqs, labels = D.load_splice()
    vocab = [PAD, UNK, *D.NUCLEOTIDES]
    spec = TokenInput(tokenizer="char", lowercase=False)
    tokenizer = Tokenizer(spec, Vocabulary(vocab))
    x, lengths = _encode(seqs, tokenizer)  # ambiguous letters (N, D, R, S) become <unk>
    y = np.array(labels, dtype=np.int64)
    order = np.random.default_rng(2021).permutation(len(y))  # the file is sorted by class
    n_test, n_val = len(y) // 5, len(y) // 10
    test, val, fit_idx = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    cell = MyRNN(len(vocab), SPLICE_HIDDEN, len(D.SPLICE_LABELS))
    with torch.no_grad():
        # The state recurrence is linear: start it as a slightly contracting rotation, so that a
        # letter 30 steps back still reaches the output (a small random matrix forgets it), and
        # the input and output weights small.
        v = len(vocab)
        cell.i2h.weight[:, v:] = torch.nn.init.orthogonal_(torch.empty(SPLICE_HIDDEN, SPLICE_HIDDEN)) * SPLICE_RECURRENT_GAIN
        cell.i2h.weight[:, :v].mul_(SPLICE_INPUT_GAIN)
        cell.i2h.bias.zero_()
    eye = torch.eye(len(vocab))

    def logits(ids: Tensor, lens: Tensor) -> Tensor:
        return run_cell(cell, F.embedding(ids, eye), lens)

    _fit(cell, logits, x[fit_idx], lengths[fit_idx], y[fit_idx], epochs=SPLICE_EPOCHS, lr=SPLICE_LR,
         batch_size=SPLICE_BATCH, clip=SPLICE_CLIP, rng=rng, name="splice", progress=progress,
         validate=lambda: accuracy(_predict(logits, x[val], lengths[val]), y[val]))
    metrics = {"accuracy": accuracy(_predict(logits, x[test], lengths[test]), y[test]),
               "majority_accuracy": majority_accuracy(y[fit_idx].tolist(), y[test].tolist()),
               "train_rows": float(len(fit_idx)), "validation_rows": float(len(val)), "test_rows": float(len(test))}
    build = {"protocol": "cell", "task": "classification", "input": spec, "vocabulary": vocab,
             "max_length": SPLICE_MAX_LENGTH, "labels": D.SPLICE_LABELS,
             "reference": _reference(x[fit_idx], lengths[fit_idx], rng),
             "description": "Splice junctions in primate DNA (UCI; EI donor, IE acceptor, N neither): the "
                            "seed's MyRNN cell over one-hot nucleotides, 60 nt windows."}
    return CustomTrained(cell, build, metrics)


# --- peptides: attention over an LSTM ------------------------------------------------------------
PEPTIDE_EPOCHS, PEPTIDE_LR = 10, 3e-3


@one_thread()
def peptides(progress: Progress) -> CustomTrained:
    rng = seed_everything(22)
    seqs, labels = D.load_peptides()
    letters = sorted({ch for s in seqs for ch in s})
    vocab = [PAD, UNK, *letters]
    spec = TokenInput(tokenizer="char", lowercase=False)
    tokenizer = Tokenizer(spec, Vocabulary(vocab))
    test_mask = np.array([D.held_out("peptide:" + s) for s in seqs])
    val_mask = np.array([D.held_out("peptide-val:" + s, every=10) for s in seqs]) & ~test_mask
    fit_mask = ~test_mask & ~val_mask
    x, lengths = _encode([s[:PEPTIDE_MAX_LENGTH] for s in seqs], tokenizer)
    y = np.array(labels, dtype=np.int64)
    module = AttentionLSTM(len(vocab), 16, 32, len(D.PEPTIDE_LABELS))
    fit_idx, val, test = (np.flatnonzero(m) for m in (fit_mask, val_mask, test_mask))
    _fit(module, module, x[fit_idx], lengths[fit_idx], y[fit_idx], epochs=PEPTIDE_EPOCHS, lr=PEPTIDE_LR,
         batch_size=32, clip=1.0, rng=rng, name="peptides", progress=progress,
         validate=lambda: accuracy(_predict(module, x[val], lengths[val]), y[val]))
    metrics = {"accuracy": accuracy(_predict(module, x[test], lengths[test]), y[test]),
               "majority_accuracy": majority_accuracy(y[fit_idx].tolist(), y[test].tolist()),
               "train_rows": float(len(fit_idx)), "validation_rows": float(len(val)), "test_rows": float(len(test))}
    build = {"protocol": "sequence", "task": "classification", "input": spec, "vocabulary": vocab,
             "max_length": PEPTIDE_MAX_LENGTH, "labels": D.PEPTIDE_LABELS, "causal": False,
             "reference": _reference(x[fit_idx], lengths[fit_idx], rng),
             "description": "Antimicrobial peptides vs UniProt peptides (modlAMP AMPvsUniProt, deduplicated): "
                            "attention pooling over an LSTM on amino-acid letters."}
    return CustomTrained(module, build, metrics)


CUSTOM_BUILDERS: dict[str, Callable[[Progress], CustomTrained]] = {"splice": splice, "peptides": peptides}
