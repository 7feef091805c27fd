"""Every family: ONNX Runtime equals torch, and a padded batch equals each sequence alone."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from seqlens.export import export_onnx_bytes
from seqlens.families import reverse_within_length
from seqlens.runtimes.onnx import OnnxRuntime

from tests.factories import random_inputs, tiny_model

families = st.fixed_dictionaries({
    "cell": st.sampled_from(["lstm", "gru", "rnn_tanh", "rnn_relu"]),
    "task": st.sampled_from(["classification", "tagging", "forecasting"]),
    "tokens": st.booleans(),
    "layers": st.integers(1, 3),
    "bidirectional": st.booleans(),
    "hidden": st.integers(1, 9),
})


def _session(tmp_path, module):  # type: ignore[no-untyped-def]
    path = tmp_path / "m.onnx"
    path.write_bytes(export_onnx_bytes(module))
    return OnnxRuntime(path)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=families, seed=st.integers(0, 2**16), batch=st.integers(1, 5), t_max=st.integers(1, 17))
def test_onnx_equals_torch_and_padding_is_exact(tmp_path, spec, seed, batch, t_max) -> None:  # type: ignore[no-untyped-def]
    module = tiny_model(seed=seed, **spec)
    ort_rt = _session(tmp_path, module)
    rng = np.random.default_rng(seed)
    x, lengths = random_inputs(module, batch, t_max, rng)
    with torch.no_grad():
        ref = module(torch.from_numpy(x), torch.from_numpy(lengths)).numpy()
    got = ort_rt.run(x, lengths)
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)
    per_step = spec["task"] == "tagging"
    for b in range(batch):
        n = int(lengths[b])
        with torch.no_grad():
            alone = module(torch.from_numpy(x[b:b + 1, :n]), torch.from_numpy(lengths[b:b + 1])).numpy()[0]
        padded_row = ref[b, :n] if per_step else ref[b]
        np.testing.assert_allclose(padded_row, alone, atol=1e-5, rtol=0)
        if per_step:
            assert np.all(ref[b, n:] == 0), "padding positions of per-step outputs are zeroed"


def test_bidirectional_matches_packed_nn_lstm() -> None:
    """Our reversed-within-length backward direction equals nn.LSTM on packed sequences."""
    torch.manual_seed(0)
    module = tiny_model(seed=3, cell="lstm", bidirectional=True, tokens=False, hidden=4)
    fwd, bwd = module.rnn[0]
    ref = torch.nn.LSTM(module.config.architecture.embedding_dim, 4, batch_first=True, bidirectional=True)
    with torch.no_grad():
        for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            getattr(ref, name).copy_(getattr(fwd, name))
            getattr(ref, name + "_reverse").copy_(getattr(bwd, name))
    x = torch.randn(3, 7, 3)
    lengths = torch.tensor([7, 3, 5])
    emb = module.embed(x)
    with torch.no_grad():
        ours = torch.cat(module.run_layers(emb, lengths)[0], dim=2)
        packed = torch.nn.utils.rnn.pack_padded_sequence(emb, lengths, batch_first=True, enforce_sorted=False)
        out, _ = ref(packed)
        theirs, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True)
    for b, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(ours[b, :n], theirs[b, :n], atol=1e-6, rtol=0)


def test_reverse_within_length_is_an_involution() -> None:
    x = torch.arange(2 * 5 * 1, dtype=torch.float32).view(2, 5, 1)
    lengths = torch.tensor([5, 3])
    r = reverse_within_length(x, lengths)
    assert r[1, :, 0].tolist() == [7.0, 6.0, 5.0, 8.0, 9.0]
    torch.testing.assert_close(reverse_within_length(r, lengths), x)
