"""One builder per demo model: data -> config -> trained module, reference batch, held-out metrics.

Each builder seeds everything first, so a build is a pure function of the code and the data.
Hyperparameters are small on purpose: the whole demo trains in a few minutes on 2 CPU cores.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..families import SequenceModel, build_model
from ..schema import Architecture, FeatureInput, ModelConfig, OutputScale, TokenInput
from ..tokenizers import Tokenizer, Vocabulary
from . import data as D
from .metrics import accuracy, best_constant_accuracy, forecast_errors, majority_accuracy, tagging_scores
from .train import (
    IGNORE,
    Examples,
    Progress,
    Schedule,
    fit,
    pad_features,
    pad_tokens,
    predict,
    seed_everything,
)

PAD, UNK = "<pad>", "<unk>"
REFERENCE_SIZE = 64
TEXT_MAX_LENGTH = 256
SERIES_MAX_LENGTH = 64


@dataclass
class Trained:
    module: SequenceModel
    reference: tuple[np.ndarray, np.ndarray]  # padded training inputs and lengths
    metrics: dict[str, float]
    vocabulary: list[str] | None = None


# --- shared helpers ---------------------------------------------------------------------------
def _with_training_mean(module: SequenceModel, mean: np.ndarray) -> SequenceModel:
    """Store the TRAINING_MEAN baseline in the (frozen, validated) config."""
    data = module.config.model_dump()
    data["training_mean"] = [float(v) for v in mean]
    module.config = ModelConfig.model_validate(data)
    return module


def _reference(inputs: np.ndarray, lengths: np.ndarray, rng: np.random.Generator
               ) -> tuple[np.ndarray, np.ndarray]:
    """A fixed random sample of training rows, trimmed to their longest length."""
    idx = np.sort(rng.choice(len(lengths), size=min(REFERENCE_SIZE, len(lengths)), replace=False))
    t = int(lengths[idx].max())
    return np.ascontiguousarray(inputs[idx, :t]), lengths[idx].copy()


def _build_vocabulary(token_lists: list[list[str]], min_count: int, cap: int) -> list[str]:
    counts = Counter(t for toks in token_lists for t in toks)
    kept = sorted((t for t, c in counts.items() if c >= min_count and t not in (PAD, UNK)),
                  key=lambda t: (-counts[t], t))
    return [PAD, UNK, *kept[:cap]]


def _embedding_mean(module: SequenceModel, ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Mean embedding output over the real (non-padding) training tokens."""
    assert module.embedding is not None
    mask = np.arange(ids.shape[1])[None, :] < lengths[:, None]
    counts = np.bincount(ids[mask], minlength=module.embedding.num_embeddings).astype(np.float64)
    weight = module.embedding.weight.detach().double().numpy()
    return (counts @ weight) / counts.sum()


def _word_dropout(unk_id: int, pad_id: int, rate: float) -> Callable[[Examples, np.random.Generator], Examples]:
    """Replace random training tokens by <unk> so that its embedding means 'unknown word'."""
    def augment(batch: Examples, rng: np.random.Generator) -> Examples:
        drop = torch.from_numpy(rng.random(tuple(batch.inputs.shape)) < rate) & (batch.inputs != pad_id)
        return Examples(batch.inputs.masked_fill(drop, unk_id), batch.lengths, batch.targets, batch.per_step)
    return augment


def _classify(module: SequenceModel, data: Examples) -> np.ndarray:
    return torch.cat(predict(module, data)).argmax(dim=1).numpy()


