"""The dataplane without gRPC: readiness and metadata answers, version selection, errors as
domain types, and the life of each version's batcher. Real registry, real ONNX Runtime on
tiny exported models; the oracle for every output is the torch module they were exported from."""

from __future__ import annotations

import asyncio
import gc
import shutil
import weakref
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from seqlens.config import Settings
from seqlens.dataplane import DataPlane
from seqlens.errors import InvalidInput, ModelNotFound, ModelUnavailable
from seqlens.explainers import available_methods
from seqlens.inputs import SequenceInput
from seqlens.metrics import Metrics
from seqlens.registry import ModelRegistry, VersionState
from seqlens.repository import ModelRepository

from tests.factories import VOCAB, export_tiny, tiny_model

CLS = {"cell": "lstm", "task": "classification", "tokens": True}
TAG = {"cell": "gru", "task": "tagging", "tokens": False}
SEEDS = {"1": 11, "2": 22}  # versions of "cls": different weights, so a wrong pick shows


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    for version, seed in SEEDS.items():
        export_tiny(root, "cls", version, seed=seed, **CLS)
    export_tiny(root, "tag", "1", seed=5, **TAG)
    broken = export_tiny(root, "cls", "3", seed=33, **CLS)
    (broken / "model.onnx").write_bytes(b"not an onnx graph")  # newest, but FAILED
    return root


@pytest.fixture()
def plane(repo: Path) -> Iterator[DataPlane]:
    registry = ModelRegistry(ModelRepository(repo))
    dp = DataPlane(registry, Settings(max_batch=4, predict_workers=1, explain_workers=1, explain_threads=1),
                   Metrics())
    registry.add_listener(dp.on_version_change)
    registry.refresh()
    yield dp
    asyncio.run(dp.close())


def _logits(seed: int, spec: dict[str, object], x: np.ndarray, lengths: list[int]) -> np.ndarray:
    """The oracle: the torch module the version was exported from, on the padded batch."""
    module = tiny_model(seed=seed, **spec)  # type: ignore[arg-type]
    with torch.no_grad():
        return module(torch.from_numpy(x), torch.tensor(lengths)).numpy()


def _ids(*words: str) -> np.ndarray:
    return np.array([VOCAB.index(w) for w in words], dtype=np.int64)


# --- readiness and metadata -------------------------------------------------------------
def test_ready_while_a_version_serves_and_not_while_draining(plane: DataPlane) -> None:
    assert plane.ready()
    plane.draining = True
    assert not plane.ready()
    with pytest.raises(ModelUnavailable, match="shutting down"):
        plane.check_serving()
    with pytest.raises(ModelUnavailable, match="shutting down"):
        asyncio.run(plane.predict("cls", "", [SequenceInput(token_ids=_ids("the", "film"))]))


def test_not_ready_with_no_version_loaded(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    dp = DataPlane(ModelRegistry(ModelRepository(tmp_path / "empty")), Settings(), Metrics())
    try:
        dp.registry.refresh()
        assert not dp.ready() and dp.list_models() == []
    finally:
        asyncio.run(dp.close())


def test_list_models_names_versions_and_defaults(plane: DataPlane) -> None:
    by_name = {m.name: m for m in plane.list_models()}
    assert list(by_name) == ["cls", "tag"]
    cls, tag = by_name["cls"], by_name["tag"]
    # version 3 failed its load: listed, but the default is the newest READY one
    assert cls.versions == ["1", "2", "3"] and cls.default_version == "2" and cls.ready
    assert (cls.task, cls.input_kind) == ("classification", "tokens")
    assert (tag.task, tag.input_kind, tag.versions, tag.default_version) == ("tagging", "features", ["1"], "1")


def test_get_model_describes_the_default_version(plane: DataPlane) -> None:
    desc = plane.get_model("cls")
    assert desc.default_version == "2" and desc.architecture is not None and desc.architecture.kind == "family"
    assert desc.input is not None and desc.input.vocab_size == len(VOCAB) and desc.input.kind == "tokens"
    assert desc.architecture.num_parameters == sum(p.numel() for p in tiny_model(seed=SEEDS["2"], **CLS).parameters())
    assert desc.attribution_methods == available_methods() and desc.state_summaries
    assert desc.max_batch == 4 and desc.max_length == 64
    states = {v.version: v for v in desc.versions}
    assert states["1"].state == states["2"].state == VersionState.READY
    assert states["3"].state == VersionState.FAILED and "model.onnx" in states["3"].reason


# --- version selection ------------------------------------------------------------------
@pytest.mark.parametrize(("asked", "answered"), [("", "2"), ("1", "1"), ("2", "2")])
def test_predict_answers_with_the_version_asked_for(plane: DataPlane, asked: str, answered: str) -> None:
    seqs = [_ids("the", "film", "was", "witty"), _ids("dull", "plot")]
    result = asyncio.run(plane.predict("cls", asked, [SequenceInput(token_ids=s) for s in seqs]))
    assert (result.model_name, result.model_version) == ("cls", answered)
    padded = np.zeros((2, 4), dtype=np.int64)
    padded[0], padded[1, :2] = seqs[0], seqs[1]
    want = _logits(SEEDS[answered], CLS, padded, [4, 2])
    for pred, row, length in zip(result.predictions, want, [4, 2], strict=True):
        assert pred.length == length
        np.testing.assert_allclose(pred.scores, row, rtol=1e-5, atol=1e-5)
        assert pred.label == ["neg", "neu", "pos"][int(np.argmax(row))]


def test_infer_tensor_returns_padded_outputs_zero_past_each_length(plane: DataPlane) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 5, 3)).astype(np.float32)
    lengths = np.array([5, 2, 4], dtype=np.int64)
    loaded, out = asyncio.run(plane.infer_tensor("tag", "", x, lengths))
    assert (loaded.name, loaded.version) == ("tag", "1") and out.shape == (3, 5, 3)
    want = _logits(5, TAG, x, lengths.tolist())
    for i, n in enumerate(lengths):
        np.testing.assert_allclose(out[i, :n], want[i, :n], rtol=1e-5, atol=1e-5)
        assert not out[i, n:].any()


