"""A character-level LSTM trained for ~30 s on the Python standard library's own source grows a
unit that tracks bracket nesting depth (Karpathy et al. 2015 found the same in C code). It is
found the way a user would: export the model, serve it, Explain a held-out snippet with the
hidden and cell states, and ask ``StateSummary.correlated_units`` for the unit that follows a
per-character signal. The untrained model (same initialization) is the baseline.
"""

from __future__ import annotations

import io
import sysconfig
import time
import tokenize
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from seqlens.export import export_model
from seqlens.families import SequenceModel, build_model
from seqlens.schema import ModelConfig
from seqlens_client import Client
from seqlens_client.options import StateOptions
from seqlens_client.state import StateSummary

from tests.conftest import ServerThread

STDLIB = Path(sysconfig.get_paths()["stdlib"])
TRAIN_CHARS = 300_000
SNIPPET_CHARS = 900  # per held-out file; 4 files -> T ~ 3,700 steps
MAX_FILE_BYTES = 60_000
WINDOW, BATCH, STEPS, LR, HIDDEN = 100, 32, 450, 1e-2, 128
_STRING_TOKENS = {tokenize.STRING, *(getattr(tokenize, n) for n in ("FSTRING_START", "FSTRING_MIDDLE",
                                                                     "FSTRING_END") if hasattr(tokenize, n))}


def corpus() -> tuple[list[Path], list[Path]]:
    """(training files, held-out files): top-level stdlib modules, picked by position only."""
    eligible = [f for f in sorted(STDLIB.glob("*.py"))
                if f.stat().st_size <= MAX_FILE_BYTES and not f.name.startswith("_sysconfigdata")]
    held = eligible[5::20][:4]
    train: list[Path] = []
    size = 0
    for f in eligible:
        if f not in held and size < TRAIN_CHARS:
            train.append(f)
            size += f.stat().st_size
    return train, held


def char_signals(source: str) -> dict[str, np.ndarray]:
    """Per character: inside a string literal, bracket depth (outside strings/comments), column."""
    starts = np.cumsum([0] + [len(line) for line in source.splitlines(keepends=True)])
    in_string = np.zeros(len(source))
    skip = np.zeros(len(source), dtype=bool)
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in _STRING_TOKENS or tok.type == tokenize.COMMENT:
            a, b = starts[tok.start[0] - 1] + tok.start[1], starts[tok.end[0] - 1] + tok.end[1]
            skip[a:b] = True
            if tok.type != tokenize.COMMENT:
                in_string[a:b] = 1.0
    depth, column = np.zeros(len(source)), np.zeros(len(source))
    d = col = 0
    for i, ch in enumerate(source):
        if not skip[i] and ch in ")]}":
            d -= 1
        depth[i], column[i] = d, col
        if not skip[i] and ch in "([{":
            d += 1
        col = 0 if ch == "\n" else col + 1
    return {"string": in_string, "depth": depth, "column": column}


def held_out_text(files: list[Path]) -> tuple[str, dict[str, np.ndarray]]:
    """From each file: ~SNIPPET_CHARS whole lines from its first top-level def (depth 0, no string)."""
    parts, sigs = [], []
    for f in files:
        source = f.read_text(encoding="utf-8")
        full = char_signals(source)
        start = source.find("\ndef ") + 1
        end = source.find("\n", start + SNIPPET_CHARS) + 1 or len(source)
        parts.append(source[start:end])
        sigs.append({k: v[start:end] for k, v in full.items()})
    return "".join(parts), {k: np.concatenate([s[k] for s in sigs]) for k in sigs[0]}


def char_model(vocab: list[str]) -> SequenceModel:
    """Next-character prediction: a tagger whose labels are the vocabulary."""
    config = ModelConfig.model_validate({
        "description": "character-level LSTM on Python stdlib source (test)",
        "task": "tagging", "max_length": 4096, "labels": vocab,
        "input": {"kind": "tokens", "tokenizer": "char", "lowercase": False},
        "architecture": {"input_layer": "embedding", "embedding_dim": 32, "cell": "lstm", "num_layers": 1,
                         "hidden_size": HIDDEN, "head": "per_step"}})
    return build_model(config, len(vocab), seed=0)