# --- a. sentiment: word-level LSTM on Rotten Tomatoes --------------------------------------------
def sentiment(progress: Progress) -> Trained:
    rng = seed_everything(11)
    train, test = D.split_reviews(D.load_reviews())
    spec = TokenInput(tokenizer="word", lowercase=True)
    splitter = Tokenizer(spec, Vocabulary([]))
    # Training tokenization is the serving tokenizer itself: same pieces, same lowercasing.
    pieces = [[splitter.normalize(p) for p, _, _ in splitter.split(r.text)][:TEXT_MAX_LENGTH] for r in train]
    vocab = _build_vocabulary(pieces, min_count=2, cap=8000)
    tokenizer = Tokenizer(spec, Vocabulary(vocab))

    def encode(reviews: list[D.Review]) -> Examples:
        ids = [[s.id for s in tokenizer.encode(r.text)][:TEXT_MAX_LENGTH] or [spec.unk_id] for r in reviews]
        x, lengths = pad_tokens(ids, spec.pad_id)
        return Examples.of(x, lengths, np.array([r.label for r in reviews], dtype=np.int64))

    # Validation (for choosing the epoch) comes from training movies, never from the test movies.
    val_mask = np.array([D.held_out("val:" + r.movie, every=10) for r in train])
    fit_rows = [r for r, v in zip(train, val_mask, strict=True) if not v]
    val_rows = [r for r, v in zip(train, val_mask, strict=True) if v]
    fit_data, val_data, test_data = encode(fit_rows), encode(val_rows), encode(test)
    config = ModelConfig(
        description="Movie-review sentiment (Rotten Tomatoes snippets, Pang & Lee): word-level LSTM.",
        task="classification", input=spec, max_length=TEXT_MAX_LENGTH, labels=D.SENTIMENT_LABELS,
        architecture=Architecture(input_layer="embedding", embedding_dim=64, cell="lstm",
                                  hidden_size=64, head="last"))
    module = build_model(config, vocab_size=len(vocab), seed=11)
    val_labels = val_data.targets.numpy()
    fit(module, fit_data, Schedule(epochs=10, lr=3e-3, batch_size=64, weight_decay=1e-6, embed_dropout=0.3,
                                   augment=_word_dropout(spec.unk_id, spec.pad_id, 0.1)),
        rng, name="sentiment", progress=progress,
        validate=lambda m: accuracy(_classify(m, val_data), val_labels))
    x, lengths = fit_data.inputs.numpy(), fit_data.lengths.numpy()
    _with_training_mean(module, _embedding_mean(module, x, lengths))
    labels = test_data.targets.numpy()
    metrics = {"accuracy": accuracy(_classify(module, test_data), labels),
               "majority_accuracy": majority_accuracy([r.label for r in train], labels.tolist()),
               "vocabulary_size": float(len(vocab)), "train_rows": float(len(fit_rows)),
               "test_rows": float(len(test))}
    return Trained(module, _reference(x, lengths, rng), metrics, vocab)


# --- b. vowels: GRU speaker classifier on Japanese vowels -----------------------------------------
def vowels(progress: Progress) -> Trained:
    rng = seed_everything(12)
    train_x, train_y = D.load_vowels("TRAIN")
    test_x, test_y = D.load_vowels("TEST")
    stacked = np.concatenate(train_x, axis=0).astype(np.float64)
    mean, std = stacked.mean(axis=0), stacked.std(axis=0)
    config = ModelConfig(
        description="Speaker of a Japanese /ae/ (UCI Japanese Vowels, 12 LPC cepstrum channels): GRU.",
        task="classification",
        input=FeatureInput(feature_names=[f"lpc_{i + 1}" for i in range(D.VOWEL_CHANNELS)],
                           mean=mean.tolist(), std=std.tolist()),
        max_length=SERIES_MAX_LENGTH, labels=D.VOWEL_LABELS, training_mean=mean.tolist(),
        architecture=Architecture(input_layer="linear", embedding_dim=32, cell="gru",
                                  hidden_size=64, head="last"))
    module = build_model(config, seed=12)
    x, lengths = pad_features(train_x)
    fit(module, Examples.of(x, lengths, np.array(train_y, dtype=np.int64)),
        Schedule(epochs=40, lr=3e-3, batch_size=16), rng, name="vowels", progress=progress)
    tx, tl = pad_features(test_x)
    test = Examples.of(tx, tl, np.array(test_y, dtype=np.int64))
    metrics = {"accuracy": accuracy(_classify(module, test), np.array(test_y)),
               "majority_accuracy": majority_accuracy(train_y, test_y),
               "best_constant_accuracy": best_constant_accuracy(test_y),
               "train_rows": float(len(train_y)), "test_rows": float(len(test_y))}
    return Trained(module, _reference(x, lengths, rng), metrics)


# --- c. forecasters: LSTM on airline passengers and sunspots ------------------------------------
@dataclass(frozen=True)
class SeriesTask:
    name: str
    description: str
    feature: str
    horizon: int
    period: int  # for the seasonal-naive baseline
    test_start: int  # first index whose value is held out
    histories: tuple[int, ...]  # training window lengths (the model accepts any length)
    eval_history: int
    epochs: int
    scale_jitter: float  # log-uniform rescaling of whole windows: teaches level-invariance
    hidden_size: int = 64
    weight_decay: float = 0.0


