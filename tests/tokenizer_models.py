"""Small text models with real tokenizers, trained in seconds, for the tokenizer tests.

``hf_sentiment``: a WordPiece ``tokenizers`` tokenizer and a tiny LSTM trained on a few hundred
bundled Rotten Tomatoes reviews (seeded), exported with its tokenizer.json as is.
``code_chars``: a character model whose vocabulary holds newline, tab, carriage return and space.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from seqlens.demo.data import load_reviews
from seqlens.export import export_model
from seqlens.families import SequenceModel, build_model
from seqlens.schema import ModelConfig

HF_MAX_LENGTH = 128
HF_TRAIN, HF_TEST, HF_EPOCHS = 800, 200, 4
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]


@dataclass
class HfModel:
    version: Path
    tokenizer_json: Path
    test_texts: list[str]
    test_labels: list[int]
    train_accuracy: float


def train_wordpiece(texts: list[str], path: Path) -> None:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)  # also drops control characters
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=1200, special_tokens=SPECIALS,
                                                             show_progress=False))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                       special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tok.save(str(path))


def _fit(model: SequenceModel, x: np.ndarray, lengths: np.ndarray, y: np.ndarray, epochs: int, lr: float) -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for batch in np.array_split(rng.permutation(len(y)), max(1, len(y) // 32)):
            loss = F.cross_entropy(model(torch.from_numpy(x[batch]), torch.from_numpy(lengths[batch])),
                                   torch.from_numpy(y[batch]))
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()


def build_hf_sentiment(folder: Path) -> HfModel:
    from tokenizers import Tokenizer

    reviews = [r for r in load_reviews() if len(r.text) < 300][: HF_TRAIN + HF_TEST]
    train, test = reviews[:HF_TRAIN], reviews[HF_TRAIN:]
    tj = folder / "tokenizer.json"
    folder.mkdir(parents=True, exist_ok=True)
    train_wordpiece([r.text for r in train], tj)
    tok = Tokenizer.from_file(str(tj))
    pad = tok.token_to_id("[PAD]")
    encoded = [tok.encode(r.text).ids[:HF_MAX_LENGTH] for r in train]
    lengths = np.array([len(e) for e in encoded], dtype=np.int64)
    x = np.full((len(encoded), int(lengths.max())), pad, dtype=np.int64)
    for i, e in enumerate(encoded):
        x[i, : len(e)] = e
    y = np.array([r.label for r in train], dtype=np.int64)
    config = ModelConfig.model_validate({
        "description": "WordPiece + LSTM on Rotten Tomatoes reviews (test)",
        "task": "classification", "max_length": HF_MAX_LENGTH, "labels": ["negative", "positive"],
        "input": {"kind": "tokens", "tokenizer": "huggingface", "pad_id": pad, "unk_id": tok.token_to_id("[UNK]")},
        "architecture": {"input_layer": "embedding", "embedding_dim": 16, "cell": "lstm", "num_layers": 1,
                         "hidden_size": 16, "head": "last"}})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = build_model(config, tok.get_vocab_size(), seed=0)
        _fit(model, x, lengths, y, epochs=HF_EPOCHS, lr=1e-2)
        with torch.no_grad():
            acc = float((model(torch.from_numpy(x), torch.from_numpy(lengths)).argmax(-1).numpy() == y).mean())
    finally:
        torch.set_num_threads(threads)
    version = folder / "repo" / "reviews" / "1"
    export_model(model, version, tokenizer_json=tj)
    return HfModel(version, tj, [r.text for r in test], [r.label for r in test], acc)


CODE = (
    "def area(w, h):\n"
    "\treturn w * h\r\n"
    "\n"
    "class Box:\n"
    "\tdef __init__(self, size):\n"
    "\t\tself.size = size  # tab-indented\n"
)


def code_vocabulary() -> list[str]:
    return ["<pad>", "<unk>", *sorted(set(CODE) - {"@"})]


def build_code_chars(folder: Path) -> tuple[Path, list[str]]:
    """A char model of source code whose vocabulary holds "\\n", "\\t", "\\r" and " "."""
    vocab = code_vocabulary()
    config = ModelConfig.model_validate({
        "task": "classification", "max_length": 512, "labels": ["code", "prose"],
        "input": {"kind": "tokens", "tokenizer": "char", "lowercase": False},
        "architecture": {"input_layer": "embedding", "embedding_dim": 8, "cell": "gru", "num_layers": 1,
                         "hidden_size": 8, "head": "last"}})
    module = build_model(config, len(vocab), seed=3).eval()
    version = folder / "code" / "1"
    export_model(module, version, vocabulary=vocab)
    return version, vocab
