"""Stateful sequences through a real server and the SDK: client-held state, server-held
sequences (stream and unary), OIP with Triton's sequence parameters (tritonclient), and every
documented refusal. Oracles: the whole sequence in one Predict (ONNX Runtime, no state), and
tritonclient in its own process. Time is judged by the server's own counters, never by the wall clock.
"""

from __future__ import annotations

import asyncio
import itertools
import string
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from seqlens.export import export_model
from seqlens.families import build_model
from seqlens_client import (
    AsyncClient,
    Client,
    FailedPrecondition,
    InvalidArgument,
    Method,
    NotFound,
    RecurrentState,
    ResourceExhausted,
    Unavailable,
    stitch,
    stitch_states,
)

from tests.conftest import ServerThread
from tests.factories import FEATURES, VOCAB, export_tiny, oip_calls, tiny_config

CHARS = ["<pad>", "<unk>", *string.ascii_lowercase, " ", ".", ",", "!"]
CELLS = ["rnn_tanh", "rnn_relu", "lstm", "gru"]


def _export_chars(root: Path, name: str, max_length: int) -> None:
    config = tiny_config(cell="lstm", tokenizer="char", max_length=max_length, layers=2)
    export_model(build_model(config, len(CHARS), seed=11).eval(), root / name / "1", vocabulary=CHARS)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    export_tiny(root, "series", seed=1, cell="lstm", layers=2, tokens=False, task="forecasting")
    export_tiny(root, "tagger", seed=2, cell="gru", layers=2, task="tagging")
    export_tiny(root, "words", seed=3, cell="rnn_relu", layers=1)
    export_tiny(root, "bi", seed=4, cell="lstm", bidirectional=True)
    _export_chars(root, "chars", 16)
    _export_chars(root, "chars_long", 512)
    for cell in CELLS:
        for layers in (1, 2):
            export_tiny(root, f"{cell}-{layers}", seed=layers, cell=cell, layers=layers, task="tagging")
    return root


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[ServerThread]:
    with ServerThread(repo, poll_interval_s=0) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: ServerThread) -> Iterator[Client]:
    with Client(server.target, timeout=60) as c:
        yield c