def _windows(series: np.ndarray, origins: list[int], history: int, horizon: int
             ) -> tuple[list[np.ndarray], np.ndarray]:
    inputs = [series[t - history : t, None].astype(np.float32) for t in origins]
    targets = np.stack([series[t : t + horizon] for t in origins]).astype(np.float32)
    return inputs, targets


def _rescale(jitter: float) -> Callable[[Examples, np.random.Generator], Examples]:
    def augment(batch: Examples, rng: np.random.Generator) -> Examples:
        f = torch.from_numpy(np.exp(rng.uniform(-jitter, jitter, size=len(batch))).astype(np.float32))
        return Examples(batch.inputs * f[:, None, None], batch.lengths, batch.targets * f[:, None])
    return augment


def forecaster(task: SeriesTask, series: np.ndarray, progress: Progress) -> Trained:
    rng = seed_everything(13)
    h = task.horizon
    fitted = series[: task.test_start]  # statistics and windows only from the training part
    mean, std = float(fitted.mean()), float(fitted.std())
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    for hist in task.histories:
        inp, tgt = _windows(series, list(range(hist, task.test_start - h + 1)), hist, h)
        xs += inp
        ys.append(tgt)
    x, lengths = pad_features(xs)
    config = ModelConfig(
        description=task.description, task="forecasting",
        input=FeatureInput(feature_names=[task.feature], mean=[mean], std=[std]),
        max_length=SERIES_MAX_LENGTH, min_length=min(task.histories), horizon=h,
        output_scale=OutputScale(mean=mean, std=std),
        training_mean=[float(np.concatenate(xs).mean())],
        architecture=Architecture(input_layer="linear", embedding_dim=16, cell="lstm",
                                  hidden_size=task.hidden_size, head="horizon"))
    module = build_model(config, seed=13)
    fit(module, Examples.of(x, lengths, np.concatenate(ys)),
        Schedule(epochs=task.epochs, lr=3e-3, batch_size=16, weight_decay=task.weight_decay, augment=_rescale(task.scale_jitter)),
        rng, name=task.name, progress=progress)
    # Held out: every origin whose whole horizon lies in the test part.
    origins = list(range(task.test_start, len(series) - h + 1))
    tx, target = _windows(series, origins, task.eval_history, h)
    inputs, tl = pad_features(tx)
    forecast = torch.cat(predict(module, Examples.of(inputs, tl, target))).numpy()
    naive = np.repeat(series[np.array(origins) - 1, None], h, axis=1)
    seasonal = np.stack([series[t - task.period + (np.arange(h) % task.period)] for t in origins])
    metrics = {**forecast_errors(forecast, target),
               **{f"naive_{k}": v for k, v in forecast_errors(naive, target).items()},
               **{f"seasonal_naive_{k}": v for k, v in forecast_errors(seasonal, target).items()},
               "train_windows": float(len(xs)), "test_origins": float(len(origins))}
    return Trained(module, _reference(x, lengths, rng), metrics)


AIRLINE = SeriesTask(
    name="airline", feature="passengers", horizon=12, period=12, test_start=120,
    histories=(24, 36, 48), eval_history=36, epochs=60, scale_jitter=0.3,
    description="Monthly airline passengers (Box & Jenkins, thousands): LSTM forecasting the next "
                "12 months from the raw series (send at least 24 months).")
SUNSPOTS = SeriesTask(
    name="sunspots", feature="sunspot_number", horizon=6, period=11, test_start=249,
    histories=(24, 36, 48), eval_history=40, epochs=40, scale_jitter=0.2,
    description="Yearly sunspot numbers (1700-2008): LSTM forecasting the next 6 years from the "
                "raw series (send at least 24 years).")


def airline(progress: Progress) -> Trained:
    return forecaster(AIRLINE, D.load_airline(), progress)


def sunspots(progress: Progress) -> Trained:
    return forecaster(SUNSPOTS, D.load_sunspots(), progress)


