"""Text models served with the tokens they were trained on: a WordPiece tokenizer.json model
(ids and offsets equal the ``tokenizers`` library's own) and a character model of source code
whose vocabulary holds newline and tab."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from seqlens.tokenizers import read_vocabulary
from seqlens.versions import load_version
from seqlens_client import Client, InvalidArgument
from seqlens_client._proto.seqlens.v1 import predict_pb2, service_pb2_grpc, types_pb2

from tests.conftest import ServerThread
from tests.tokenizer_models import CODE, HF_MAX_LENGTH, HfModel, build_code_chars, build_hf_sentiment

pytest.importorskip("tokenizers")


@pytest.fixture(scope="session")
def hf_model(tmp_path_factory: pytest.TempPathFactory) -> HfModel:
    return build_hf_sentiment(tmp_path_factory.mktemp("hf"))


@pytest.fixture(scope="module")
def hf_server(hf_model: HfModel) -> Iterator[ServerThread]:
    with ServerThread(hf_model.version.parent.parent, poll_interval_s=0) as srv:
        yield srv


def _library(hf_model: HfModel):  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(hf_model.tokenizer_json))


HOSTILE_SAMPLES = [
    "An unexpectedly touching film.",
    "naïve   café—déjà vu 😀 🇫🇷 x\u0301y",
    "tabs\tand\nnewlines\r\nand\x00nul\x07bell\x1b[31m",
    "[CLS] typed by hand [SEP]",
    "\u202eright-to-left override\u202c and \u200bzero width\ufeff",
    "unbelievablyoverwroughtantidisestablishmentarianism " * 3,
]


def test_ids_offsets_and_tokens_equal_the_library(hf_model: HfModel, hf_server: ServerThread) -> None:
    lib = _library(hf_model)
    texts = hf_model.test_texts[:40] + HOSTILE_SAMPLES
    with Client(hf_server.target, timeout=60) as client:
        preds = [p for i in range(0, len(texts), 16) for p in client.predict("reviews", texts[i:i + 16])]
    for text, pred in zip(texts, preds, strict=True):
        enc = lib.encode(text)
        assert [t.id for t in pred.tokens] == enc.ids
        assert [(t.start, t.end) for t in pred.tokens] == enc.offsets
        assert [t.text for t in pred.tokens] == enc.tokens
        assert [t.special for t in pred.tokens] == [bool(m) for m in enc.special_tokens_mask]
        assert pred.length == len(enc.ids)
    assert preds[0].tokens[0].text == "[CLS]" and preds[0].tokens[-1].text == "[SEP]"


def test_served_predictions_are_the_trained_models_on_library_ids(hf_model: HfModel,
                                                                   hf_server: ServerThread) -> None:
    """The served model sees exactly the ids it was trained on: its classes equal the torch
    module's on ids from the library, for held-out and training-like texts."""
    lib = _library(hf_model)
    module = load_version(hf_model.version, "reviews", "1").torch_module
    texts = hf_model.test_texts[:64]
    with Client(hf_server.target, timeout=60) as client:
        served = [p.label_index for i in range(0, len(texts), 32) for p in client.predict("reviews", texts[i:i + 32])]
    with torch.no_grad():
        want = [int(module(torch.tensor([lib.encode(t).ids]), torch.tensor([len(lib.encode(t).ids)])).argmax())
                for t in texts]
    assert served == want
    assert hf_model.train_accuracy > 0.75  # it did learn its training reviews


def test_get_model_reports_the_tokenizer(hf_model: HfModel, hf_server: ServerThread) -> None:
    lib = _library(hf_model)
    with Client(hf_server.target, timeout=60) as client:
        info = client.get_model("reviews")
    assert info.tokenizer == "huggingface" and info.input.tokenizer == "huggingface"
    assert info.input.vocabulary == "tokenizer.json" and info.input.add_special_tokens
    assert info.input.vocab_size == lib.get_vocab_size()
    assert set(info.input.special_tokens) == {"[PAD]", "[UNK]", "[CLS]", "[SEP]"}
    assert not info.input.lowercase  # the tokenizer's normalizer lowercases, not seqlens