def train(model: SequenceModel, data: np.ndarray) -> float:
    """Seeded truncated-BPTT training on random windows; returns the final loss."""
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    lengths = torch.full((BATCH,), WINDOW)
    model.train()
    loss = torch.tensor(0.0)
    for _ in range(STEPS):
        starts = rng.integers(0, len(data) - WINDOW - 1, size=BATCH)
        x = torch.from_numpy(np.stack([data[s:s + WINDOW] for s in starts]))
        y = torch.from_numpy(np.stack([data[s + 1:s + WINDOW + 1] for s in starts]))
        loss = F.cross_entropy(model(x, lengths).reshape(-1, model.head.out_features), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return float(loss.detach())


def best_abs_r(state: StateSummary, signal: np.ndarray) -> tuple[float, str, int]:
    """Largest |r| over the hidden and cell series of every unit: (|r|, series, unit)."""
    found = [(abs(c.r), use, c.unit) for use in ("hidden", "cell")
             for c in state.correlated_units(signal, use=use, top=1)]  # type: ignore[arg-type]
    return max(found)


def test_a_trained_char_lstm_has_a_bracket_depth_unit(tmp_path: Path,
                                                      start_server: Callable[..., ServerThread]) -> None:
    train_files, held = corpus()
    text = "".join(f.read_text(encoding="utf-8") for f in train_files)
    vocab = ["<pad>", "<unk>", *sorted({c for c in text if c.isprintable()})]  # "\n" -> <unk>
    ids = {c: i for i, c in enumerate(vocab)}
    data = np.array([ids.get(c, 1) for c in text], dtype=np.int64)
    reference = (np.stack([data[s:s + WINDOW] for s in range(0, 32 * 997, 997)]), np.full(32, WINDOW))

    untrained = char_model(vocab)
    model = char_model(vocab)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t0 = time.perf_counter()
        loss = train(model, data)
        train_s = time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads)
    assert loss < 2.0, f"training did not converge (loss {loss:.2f})"
    repo = tmp_path / "repo"
    export_model(untrained.eval(), repo / "char" / "1", vocabulary=vocab, reference=reference)
    export_model(model.eval(), repo / "char" / "2", vocabulary=vocab, reference=reference)

    snippet, signals = held_out_text(held)
    server = start_server(repo, poll_interval_s=0, max_state_elements=5_000_000,
                          max_message_bytes=64 * 1024 * 1024)
    states: dict[str, StateSummary] = {}
    with Client(server.target, timeout=60) as client:
        for version in ("1", "2"):
            exp = client.explain("char", snippet, methods="saliency", version=version,
                                 state=StateOptions(include_hidden=True, include_cell=True))
            assert exp.state is not None and len(exp.tokens) == len(snippet)
            states[version] = exp.state

    rows = {name: (best_abs_r(states["2"], sig), best_abs_r(states["1"], sig)) for name, sig in signals.items()}
    trained_units = states["2"].correlated_units(signals["depth"], use="cell", top=HIDDEN)
    median_r = float(np.median([abs(c.r) for c in trained_units]))
    print(f"\ntrained {STEPS} steps in {train_s:.1f} s, final loss {loss:.3f}; held-out T={len(snippet)} "
          f"from {[f.name for f in held]}")
    for name, ((r_t, use_t, u_t), (r_u, use_u, u_u)) in rows.items():
        print(f"  {name:7s} best |r| trained {r_t:.3f} ({use_t} unit {u_t})  untrained {r_u:.3f} ({use_u} unit {u_u})")
    print(f"  depth   median |r| of the trained model's cell units {median_r:.3f}")

    # Measured here: 0.545 trained vs 0.275 untrained, median unit 0.141 (notes/summaries.md).
    # The bounds come from the question, not from that run: a floor of 5 standard errors of an
    # unrelated unit's |r| over T independent steps (~1/sqrt(T)); the smooth depth signal makes
    # chance larger than that, which the comparisons with the untrained model's best unit (same
    # signal, same T) and the trained model's typical unit account for.
    (r_trained, _, _), (r_untrained, _, _) = rows["depth"]
    assert r_trained >= 5 / np.sqrt(len(snippet))
    assert r_trained >= 1.5 * r_untrained
    assert r_trained >= 3 * median_r
