"""The built-in model family: input layer -> RNN/LSTM/GRU stack -> head.

Every module takes ``(inputs, lengths)`` so that a padded batch gives exactly the
unpadded answers:
- forward directions are causal, so padding after a sequence never reaches its real steps;
- backward directions run on each sequence reversed within its own length (a gather
  that leaves the padding at the end), then are reversed back;
- the ``last`` head reads each direction's final real state.
Each (layer, direction) is its own single-layer ``nn.LSTM``/``nn.GRU``/``nn.RNN`` so the
exported ONNX graph keeps one recurrent op per direction and the state recomputation in
``summaries`` can read each direction's weights directly.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .schema import ModelConfig, TokenInput

RNNModule = nn.LSTM | nn.GRU | nn.RNN
# A unidirectional stack's state: per layer, (h [B,H],) or (h, c) for LSTMs (docs/stateful.md).
LayerStates = list[tuple[Tensor, ...]]


def reverse_within_length(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse each sequence of ``x`` [B,T,D] within its length; padding stays in place.

    Applying it twice gives back ``x``.
    """
    t = torch.arange(x.shape[1], device=x.device).unsqueeze(0)  # [1,T]
    n = lengths.to(t.dtype).unsqueeze(1)  # [B,1]
    idx = torch.where(t < n, n - 1 - t, t)  # [B,T]
    return x.gather(1, idx.unsqueeze(-1).expand(-1, -1, x.shape[2]))


def last_real_step(x: Tensor, lengths: Tensor) -> Tensor:
    """x [B,T,D] -> [B,D], the state at position length-1 of each sequence."""
    idx = (lengths.to(torch.int64) - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, x.shape[2])
    return x.gather(1, idx).squeeze(1)


def _make_rnn(cell: str, input_size: int, hidden: int) -> RNNModule:
    if cell == "lstm":
        return nn.LSTM(input_size, hidden, batch_first=True)
    if cell == "gru":
        return nn.GRU(input_size, hidden, batch_first=True)
    return nn.RNN(input_size, hidden, batch_first=True, nonlinearity="relu" if cell == "rnn_relu" else "tanh")