# --- errors are domain errors that say what to fix --------------------------------------
@pytest.mark.parametrize(("name", "version", "error", "match"), [
    ("nope", "", ModelNotFound, "'nope' is not in the repository"),
    ("cls", "9", ModelNotFound, r"no version '9' \(versions: 1, 2, 3\)"),
    ("cls", "3", ModelUnavailable, "version '3' is FAILED: .*model.onnx"),
    ("../cls", "", InvalidInput, "not a valid name"),
    ("cls", "../1", InvalidInput, "not a valid name"),
])
def test_unknown_or_unservable_versions(plane: DataPlane, name: str, version: str, error: type[Exception],
                                        match: str) -> None:
    with pytest.raises(error, match=match):
        asyncio.run(plane.predict(name, version, [SequenceInput(token_ids=_ids("the"))]))


@pytest.mark.parametrize(("inputs", "match"), [
    ([], "inputs is empty"),
    ([SequenceInput(token_ids=_ids("the"))] * 5, "5 sequences; at most max_batch=4"),
    ([SequenceInput(token_ids=np.array([1, len(VOCAB)]))], r"inputs\[0\]"),
    ([SequenceInput(features=np.zeros((3, 3), np.float32))], "takes text or token_ids, not features"),
])
def test_bad_predict_inputs_are_invalid_input(plane: DataPlane, inputs: list[SequenceInput], match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        asyncio.run(plane.predict("cls", "", inputs))


@pytest.mark.parametrize(("x", "lengths", "match"), [
    (np.zeros((2, 4), np.float32), None, r"input 'inputs' has shape \[2, 4\]; model 'tag' needs \[B, T, 3\]"),
    (np.zeros((2, 4, 3), np.int64), None, "is int64; model 'tag' needs FP32"),
    (np.zeros((5, 4, 3), np.float32), None, "batch 5; at most max_batch=4"),
    (np.zeros((2, 4, 3), np.float32), np.array([4, 5]), r"input 'lengths' must be \[2\] integers in \[1, 4\]"),
    (np.zeros((2, 4, 3), np.float32), np.array([0, 1]), r"input 'lengths' must be \[2\] integers in \[1, 4\]"),
])
def test_bad_tensors_are_invalid_input_naming_the_tensor(plane: DataPlane, x: np.ndarray,
                                                         lengths: np.ndarray | None, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        asyncio.run(plane.infer_tensor("tag", "", x, lengths))


# --- batcher lifetimes ------------------------------------------------------------------
def test_one_batcher_per_version_gone_with_its_version(plane: DataPlane, repo: Path) -> None:
    async def scenario() -> None:
        one, two = plane.registry.get("cls", "1"), plane.registry.get("cls", "2")
        assert plane.batchers() == []  # made on first use
        await plane.predict("cls", "1", [SequenceInput(token_ids=_ids("good"))])
        await plane.predict("cls", "2", [SequenceInput(token_ids=_ids("bad"))])
        await plane.predict("cls", "1", [SequenceInput(token_ids=_ids("film"))])
        b1, b2 = plane.batcher(one), plane.batcher(two)
        assert b1 is not b2 and plane.batcher(one) is b1  # one per version, reused
        assert {id(b) for b in plane.batchers()} == {id(b1), id(b2)}
        gone_version, gone_batcher = weakref.ref(one), weakref.ref(b1)
        del one, b1
        shutil.rmtree(repo / "cls" / "1")
        plane.registry.refresh()  # version 1 unloaded
        gc.collect()
        assert gone_version() is None and gone_batcher() is None
        assert plane.batchers() == [b2]
        with pytest.raises(ModelNotFound, match=r"no version '1' \(versions: 2, 3\)"):
            await plane.predict("cls", "1", [SequenceInput(token_ids=_ids("good"))])
        b2.close()  # a closed batcher (the server stopping) refuses new work
        with pytest.raises(ModelUnavailable, match="shutting down"):
            await plane.predict("cls", "2", [SequenceInput(token_ids=_ids("good"))])

    asyncio.run(scenario())
    ready = {(s.labels["model"], s.labels["version"]): s.value for m in plane.metrics.registry.collect()
             if m.name == "seqlens_model_ready" for s in m.samples}
    assert ready == {("cls", "2"): 1.0, ("cls", "3"): 0.0, ("tag", "1"): 1.0}  # the unloaded version's series went