# --- d. ner: bidirectional LSTM tagger on WNUT-16 tweets ----------------------------------------
def retokenize(tweet: D.Tweet, splitter: Tokenizer) -> tuple[list[str], list[str]]:
    """Split each given token with the serving tokenizer (``@user`` -> ``@``, ``user``) and carry
    its tag: the first piece keeps it, later pieces of an entity continue it with ``I-``. Training
    then sees exactly the pieces that serving will produce from raw text."""
    pieces: list[str] = []
    tags: list[str] = []
    for token, tag in zip(tweet.tokens, tweet.tags, strict=True):
        parts = [p for p, _, _ in splitter.split(token)] or [token]
        for k, p in enumerate(parts):
            pieces.append(splitter.normalize(p))
            tags.append(tag if k == 0 or tag == "O" else "I-" + tag[2:])
    return pieces, tags


NER_EPOCHS, NER_LR, NER_O_WEIGHT = 30, 5e-3, 0.5  # O down-weighted: entity tags are 5% of tokens


def ner(progress: Progress) -> Trained:
    rng = seed_everything(14)
    tweets = D.load_tweets()
    labels = D.bio_labels(tweets)
    train, test = D.split_tweets(tweets)
    spec = TokenInput(tokenizer="word", lowercase=True)
    splitter = Tokenizer(spec, Vocabulary([]))
    train_p = [retokenize(t, splitter) for t in train]
    test_p = [retokenize(t, splitter) for t in test]
    vocab = _build_vocabulary([p for p, _ in train_p], min_count=2, cap=8000)
    lookup = Vocabulary(vocab)
    tag_id = {t: i for i, t in enumerate(labels)}

    def encode(rows: list[tuple[list[str], list[str]]]) -> Examples:
        ids = [[lookup.id(p, spec.unk_id) for p in pieces][:TEXT_MAX_LENGTH] for pieces, _ in rows]
        x, lengths = pad_tokens(ids, spec.pad_id)
        y = np.full(x.shape, IGNORE, dtype=np.int64)
        for i, (_, tags) in enumerate(rows):
            y[i, : lengths[i]] = [tag_id[t] for t in tags[: lengths[i]]]
        return Examples.of(x, lengths, y, per_step=True)

    def tag(module: SequenceModel, data: Examples) -> list[list[str]]:
        out: list[list[str]] = []
        for b in predict(module, data):
            out += [[labels[j] for j in row] for row in b.argmax(dim=2).tolist()]
        return [row[: int(n)] for row, n in zip(out, data.lengths.tolist(), strict=True)]

    # Every tenth training tweet validates (chooses the epoch); the test tweets are never seen.
    fit_rows = [r for i, r in enumerate(train_p) if i % 10 != 9]
    val_rows = [r for i, r in enumerate(train_p) if i % 10 == 9]
    fit_data, val_data, test_data = encode(fit_rows), encode(val_rows), encode(test_p)
    config = ModelConfig(
        description="Named entities in tweets (WNUT-16, BIO tags over 10 types): bidirectional LSTM tagger.",
        task="tagging", input=spec, max_length=TEXT_MAX_LENGTH, labels=labels,
        architecture=Architecture(input_layer="embedding", embedding_dim=64, cell="lstm",
                                  hidden_size=64, bidirectional=True, head="per_step"))
    module = build_model(config, vocab_size=len(vocab), seed=14)
    val_tags = [t for _, t in val_rows]
    fit(module, fit_data, Schedule(epochs=NER_EPOCHS, lr=NER_LR, batch_size=32, embed_dropout=0.3,
                                   augment=_word_dropout(spec.unk_id, spec.pad_id, 0.1),
                                   label_weights=[NER_O_WEIGHT] + [1.0] * (len(labels) - 1)),
        rng, name="ner", progress=progress,
        validate=lambda m: tagging_scores(tag(m, val_data), val_tags)["entity_f1"])
    x, lengths = fit_data.inputs.numpy(), fit_data.lengths.numpy()
    _with_training_mean(module, _embedding_mean(module, x, lengths))
    gold = [t for _, t in test_p]
    scores = tagging_scores(tag(module, test_data), gold)
    all_o = tagging_scores([["O"] * len(g) for g in gold], gold)
    metrics = {**scores, **{f"all_o_{k}": v for k, v in all_o.items()},
               "vocabulary_size": float(len(vocab)), "train_rows": float(len(fit_rows)),
               "test_rows": float(len(test_p))}
    return Trained(module, _reference(x, lengths, rng), metrics, vocab)


BUILDERS: dict[str, Callable[[Progress], Trained]] = {
    "sentiment": sentiment,
    "vowels": vowels,
    "airline": airline,
    "sunspots": sunspots,
    "ner": ner,
}