class SequenceModel(nn.Module):
    """A model of the built-in family described by ``config.architecture``."""

    feature_mean: Tensor  # [F] buffers (feature models)
    feature_std: Tensor
    output_mean: Tensor  # scalar buffers (horizon heads)
    output_std: Tensor

    def __init__(self, config: ModelConfig, vocab_size: int | None = None) -> None:
        super().__init__()
        self.config = config
        arch = config.family
        self.embedding: nn.Embedding | None = None
        self.input_proj: nn.Linear | None = None
        if isinstance(config.input, TokenInput):
            if not vocab_size:
                raise ValueError("token models need vocab_size")
            self.embedding = nn.Embedding(vocab_size, arch.embedding_dim, padding_idx=config.input.pad_id)
        else:
            nf = config.num_features
            mean = config.input.mean or [0.0] * nf
            std = config.input.std or [1.0] * nf
            self.register_buffer("feature_mean", torch.tensor(mean, dtype=torch.float32))
            self.register_buffer("feature_std", torch.tensor(std, dtype=torch.float32))
            self.input_proj = nn.Linear(nf, arch.embedding_dim)
        dirs = arch.directions
        layers = []
        for layer in range(arch.num_layers):
            size_in = arch.embedding_dim if layer == 0 else arch.hidden_size * dirs
            layers.append(nn.ModuleList(_make_rnn(arch.cell, size_in, arch.hidden_size) for _ in range(dirs)))
        self.rnn = nn.ModuleList(layers)
        self.head = nn.Linear(arch.hidden_size * dirs, config.num_outputs)
        scale = config.output_scale
        self.register_buffer("output_mean", torch.tensor(scale.mean if scale else 0.0))
        self.register_buffer("output_std", torch.tensor(scale.std if scale else 1.0))

    # --- pieces, used by explainers and summaries -------------------------------------
    def embed(self, inputs: Tensor) -> Tensor:
        """inputs: token ids [B,T] int64 or features [B,T,F] -> [B,T,E]."""
        if self.embedding is not None:
            return self.embedding(inputs)
        assert self.input_proj is not None
        return self.input_proj((inputs - self.feature_mean) / self.feature_std)

    def run_layers(self, x: Tensor, lengths: Tensor) -> list[list[Tensor]]:
        """x [B,T,E] -> per layer, per direction, the outputs [B,T,H] in original time order."""
        outs: list[list[Tensor]] = []
        for directions in self.rnn:
            layer_out: list[Tensor] = []
            for d, rnn in enumerate(cast(nn.ModuleList, directions)):
                src = x if d == 0 else reverse_within_length(x, lengths)
                y, _ = rnn(src)
                layer_out.append(y if d == 0 else reverse_within_length(y, lengths))
            outs.append(layer_out)
            x = torch.cat(layer_out, dim=2) if len(layer_out) > 1 else layer_out[0]
        return outs

    def final_features(self, top: list[Tensor], lengths: Tensor) -> Tensor:
        """Top layer outputs -> what the head reads: [B,T,H*dirs] per step or [B,H*dirs]."""
        if self.config.head == "per_step":
            return torch.cat(top, dim=2) if len(top) > 1 else top[0]
        parts = [last_real_step(top[0], lengths)]
        if len(top) > 1:
            parts.append(top[1][:, 0, :])  # backward direction ends at position 0
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]

    def apply_head(self, features: Tensor) -> Tensor:
        out = self.head(features)
        if self.config.head == "horizon":
            out = out * self.output_std + self.output_mean
        return out

    def forward_from_embedding(self, emb: Tensor, lengths: Tensor) -> Tensor:
        top = self.run_layers(emb, lengths)[-1]
        return self._outputs(top, lengths)

    def _outputs(self, top: list[Tensor], lengths: Tensor) -> Tensor:
        out = self.apply_head(self.final_features(top, lengths))
        if self.config.head == "per_step":
            # Zero the padding so that outputs never depend on it (and `lengths` stays
            # a graph input even for unidirectional taggers).
            t = torch.arange(out.shape[1], device=out.device).unsqueeze(0)
            out = out * (t < lengths.to(t.dtype).unsqueeze(1)).unsqueeze(2).to(out.dtype)
        return out

    # --- carried state (unidirectional stacks; docs/stateful.md) ----------------------------
    def zero_states(self, batch: int) -> LayerStates:
        arch = self.config.family
        n = 2 if arch.cell == "lstm" else 1
        return [tuple(torch.zeros(batch, arch.hidden_size) for _ in range(n)) for _ in range(arch.num_layers)]

    def run_layers_from(self, x: Tensor, lengths: Tensor, initial: LayerStates, *, uniform: bool | None = None
                        ) -> tuple[Tensor, LayerStates]:
        """A unidirectional stack from ``initial``: x [B,T,E] -> (top outputs [B,T,H], the state
        after each sequence's own last step). Mixed lengths run packed, so that each state
        stops at its length; ``uniform=True`` promises equal lengths (the ONNX export)."""
        if self.config.family.bidirectional:
            raise ValueError("a bidirectional stack has no state to carry")
        if uniform is None:
            uniform = bool((lengths == x.shape[1]).all())
        finals: LayerStates = []
        for directions, state in zip(self.rnn, initial, strict=True):
            rnn = cast(RNNModule, cast(nn.ModuleList, directions)[0])
            hx = tuple(s.unsqueeze(0).contiguous() for s in state)  # [1,B,H]
            h0: tuple[Tensor, Tensor] | Tensor = (hx[0], hx[1]) if isinstance(rnn, nn.LSTM) else hx[0]
            if uniform:
                y, hn = rnn(x, h0)
            else:
                packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
                yp, hn = rnn(packed, h0)
                y, _ = pad_packed_sequence(yp, batch_first=True, total_length=x.shape[1])
            finals.append(tuple(t.squeeze(0) for t in (hn if isinstance(hn, tuple) else (hn,))))
            x = y
        return x, finals

    def forward_from_embedding_with_state(self, emb: Tensor, lengths: Tensor, initial: LayerStates, *,
                                          uniform: bool | None = None) -> tuple[Tensor, LayerStates]:
        """Like ``forward_from_embedding``, continuing from ``initial``; also the final states."""
        top, finals = self.run_layers_from(emb, lengths, initial, uniform=uniform)
        return self._outputs([top], lengths), finals

    def forward_with_state(self, inputs: Tensor, lengths: Tensor, initial: LayerStates, *,
                           uniform: bool | None = None) -> tuple[Tensor, LayerStates]:
        return self.forward_from_embedding_with_state(self.embed(inputs), lengths, initial, uniform=uniform)

    def forward(self, inputs: Tensor, lengths: Tensor) -> Tensor:
        """-> logits [B,C], per-step logits [B,T,C] or values [B,H]."""
        return self.forward_from_embedding(self.embed(inputs), lengths)


def build_model(config: ModelConfig, vocab_size: int | None = None, seed: int | None = None) -> SequenceModel:
    if seed is not None:
        torch.manual_seed(seed)
    return SequenceModel(config, vocab_size)
