"""The shared training loop: padded (inputs, lengths) batches, Adam, a loss per task.

The family module handles padding exactly (causal forward directions, backward directions
reversed within each length, the head reading the last real step), so batches are simply
padded to their longest member; bucketing by length keeps that padding small.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..families import SequenceModel

IGNORE = -100  # target of padded steps in tagging (cross_entropy's ignore_index)
Progress = Callable[[str], None]


def seed_everything(seed: int) -> np.random.Generator:
    """Seed torch, numpy and random; return the generator the caller should use."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def pad_tokens(seqs: list[list[int]], pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    out = np.full((len(seqs), int(lengths.max())), pad_id, dtype=np.int64)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
    return out, lengths


def pad_features(seqs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """[T_i, F] arrays -> [N, T_max, F] float32 (zero padding) and lengths."""
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    out = np.zeros((len(seqs), int(lengths.max()), seqs[0].shape[1]), dtype=np.float32)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
    return out, lengths


@dataclass
class Examples:
    """A padded data set: inputs [N,T] or [N,T,F], lengths [N], targets [N], [N,T] or [N,H]."""

    inputs: Tensor
    lengths: Tensor
    targets: Tensor
    per_step: bool = False  # targets [N,T] follow the time axis (tagging)

    @classmethod
    def of(cls, inputs: np.ndarray, lengths: np.ndarray, targets: np.ndarray, per_step: bool = False
           ) -> Examples:
        return cls(torch.from_numpy(inputs), torch.from_numpy(lengths), torch.from_numpy(targets), per_step)

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    def take(self, idx: np.ndarray) -> Examples:
        """Rows ``idx``, trimmed to their longest length."""
        i = torch.from_numpy(idx)
        t = int(self.lengths[i].max())
        targets = self.targets[i][:, :t] if self.per_step else self.targets[i]
        return Examples(self.inputs[i][:, :t], self.lengths[i], targets, self.per_step)


def bucketed_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle, sort within pools of 20 batches by length, shuffle the batches: little padding,
    still random."""
    order = rng.permutation(len(lengths))
    pool = batch_size * 20
    batches: list[np.ndarray] = []
    for p in range(0, len(order), pool):
        chunk = order[p : p + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[b : b + batch_size] for b in range(0, len(chunk), batch_size))
    return [batches[j] for j in rng.permutation(len(batches))]


def forward(module: SequenceModel, batch: Examples, embed_dropout: float = 0.0) -> Tensor:
    """Training-time forward; dropout on the embedding output regularizes text models without
    changing the exported architecture (dropout is the identity in eval mode)."""
    emb = module.embed(batch.inputs)
    if embed_dropout and module.training:
        emb = F.dropout(emb, embed_dropout)
    return module.forward_from_embedding(emb, batch.lengths)


def task_loss(module: SequenceModel, out: Tensor, targets: Tensor, weight: Tensor | None = None) -> Tensor:
    task = module.config.task
    if task == "classification":
        return F.cross_entropy(out, targets, weight=weight)
    if task == "tagging":
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), targets.reshape(-1), weight=weight,
                               ignore_index=IGNORE)
    # Horizon outputs are de-normalized inside the model; compare on the normalized scale.
    scale = module.output_std
    return F.mse_loss((out - module.output_mean) / scale, (targets - module.output_mean) / scale)


@torch.no_grad()
def predict(module: SequenceModel, data: Examples, batch_size: int = 256) -> list[Tensor]:
    """Raw outputs per batch, in order (eval mode; restores the previous mode)."""
    was = module.training
    module.eval()
    outs = [module(b.inputs, b.lengths)
            for b in (data.take(np.arange(s, min(s + batch_size, len(data))))
                      for s in range(0, len(data), batch_size))]
    module.train(was)
    return outs


@dataclass
class Schedule:
    epochs: int
    lr: float = 3e-3
    batch_size: int = 64
    weight_decay: float = 0.0
    clip: float = 1.0
    embed_dropout: float = 0.0
    augment: Callable[[Examples, np.random.Generator], Examples] | None = None
    label_weights: list[float] | None = None  # per-class loss weights (rare entity tags)


def fit(module: SequenceModel, train: Examples, schedule: Schedule, rng: np.random.Generator, *,
        name: str, progress: Progress,
        validate: Callable[[SequenceModel], float] | None = None) -> SequenceModel:
    """Train in place. With ``validate`` (higher is better, on data outside ``train``) the
    weights of the best epoch are kept, so the epoch count is an upper bound, not a guess."""
    opt = torch.optim.Adam(module.parameters(), lr=schedule.lr, weight_decay=schedule.weight_decay)
    lengths = train.lengths.numpy()
    weight = torch.tensor(schedule.label_weights) if schedule.label_weights else None
    best_score, best_state = -float("inf"), None
    for epoch in range(1, schedule.epochs + 1):
        start = time.perf_counter()
        module.train()
        total, count = 0.0, 0
        for idx in bucketed_batches(lengths, schedule.batch_size, rng):
            batch = train.take(idx)
            if schedule.augment is not None:
                batch = schedule.augment(batch, rng)
            loss = task_loss(module, forward(module, batch, schedule.embed_dropout), batch.targets, weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), schedule.clip)
            opt.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        line = f"[{name}] epoch {epoch}/{schedule.epochs} loss {total / count:.4f}"
        if validate is not None:
            score = validate(module)
            line += f" validation {score:.4f}"
            if score > best_score:
                best_score, best_state = score, copy.deepcopy(module.state_dict())
        progress(f"{line} ({time.perf_counter() - start:.1f}s)")
    if best_state is not None:
        module.load_state_dict(best_state)
    return module.eval()
