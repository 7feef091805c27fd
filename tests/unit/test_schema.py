"""model.yaml validation: clear errors naming the field and the rule."""

from __future__ import annotations

import pytest
from seqlens.errors import ModelConfigError
from seqlens.schema import dump_config, parse_config

from tests.factories import tiny_config

GOOD = """
task: classification
input: {kind: tokens, tokenizer: word}
max_length: 32
labels: [neg, pos]
architecture: {input_layer: embedding, embedding_dim: 4, cell: lstm, hidden_size: 3, head: last}
"""


def test_round_trip() -> None:
    config = tiny_config(task="forecasting", tokens=False, bidirectional=True)
    assert parse_config(dump_config(config)) == config
    assert parse_config(GOOD).architecture.num_layers == 1


@pytest.mark.parametrize("change, message", [
    (("head: last", "head: per_step"), "needs architecture.head 'last'"),
    (("labels: [neg, pos]", "labels: [neg]"), "at least 2 labels"),
    (("labels: [neg, pos]", "labels: [neg, neg]"), "unique"),
    (("cell: lstm", "cell: transformer"), "architecture.cell"),
    (("max_length: 32", "max_length: 0"), "max_length"),
    (("input: {kind: tokens, tokenizer: word}", "input: {kind: tokens, tokenizer: bpe}"), "tokenizer"),
    (("input: {kind: tokens, tokenizer: word}", "input: {kind: tokens, vocabulary: ../../etc/passwd}"),
     "vocabulary"),
    (("task: classification", "task: classification\nsurprise: 1"), "surprise"),
    (("input_layer: embedding", "input_layer: linear"), "token inputs need input_layer 'embedding'"),
])
def test_invalid_configs_are_refused_with_the_field(change: tuple[str, str], message: str) -> None:
    with pytest.raises(ModelConfigError, match="model.yaml") as info:
        parse_config(GOOD.replace(*change))
    assert message in info.value.message


@pytest.mark.parametrize("text", ["[1, 2]", "{", "!!python/object:os.system {}", ""])
def test_non_mapping_or_unsafe_yaml(text: str) -> None:
    with pytest.raises(ModelConfigError):
        parse_config(text)