def test_token_ids_and_explanations(hf_model: HfModel, hf_server: ServerThread, tmp_path: Path) -> None:
    lib = _library(hf_model)
    enc = lib.encode("a warm and witty film")
    with Client(hf_server.target, timeout=60) as client:
        by_ids = client.predict("reviews", [enc.ids])[0]
        exp = client.explain("reviews", "a warm and witty film", methods=["integrated_gradients"])
    assert [t.text for t in by_ids.tokens] == enc.tokens
    assert [t.special for t in by_ids.tokens] == [True] + [False] * (len(enc.ids) - 2) + [True]
    assert [t.id for t in exp.tokens] == enc.ids
    scores = exp.attributions["integrated_gradients"].scores
    assert scores.shape == (len(enc.ids),) and np.isfinite(scores).all()
    html = exp.to_html(tmp_path / "r.html")
    assert "[CLS]" in html and "witty" in html


INVALID = grpc.StatusCode.INVALID_ARGUMENT


def _predict_text(text: str) -> predict_pb2.PredictRequest:
    return predict_pb2.PredictRequest(model_name="reviews", inputs=[types_pb2.SequenceInput(text=text)])


def _sequences_seen(server: ServerThread) -> float:
    registry = server.server.metrics.registry
    return registry.get_sample_value("seqlens_batch_size_sum", {"model": "reviews"}) or 0.0


@pytest.mark.parametrize("text, message", [
    ("word " * 2_000_000, "characters"),  # 10 MB: refused by its size, before the library runs
    ("good " * (HF_MAX_LENGTH + 10), f"more than {HF_MAX_LENGTH} tokens"),  # truncation is off
    ("\x00\x01\x02\x1b\x7f" * 50, "has no tokens"),  # the normalizer drops controls: [CLS] [SEP] only
    ("", "has no tokens"),
    ("\u0301" * (HF_MAX_LENGTH * 64 + 1), "characters"),  # one over the character cap
    ("\u0301" * (HF_MAX_LENGTH * 64), "has no tokens"),  # at the cap: the library strips the accents
])
def test_hostile_texts_are_invalid_argument_and_the_server_keeps_serving(
        hf_server: ServerThread, text: str, message: str) -> None:
    with grpc.insecure_channel(hf_server.target, options=[("grpc.max_send_message_length", 64 << 20)]) as ch:
        stub = service_pb2_grpc.SequenceExplainerServiceStub(ch)
        before = _sequences_seen(hf_server)
        with pytest.raises(grpc.RpcError) as info:
            stub.Predict(_predict_text(text), timeout=60)
        assert info.value.code() == INVALID and message in (info.value.details() or "")
        assert _sequences_seen(hf_server) == before  # refused before the model ran
        assert stub.Predict(_predict_text("a fine film"), timeout=60).predictions[0].label
        assert _sequences_seen(hf_server) == before + 1


def test_lone_surrogates_from_json_clients(hf_server: ServerThread) -> None:
    """A JSON reader turns an unpaired \\ud800 escape into a lone surrogate: the SDK refuses it
    as INVALID_ARGUMENT naming the character;
    raw bytes of one (not UTF-8) are INVALID_ARGUMENT from the server."""
    text = json.loads('"bad \\ud800 text"')
    with Client(hf_server.target, timeout=60) as client:
        with pytest.raises(InvalidArgument, match="lone surrogate '\\\\ud800' at character 4"):
            client.predict("reviews", text)
        with pytest.raises(InvalidArgument, match="has no tokens"):
            client.predict("reviews", "\x00")
        assert client.predict("reviews", "still serving").predictions[0].label
    raw = b"\x0a\x07reviews\x1a\x05\x0a\x03\xed\xa0\x80"  # inputs[0].text = UTF-8-encoded U+D800
    with grpc.insecure_channel(hf_server.target) as ch, pytest.raises(grpc.RpcError) as info:
        ch.unary_unary("/seqlens.v1.SequenceExplainerService/Predict")(raw, timeout=10)
    assert info.value.code() == INVALID