def _series(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.normal(size=(n, len(FEATURES))).astype(np.float32)


def _chunks(rng: np.random.Generator, n: int) -> list[tuple[int, int]]:
    cuts = sorted({0, n, *rng.integers(1, n, size=int(rng.integers(1, 6))).tolist()})
    return list(itertools.pairwise(cuts))


def _sample(server: ServerThread, name: str, **labels: str) -> float:
    return server.server.metrics.registry.get_sample_value(name, labels) or 0.0


# --- equality with the whole sequence -------------------------------------------------
@pytest.mark.parametrize("mode", ["client", "stream", "unary"])
def test_chunks_equal_the_whole_sequence(client: Client, mode: str) -> None:
    rng = np.random.default_rng(["client", "stream", "unary"].index(mode))
    for _ in range(3):
        x = _series(rng, 30)
        ids = rng.integers(0, len(VOCAB), size=25).tolist()
        whole_x, whole_ids = client.predict("series", x)[0].forecast, client.predict("tagger", [ids])[0].scores
        if mode == "client":
            state: RecurrentState | None = None
            for a, b in _chunks(rng, 30):
                r = client.predict("series", x[a:b], state=state, return_state=True)
                state = r.state
            assert state is not None and state.steps == 30
            last = r[0].forecast
            parts, tstate = [], None
            for a, b in _chunks(rng, 25):
                tr = client.predict("tagger", [ids[a:b]], state=tstate, return_state=True)
                tstate, parts = tr.state, [*parts, tr[0]]
        else:
            with client.sequence("series", stream=mode == "stream") as seq:
                for a, b in _chunks(rng, 30):
                    last = seq.feed(x[a:b]).forecast
                    assert (seq.offset, seq.steps) == (a, b)
            assert seq.ended
            with client.sequence("tagger", stream=mode == "stream", sequence_id=int(rng.integers(1, 2**63))) as seq:
                parts = [seq.feed(ids[a:b]) for a, b in _chunks(rng, 25)]
        np.testing.assert_allclose(last, whole_x, atol=1e-5, rtol=0)
        np.testing.assert_allclose(stitch(parts), whole_ids, atol=1e-5, rtol=0)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("layers", [1, 2])
def test_every_cell_type_in_both_modes(client: Client, cell: str, layers: int) -> None:
    """Per-step outputs of random chunks, client-held and server-held, equal the whole sequence's."""
    model = f"{cell}-{layers}"
    rng = np.random.default_rng(layers * 10 + CELLS.index(cell))
    ids = rng.integers(0, len(VOCAB), size=20).tolist()
    whole = client.predict(model, [ids], return_state=True)
    state, held = None, []
    for a, b in _chunks(rng, 20):
        r = client.predict(model, [ids[a:b]], state=state, return_state=True)
        state, held = r.state, [*held, r[0]]
    with client.sequence(model) as seq:
        served = [seq.feed(ids[a:b]) for a, b in _chunks(rng, 20)]
    plain = client.predict(model, [ids])[0].scores  # model.onnx: no state involved
    for parts in (held, served):
        np.testing.assert_allclose(stitch(parts), plain, atol=1e-5, rtol=0)
    assert state is not None and whole.state is not None
    for name, value in whole.state.tensors.items():
        np.testing.assert_allclose(state.tensors[name], value, atol=1e-5, rtol=0)


def test_long_text_through_the_char_path_equals_one_pass(client: Client) -> None:
    """A text of 150 characters through a model with max_length=16, in chunks of <= 16 characters,
    gives the prediction and final state of one pass through the same weights with max_length=512."""
    text = "the quick brown fox jumps over the lazy dog, again and again! " * 2 + "and then it rests."
    assert len(text) > 16
    with pytest.raises(InvalidArgument, match="max_length=16"):
        client.predict("chars", text)
    one = client.predict("chars_long", text, return_state=True)
    state = None
    for a in range(0, len(text), 13):
        r = client.predict("chars", text[a:a + 13], state=state, return_state=True)
        state = r.state
    assert state is not None and one.state is not None and state.steps == one.state.steps == len(text)
    np.testing.assert_allclose(r[0].scores, one[0].scores, atol=1e-5, rtol=0)
    assert r[0].label == one[0].label
    assert state.tensors.keys() == one.state.tensors.keys() == {
        "layer0.forward.h", "layer0.forward.c", "layer1.forward.h", "layer1.forward.c"}
    for name, value in one.state.tensors.items():
        np.testing.assert_allclose(state.tensors[name], value, atol=1e-5, rtol=0)


def test_explain_a_chunk_holds_the_past_fixed(client: Client) -> None:
    """IG over chunk 2 from chunk 1's state equals IG over the whole sequence with a baseline that
    equals the input on chunk 1's steps (so the past is held fixed): the same chunk scores."""
    ids = [3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
    first = client.predict("words", [ids[:4]], return_state=True)
    method = Method("integrated_gradients", n_steps=32)
    part = client.explain("words", ids[4:], method, initial_state=first.state, baseline="pad",
                          state=["state_norm", "delta_norm"])
    whole = client.explain("words", ids, method, baseline=ids[:4] + [0] * 6, state=["state_norm", "delta_norm"])
    assert part.step_offset == 4 and part.final_state is not None and part.final_state.steps == 10
    np.testing.assert_allclose(part.attributions["integrated_gradients"].scores,
                               whole.attributions["integrated_gradients"].scores[4:], atol=1e-5)
    np.testing.assert_allclose(whole.attributions["integrated_gradients"].scores[:4], 0, atol=1e-7)
    np.testing.assert_allclose(part.prediction.scores, whole.prediction.scores, atol=1e-5)
    # state summaries continue: the chunk's norms and deltas are the whole sequence's from step 4 on
    assert part.state is not None and whole.state is not None
    for name in ("state_norm", "delta_norm"):
        np.testing.assert_allclose(getattr(part.state.layers[0], name), getattr(whole.state.layers[0], name)[4:],
                                   atol=1e-5)
    occl = client.explain("words", ids[4:], Method("occlusion", window=1), initial_state=first.state)
    occl_whole = client.explain("words", ids, Method("occlusion", window=1), baseline=ids[:4] + [0] * 6)
    np.testing.assert_allclose(occl.attributions["occlusion"].scores,
                               occl_whole.attributions["occlusion"].scores[4:], atol=1e-5)


def test_explanations_of_a_sequence_stitch_into_the_whole(client: Client) -> None:
    """Client-held and server-held chunk explanations: their state summaries, joined by step offset,
    are the whole sequence's; IG scores per chunk hold the earlier chunks fixed."""
    ids = [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]
    opts = {"state": ["state_norm", "delta_norm", "gate_mean", "top_units"], "methods": "saliency"}
    whole = client.explain("tagger", ids, **opts)  # type: ignore[arg-type]
    bounds = [(0, 3), (3, 4), (4, 11)]
    state = None
    held = []
    for a, b in bounds:
        exp = client.explain("tagger", ids[a:b], initial_state=state, return_state=True, **opts)  # type: ignore[arg-type]
        state = exp.final_state
        held.append(exp)
    with client.sequence("tagger") as seq:
        served = [seq.explain(ids[a:b], **opts) for a, b in bounds]  # type: ignore[arg-type]
        assert (seq.offset, seq.steps) == (4, 11)
        tail = seq.feed([5])  # the sequence advanced by the explained chunks
    assert [e.step_offset for e in served] == [0, 3, 4] and served[-1].final_state is None
    one_more = client.predict("tagger", [[*ids, 5]])[0].scores[-1]
    np.testing.assert_allclose(tail.scores[-1], one_more, atol=1e-5)
    assert whole.state is not None
    for parts in (held, served):
        joined = stitch_states(parts)
        for k, layer in enumerate(whole.state.layers):
            for name in ("state_norm", "delta_norm", "gate_mean", "top_units"):
                np.testing.assert_allclose(getattr(joined.layers[k], name), getattr(layer, name), atol=1e-5,
                                           err_msg=name)
        np.testing.assert_allclose(np.concatenate([p.prediction.scores for p in parts]), whole.prediction.scores,
                                   atol=1e-5)
        # saliency of the last step's output: the chunk that holds it sees the same gradients there
        np.testing.assert_allclose(parts[-1].attributions["saliency"].scores,
                                   whole.attributions["saliency"].scores[4:], atol=1e-5)


# --- refusals -----------------------------------------------------------------------------
def test_bidirectional_models_refuse_streaming(client: Client) -> None:
    with pytest.raises(FailedPrecondition, match="bidirectional"):
        client.predict("bi", [[3, 4]], return_state=True)
    with client.sequence("bi") as seq, pytest.raises(FailedPrecondition, match="bidirectional"):
        seq.feed([3, 4])


def test_states_are_checked(client: Client) -> None:
    r = client.predict("words", [[3, 4]], return_state=True)
    assert r.state is not None
    with pytest.raises(FailedPrecondition, match=r"states\[0\] came from model 'words'"):
        client.predict("tagger", [[3, 4]], state=r.state)
    bad = RecurrentState("words", r.state.model_version, 2, {"layer0.forward.h": np.zeros(3, np.float32)})
    with pytest.raises(InvalidArgument, match=r"states\[0\].tensors\['layer0.forward.h'\] has shape \[3\]"):
        client.predict("words", [[3]], state=bad)
    nan = RecurrentState("words", r.state.model_version, 2, {"layer0.forward.h": np.full(6, np.nan, np.float32)})
    with pytest.raises(InvalidArgument, match="NaN or inf"):
        client.predict("words", [[3]], state=nan)


def test_unknown_and_ended_sequences(client: Client) -> None:
    with client.sequence("words", sequence_id="done", stream=False) as seq:
        seq.feed([3, 4], end=True)
    with pytest.raises(FailedPrecondition, match="'done' of model 'words' has ended"):
        _call(client, _unary("words", "done", start=False))


def _unary(model: str, seq_id: str, *, start: bool, end: bool = False):  # type: ignore[no-untyped-def]
    from seqlens_client._proto.seqlens.v1 import predict_pb2, recurrent_pb2, types_pb2

    return predict_pb2.PredictRequest(model_name=model, inputs=[types_pb2.SequenceInput(
        token_ids=types_pb2.TokenIds(ids=[3, 4]))], sequence=recurrent_pb2.SequenceControl(
        string_id=seq_id, start=start, end=end))


def _call(client: Client, req):  # type: ignore[no-untyped-def]
    return client._unary(client._stub.Predict, req, 10)


def test_unknown_sequence_is_not_found(client: Client) -> None:
    with pytest.raises(NotFound, match="no live sequence 'ghost'.*server restarted"):
        _call(client, _unary("words", "ghost", start=False))
    with pytest.raises(InvalidArgument, match="at most 256"):
        _call(client, _unary("words", "x" * 300, start=True))
    req = _unary("words", "both", start=True)
    req.return_state = True
    with pytest.raises(InvalidArgument, match="leave states and return_state unset"):
        _call(client, req)


def test_idle_timeout_table_full_and_restart(repo: Path, start_server) -> None:  # type: ignore[no-untyped-def]
    srv = start_server(repo, poll_interval_s=0, sequence_idle_timeout_s=0.05, max_live_sequences=2)
    with Client(srv.target, timeout=30) as c:
        _call(c, _unary("words", "a", start=True))
        # the server's own sweeper evicts it: poll its eviction counter (no wall-clock bound)
        while _sample(srv, "seqlens_sequence_evictions_total", model="words", reason="idle") < 1:
            time.sleep(0.01)
        with pytest.raises(FailedPrecondition, match="'a' of model 'words' was evicted after .* s idle"):
            _call(c, _unary("words", "a", start=False))
    srv2 = start_server(repo, poll_interval_s=0, max_live_sequences=2)
    with Client(srv2.target, timeout=30) as c:
        _call(c, _unary("words", "x", start=True))
        _call(c, _unary("words", "y", start=True))
        with pytest.raises(ResourceExhausted, match="max_live_sequences=2"):
            _call(c, _unary("words", "z", start=True))
        assert _sample(srv2, "seqlens_live_sequences", model="words") == 2
        srv2.call(srv2.server.drain(0.5))  # a restart: the next server knows nothing of "x"
    srv3 = start_server(repo, poll_interval_s=0, port=srv2.server.port)
    with Client(srv3.target, timeout=30) as c, pytest.raises(NotFound, match="'x'.*server restarted"):
        _call(c, _unary("words", "x", start=False))


def test_a_new_version_drops_sequences(tmp_path: Path, start_server) -> None:  # type: ignore[no-untyped-def]
    export_tiny(tmp_path, "words", seed=3, cell="gru")
    srv = start_server(tmp_path, poll_interval_s=0.05)
    with Client(srv.target, timeout=30) as c:
        client_state = c.predict("words", [[3, 4]], return_state=True).state
        with c.sequence("words") as seq:
            seq.feed([3, 4])
            export_tiny(tmp_path, "words", version="2", seed=4, cell="gru")
            while srv.server.registry.default_version("words") != "2":  # the server's own poll
                time.sleep(0.02)
            with pytest.raises(FailedPrecondition, match="version '2' replaced version '1'.*start the sequence again"):
                seq.feed([5])
        assert _sample(srv, "seqlens_sequence_evictions_total", model="words", reason="version") == 1
        with pytest.raises(FailedPrecondition, match="came from version '1'.*version '2' answers"):
            c.predict("words", [[5]], state=client_state)
        c.predict("words", [[5]], state=client_state, version="1")  # pinned: still served


def test_drain_ends_open_streams_after_their_chunk(repo: Path, start_server) -> None:  # type: ignore[no-untyped-def]
    srv = start_server(repo, poll_interval_s=0)
    with Client(srv.target, timeout=30) as c, c.sequence("words") as seq:
        seq.feed([3, 4])
        done = threading.Thread(target=lambda: srv.call(srv.server.drain(5)))
        done.start()
        while not srv.server.dataplane.streaming.closing.is_set():
            time.sleep(0.005)
        with pytest.raises(Unavailable, match="shutting down"):
            seq.feed([5])
        done.join()
    assert _sample(srv, "seqlens_sequence_evictions_total", model="words", reason="shutdown") == 1


# --- concurrency --------------------------------------------------------------------------
def test_interleaved_sequences_on_concurrent_callers_never_mix(server: ServerThread, client: Client) -> None:
    rng = np.random.default_rng(7)
    data = [_series(rng, 12) for _ in range(8)]
    wholes = [client.predict("series", x)[0].forecast for x in data]
    got: dict[int, np.ndarray] = {}
    start = threading.Barrier(len(data))

    def run(i: int) -> None:
        with Client(server.target, timeout=60) as own, own.sequence("series", stream=i % 2 == 0) as seq:
            start.wait()
            for t in range(12):  # one step per chunk: the sequences interleave in the batches
                out = seq.feed(data[i][t:t + 1]).forecast
        got[i] = out

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(data))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, whole in enumerate(wholes):
        np.testing.assert_allclose(got[i], whole, atol=1e-5, rtol=0)


def test_hundreds_of_concurrent_sequences_lose_none(server: ServerThread) -> None:
    n = 300
    rng = np.random.default_rng(9)
    data = [rng.integers(0, len(VOCAB), size=int(rng.integers(3, 8))).tolist() for _ in range(n)]

    async def main() -> tuple[list[np.ndarray], list[np.ndarray]]:
        async with AsyncClient(server.target, timeout=120) as ac:
            wholes = [p for half in (data[:150], data[150:]) for p in await ac.predict("tagger", half)]

            async def one(i: int) -> np.ndarray:
                async with ac.sequence("tagger", sequence_id=f"load-{i}", stream=i % 3 != 0) as seq:
                    parts = [await seq.feed(data[i][:1]), await seq.feed(data[i][1:2]), await seq.feed(data[i][2:])]
                return stitch(parts)

            return [p.scores for p in wholes], list(await asyncio.gather(*(one(i) for i in range(n))))

    wholes, chunked = asyncio.run(main())
    for w, c in zip(wholes, chunked, strict=True):
        np.testing.assert_allclose(c, w, atol=1e-5, rtol=0)
    assert _sample(server, "seqlens_chunk_duration_seconds_count", model="tagger", mode="server") >= 3 * n
    assert _sample(server, "seqlens_live_sequences", model="tagger") == 0
    assert _sample(server, "seqlens_sequence_state_bytes") == 0
    assert server.server.dataplane.streaming.table.state_bytes == 0


def test_async_client_held_state_and_sequence_explain(server: ServerThread) -> None:
    ids = [3, 4, 5, 6, 7, 8, 9]

    async def main() -> None:
        async with AsyncClient(server.target, timeout=60) as ac:
            whole = (await ac.predict("words", [ids]))[0].scores
            first = await ac.predict("words", [ids[:3]], return_state=True)
            last = await ac.predict("words", [ids[3:]], state=first.state)
            np.testing.assert_allclose(last[0].scores, whole, atol=1e-5)
            assert last.state is not None and last.state.steps == 7
            async with ac.sequence("words", stream=False) as seq:
                await seq.feed(ids[:3])
                exp = await seq.explain(ids[3:], "saliency", end=True)
            assert exp.step_offset == 3 and seq.ended and seq.steps == 7
            np.testing.assert_allclose(exp.prediction.scores, whole, atol=1e-5)

    asyncio.run(main())


# --- Open Inference Protocol ---------------------------------------------------------------
def test_tritonclient_sequence_parameters(server: ServerThread) -> None:
    rng = np.random.default_rng(3)
    x = _series(rng, 9)
    chunks = [x[:4], x[4:5], x[5:]]

    def infer(chunk: np.ndarray, **seq: object) -> dict[str, object]:
        return {"op": "infer", "model": "series", "inputs": [{"name": "inputs", "datatype": "FP32",
                                                              "data": chunk[None].tolist()}], **seq}

    calls = [infer(x)]
    calls += [infer(c, sequence_id=77, sequence_start=i == 0, sequence_end=i == 2) for i, c in enumerate(chunks)]
    calls += [infer(c, sequence_id="s-1", sequence_start=i == 0, sequence_end=i == 2) for i, c in enumerate(chunks)]
    calls += [infer(x[:1], sequence_id=77)]  # ended
    calls += [infer(x[:1], sequence_id=78)]  # never started
    bad_lengths = {"name": "lengths", "datatype": "INT64", "data": []}
    calls += [{**infer(x[:2], sequence_id=79, sequence_start=True), "inputs": [  # lengths [0]: not [1]
        infer(x[:2])["inputs"][0], bad_lengths]}]  # type: ignore[index]
    calls += [{**infer(x[:2], sequence_id=80, sequence_start=True), "inputs": [  # lengths as floats
        infer(x[:2])["inputs"][0], {**bad_lengths, "datatype": "FP32", "data": [2.0]}]}]  # type: ignore[index]
    out = oip_calls(f"127.0.0.1:{server.server.port}", calls)
    whole = np.array(out[0]["ok"]["outputs"])
    for k in (3, 6):
        np.testing.assert_allclose(np.array(out[k]["ok"]["outputs"]), whole, atol=1e-5, rtol=0)
    assert "FAILED_PRECONDITION" in out[7]["error"]["status"] and "has ended" in out[7]["error"]["message"]
    assert "NOT_FOUND" in out[8]["error"]["status"] and "restarted" in out[8]["error"]["message"]
    assert "INVALID_ARGUMENT" in out[9]["error"]["status"]
    assert "ModelInferRequest.inputs[1] ('lengths') must be [1] integers in [1, 2]" in out[9]["error"]["message"]
    assert "INVALID_ARGUMENT" in out[10]["error"]["status"]
    assert "ModelInferRequest.inputs[1] ('lengths') must be INT64 or INT32" in out[10]["error"]["message"]
