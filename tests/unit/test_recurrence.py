"""The step-by-step recurrence equals nn.LSTM/nn.GRU/nn.RNN, and its gates produce those states.

Oracle: each (layer, direction) module of the model is called one step at a time on each
sequence alone (no padding), carrying its own (h, c); backward directions read the sequence
flipped. Gates are checked against PyTorch's documented equations evaluated on the oracle's
previous state.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from seqlens.families import SequenceModel, build_model
from seqlens.recurrence import GATE_NAMES, recompute, reverse_within_length
from seqlens.schema import ModelConfig

CELLS = ["lstm", "gru", "rnn_tanh", "rnn_relu"]
VOCAB = 13
TOL = 1e-5  # absolute, and relative for the unbounded relu states


def make_model(cell: str, layers: int, bidirectional: bool, hidden: int, emb: int, tokens: bool,
               seed: int, weight_scale: float = 1.0) -> SequenceModel:
    inp = {"kind": "tokens"} if tokens else {"kind": "features", "feature_names": ["a", "b", "c"]}
    cfg = ModelConfig.model_validate({
        "task": "classification", "input": inp, "max_length": 64, "labels": ["x", "y"],
        "architecture": {"input_layer": "embedding" if tokens else "linear", "embedding_dim": emb, "cell": cell,
                         "num_layers": layers, "hidden_size": hidden, "bidirectional": bidirectional,
                         "head": "last"}})
    model = build_model(cfg, VOCAB if tokens else None, seed=seed).eval()
    with torch.no_grad():
        for p in model.rnn.parameters():
            p.mul_(weight_scale)
    return model


def make_inputs(tokens: bool, lengths: list[int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t_max = max(lengths)
    if tokens:
        x = rng.integers(0, VOCAB, size=(len(lengths), t_max)).astype(np.int64)
    else:
        x = rng.standard_normal((len(lengths), t_max, 3)).astype(np.float32)
    return x, np.array(lengths, dtype=np.int64)


def expected_gates(rnn: torch.nn.Module, cell: str, x: torch.Tensor, h_prev: torch.Tensor) -> torch.Tensor:
    """PyTorch's documented gate equations: x [T,E], h_prev [T,H] -> [G,T,H]."""
    w_ih, w_hh, b_ih, b_hh = rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0
    gi, gh = F.linear(x, w_ih, b_ih), F.linear(h_prev, w_hh, b_hh)
    if cell == "lstm":
        i, f, g, o = (gi + gh).chunk(4, dim=1)
        return torch.stack([torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)])
    (ir, iz, in_), (hr, hz, hn) = gi.chunk(3, dim=1), gh.chunk(3, dim=1)
    r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
    return torch.stack([r, z, torch.tanh(in_ + r * hn)])


def oracle(model: SequenceModel, emb: torch.Tensor) -> list[list[tuple[np.ndarray, np.ndarray | None, np.ndarray]]]:
    """emb [T,E] of one sequence -> per layer, per direction: (h [T,H], c [T,H] | None, gates [G,T,H])."""
    cell = model.config.architecture.cell
    out = []
    inp = emb
    with torch.no_grad():
        for rnns in model.rnn:
            layer = []
            for d, rnn in enumerate(rnns):
                seq = inp if d == 0 else inp.flip(0)
                state = None
                hs, cs = [], []
                for t in range(seq.shape[0]):
                    _, state = rnn(seq[t].view(1, 1, -1), state)
                    if isinstance(state, tuple):
                        hs.append(state[0][0, 0])
                        cs.append(state[1][0, 0])
                    else:
                        hs.append(state[0, 0])
                h = torch.stack(hs)  # [T,H], processing order
                gates = (expected_gates(rnn, cell, seq, torch.cat([torch.zeros_like(h[:1]), h[:-1]]))
                         if GATE_NAMES[cell] else torch.zeros(0, *h.shape))
                c = torch.stack(cs) if cs else None
                if d == 1:
                    h, gates = h.flip(0), gates.flip(1)
                    c = c.flip(0) if c is not None else None
                layer.append((h.numpy(), None if c is None else c.numpy(), gates.numpy()))
            out.append(layer)
            inp = torch.cat([torch.from_numpy(h) for h, _, _ in layer], dim=1)
    return out