# --- a character model of source code ---------------------------------------------------
def test_char_model_with_newline_and_tab_tokens(tmp_path: Path,
                                                start_server: Callable[..., ServerThread]) -> None:
    version, vocab = build_code_chars(tmp_path / "repo")
    assert {"\n", "\t", "\r", " "} <= set(vocab)
    assert read_vocabulary(version / "vocab.json") == vocab  # the file on disk round-trips
    ids = {c: i for i, c in enumerate(vocab)}
    text = CODE + "\tx = '@'\n"  # "@" is not in the vocabulary
    train_ids = [ids.get(c, 1) for c in text]  # the training encoder: one id per character
    server = start_server(tmp_path / "repo", poll_interval_s=0)
    with Client(server.target, timeout=60) as client:
        pred = client.predict("code", text)[0]
        info = client.get_model("code")
        exp = client.explain("code", text, methods="saliency")
    assert [t.id for t in pred.tokens] == train_ids
    assert [t.text for t in pred.tokens] == list(text)
    assert [(t.start, t.end) for t in pred.tokens] == [(i, i + 1) for i in range(len(text))]
    assert ids["\n"] in train_ids and ids["\t"] in train_ids and ids["\r"] in train_ids
    assert info.tokenizer == "char" and info.input.vocabulary == "vocab.json"
    assert info.input.special_tokens == ["<pad>", "<unk>"]
    plain = exp.to_text(color=False, width=400)
    assert "\u21e5[" in plain and "\u23ce[" in plain and "\u240d[" in plain  # ⇥ ⏎ ␍ glyphs, no raw breaks
    coloured = exp.to_text(color=True).split("\n")
    assert len(coloured) > text.count("\n")  # each source line on its own row


def test_seqlens_export_from_files(hf_model: HfModel, tmp_path: Path) -> None:
    """``seqlens export --vocab`` takes a tokenizer.json for huggingface models (copied as is)
    and a one-token-a-line file for the others (written as vocab.json)."""
    from seqlens.cli import main

    src = hf_model.version
    out = tmp_path / "repo" / "reviews" / "2"
    assert main(["export", "--config", str(src / "model.yaml"), "--weights", str(src / "weights.safetensors"),
                 "--output", str(out)]) == 2  # no --vocab: a usage error, nothing written
    assert not out.exists()
    assert main(["export", "--config", str(src / "model.yaml"), "--weights", str(src / "weights.safetensors"),
                 "--vocab", str(hf_model.tokenizer_json), "--output", str(out)]) == 0
    assert (out / "tokenizer.json").read_bytes() == hf_model.tokenizer_json.read_bytes()
    text = "a warm, witty film"
    assert [s.id for s in load_version(out, "reviews", "2").tokenizer.encode(text)] == \
        _library(hf_model).encode(text).ids  # type: ignore[union-attr]

    code, vocab = build_code_chars(tmp_path / "code-repo")
    legacy = tmp_path / "vocab.txt"
    legacy.write_text("".join(t + "\n" for t in [*vocab[:2], "x", "y"]), encoding="utf-8")
    (tmp_path / "model.yaml").write_bytes((code / "model.yaml").read_bytes())
    from seqlens.families import build_model
    from seqlens.runtimes.torch import save_weights
    from seqlens.schema import load_config

    save_weights(build_model(load_config(tmp_path / "model.yaml"), 4, seed=1), tmp_path / "w.safetensors")
    out = tmp_path / "repo" / "chars" / "1"
    assert main(["export", "--config", str(tmp_path / "model.yaml"), "--weights", str(tmp_path / "w.safetensors"),
                 "--vocab", str(legacy), "--output", str(out)]) == 0
    assert read_vocabulary(out / "vocab.json") == ["<pad>", "<unk>", "x", "y"]
