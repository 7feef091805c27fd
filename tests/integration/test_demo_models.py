"""Every trained demo model answers through the SDK and through a stock OIP client
(tritonclient, in its own process) with equal results, and makes sensible predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file
from seqlens import load_model
from seqlens.demo import DEMO_MODELS
from seqlens_client import Client

from tests.factories import oip_calls


def _reference_inputs(repo: Path, name: str, count: int = 4) -> list[np.ndarray]:
    """A few real training sequences stored with the version (reference.safetensors)."""
    ref = load_file(str(repo / name / "1" / "reference.safetensors"))
    return [ref["inputs"][i, : int(ref["lengths"][i])] for i in range(count)]


@pytest.mark.parametrize("name", DEMO_MODELS)
def test_demo_model_predicts_alike_through_sdk_and_tritonclient(demo_repository: Path, demo_server: Any,
                                                                name: str) -> None:
    seqs = _reference_inputs(demo_repository, name)
    with Client(demo_server.target, timeout=60) as client:
        sdk = client.predict(name, [s.tolist() if s.dtype == np.int64 else s for s in seqs])
    assert sdk.model_version == "1"

    t_max = max(len(s) for s in seqs)
    padded = np.zeros((len(seqs), t_max, *seqs[0].shape[1:]), dtype=seqs[0].dtype)
    for i, s in enumerate(seqs):
        padded[i, : len(s)] = s
    lengths = [len(s) for s in seqs]
    dtype = "INT64" if padded.dtype == np.int64 else "FP32"
    [infer] = oip_calls(demo_server.target, [{"op": "infer", "model": name, "inputs": [
        {"name": "inputs", "datatype": dtype, "data": padded.tolist()},
        {"name": "lengths", "datatype": "INT64", "data": lengths}]}])
    oip = np.asarray(infer["ok"]["outputs"], dtype=np.float32)

    loaded = load_model(demo_repository, name)
    per_step = loaded.config.task == "tagging"
    for i, (pred, s) in enumerate(zip(sdk, seqs)):
        alone = loaded.onnx.run(s[None], np.array([len(s)]))[0]
        np.testing.assert_allclose(pred.scores, alone, atol=1e-4, rtol=1e-5)
        np.testing.assert_allclose(oip[i, : len(s)] if per_step else oip[i], alone, atol=1e-4, rtol=1e-5)


def test_sentiment_and_ner_make_sensible_predictions(demo_server: Any) -> None:
    with Client(demo_server.target, timeout=60) as client:
        pos, neg = client.predict("sentiment", ["a gorgeous, witty, moving film", "a dull, boring mess"])
        assert (pos.label, neg.label) == ("positive", "negative")
        [tags] = client.predict("ner", "i love new york in the spring")
        assert len(tags.step_labels) == 7 and tags.tokens[3].text == "york"
        # a weak tagger (entity F1 ~0.25), but it finds the place and leaves the other words out
        assert tags.step_labels[3].endswith("geo-loc")
        assert [tags.step_labels[i] for i in (0, 1, 4, 5, 6)] == ["O"] * 5
        [person] = client.predict("ner", "yesterday john smith flew home")
        assert person.step_labels[1:3] == ["B-person", "I-person"]


def test_demo_classifiers_beat_their_baselines_on_held_out_data(demo_server: Any) -> None:
    """Served predictions on data the models never trained on, scored here: better than always
    answering the majority class of the training data (an oracle independent of the build's
    own metrics.json)."""
    from collections import Counter

    from seqlens.demo import data as D

    def accuracy(model: str, inputs: list[Any], labels: list[str]) -> float:
        got: list[str] = []
        with Client(demo_server.target, timeout=120) as client:
            for start in range(0, len(inputs), 128):
                got += [p.label for p in client.predict(model, inputs[start:start + 128])]
        return float(np.mean([g == w for g, w in zip(got, labels, strict=True)]))

    train, test = D.split_reviews(D.load_reviews())
    majority = Counter(r.label for r in train).most_common(1)[0][0]
    baseline = float(np.mean([r.label == majority for r in test]))
    # reviews longer than the model's 256 tokens are cut to their first 150 words
    texts = [" ".join(r.text.split()[:150]) for r in test]
    served = accuracy("sentiment", texts, [D.SENTIMENT_LABELS[r.label] for r in test])
    assert served > baseline + 0.1, (served, baseline)

    train_y = D.load_vowels("TRAIN")[1]
    test_x, test_y = D.load_vowels("TEST")
    majority = Counter(train_y).most_common(1)[0][0]
    baseline = float(np.mean([y == majority for y in test_y]))
    served = accuracy("vowels", [x.astype(np.float32) for x in test_x], [D.VOWEL_LABELS[y] for y in test_y])
    assert served > baseline + 0.5, (served, baseline)