@settings(max_examples=40, deadline=None)
@given(cell=st.sampled_from(CELLS), layers=st.integers(1, 3), bidirectional=st.booleans(),
       hidden=st.integers(1, 12), emb=st.integers(1, 8), tokens=st.booleans(),
       lengths=st.lists(st.integers(1, 9), min_size=1, max_size=4), seed=st.integers(0, 2**16),
       weight_scale=st.sampled_from([1.0, 4.0]))
def test_recomputed_states_and_gates_equal_pytorch(cell: str, layers: int, bidirectional: bool, hidden: int,
                                                   emb: int, tokens: bool, lengths: list[int], seed: int,
                                                   weight_scale: float) -> None:
    if cell.startswith("rnn"):
        # Plain RNNs with large weights are chaotic: they amplify float32 rounding beyond 1e-5
        # (gated cells saturate instead, which is what the large scale is for).
        weight_scale = 1.0
    model = make_model(cell, layers, bidirectional, hidden, emb, tokens, seed, weight_scale)
    x, lens = make_inputs(tokens, lengths, seed)
    traces = recompute(model, x, lens)  # one padded batch
    assert len(traces) == layers and all(len(layer) == (2 if bidirectional else 1) for layer in traces)
    with torch.no_grad():
        embedded = model.embed(torch.from_numpy(x))
    for b, n in enumerate(lens):
        want = oracle(model, embedded[b, :n])
        for layer in range(layers):
            for d, (h, c, gates) in enumerate(want[layer]):
                tr = traces[layer][d]
                assert (tr.layer, tr.direction) == (layer, d)
                np.testing.assert_allclose(tr.hidden[b, :n], h, atol=TOL, rtol=TOL)
                assert tr.gates.shape[1] == len(GATE_NAMES[cell])
                np.testing.assert_allclose(tr.gates[b, :, :n], gates, atol=TOL, rtol=TOL)
                if cell == "lstm":
                    assert c is not None and tr.cell_state is not None
                    np.testing.assert_allclose(tr.cell_state[b, :n], c, atol=TOL, rtol=TOL)
                else:
                    assert tr.cell_state is None


@pytest.mark.parametrize("cell", CELLS)
def test_padding_never_reaches_real_steps(cell: str) -> None:
    """A sequence alone and the same sequence padded in a batch give the same states."""
    model = make_model(cell, 2, True, 6, 4, True, seed=3)
    x, lens = make_inputs(True, [7, 3], seed=4)
    batch = recompute(model, x, lens)
    alone = recompute(model, x[1:, :3], lens[1:])
    for layer in range(2):
        for d in range(2):
            np.testing.assert_allclose(batch[layer][d].hidden[1, :3], alone[layer][d].hidden[0], atol=1e-6)
            np.testing.assert_allclose(batch[layer][d].gates[1, :, :3], alone[layer][d].gates[0], atol=1e-6)


def test_changed_weights_are_picked_up() -> None:
    """Prepared weights are cached per module; an in-place update (training) must invalidate them."""
    model = make_model("lstm", 1, False, 5, 4, True, seed=0)
    x, lens = make_inputs(True, [6], seed=1)
    before = recompute(model, x, lens)[0][0].hidden
    with torch.no_grad():
        model.rnn[0][0].weight_hh_l0.mul_(3.0)
        want = model.run_layers(model.embed(torch.from_numpy(x)), torch.from_numpy(lens))[0][0].numpy()
    after = recompute(model, x, lens)[0][0].hidden
    assert not np.allclose(before, after)
    np.testing.assert_allclose(after, want, atol=TOL)


def test_reverse_within_length_matches_families() -> None:
    from seqlens.families import reverse_within_length as torch_reverse

    x = np.arange(2 * 5 * 3, dtype=np.float32).reshape(2, 5, 3)
    lens = np.array([5, 2])
    got = reverse_within_length(x, lens)
    want = torch_reverse(torch.from_numpy(x), torch.from_numpy(lens)).numpy()
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(reverse_within_length(got, lens), x)
