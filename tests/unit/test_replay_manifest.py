"""``architecture.kind: onnx`` manifests: the schema's rules, and the load-time checks that tie the
``graph:`` section to the ONNX file (names, attribution point, state outputs, output shape)."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import yaml
from onnx import helper
from seqlens.errors import ModelConfigError
from seqlens.schema import dump_config, parse_config
from seqlens.versions import load_version

from tests.custom_models import make_attention, make_myrnn, make_peephole

GRAPH = """
task: classification
input: {kind: tokens, tokenizer: char}
max_length: 20
labels: [a, b]
architecture: {kind: onnx}
graph: {inputs: ids, lengths: lens, output: logits, attribute_at: emb}
"""


def test_graph_manifest_parses_and_family_stays_the_default() -> None:
    config = parse_config(GRAPH)
    assert config.is_graph and config.graph is not None and config.graph.attribute_at == "emb"
    assert config.head == "last" and not config.starts_late
    family = parse_config("""
task: tagging
input: {kind: tokens}
max_length: 9
labels: [a, b]
architecture: {input_layer: embedding, embedding_dim: 4, cell: gru, hidden_size: 3, head: per_step}
""")
    assert not family.is_graph and family.family.cell == "gru" and family.starts_late
    assert "kind" not in yaml.safe_load(dump_config(family))["architecture"]  # family files unchanged


@pytest.mark.parametrize(("edit", "message"), [
    (("graph: {inputs: ids, lengths: lens, output: logits, attribute_at: emb}\n", ""), "needs a graph: section"),
    (("attribute_at: emb", "attribute_at: input"), "token inputs are attributed at the embedding"),
    (("output: logits", "output: ids"), "tensor names must be distinct"),
    (("kind: onnx", "kind: keras"), "architecture"),
    (("output: logits", "output: ''"), "graph.output"),
])
def test_graph_manifest_rules(edit: tuple[str, str], message: str) -> None:
    with pytest.raises(ModelConfigError, match=message):
        parse_config(GRAPH.replace(*edit))


def test_features_attribute_at_the_input_and_family_refuses_a_graph_section() -> None:
    text = GRAPH.replace("{kind: tokens, tokenizer: char}", "{kind: features, feature_names: [x]}")
    with pytest.raises(ModelConfigError, match="feature inputs are attributed at the input"):
        parse_config(text)
    with pytest.raises(ModelConfigError, match="applies to architecture.kind 'onnx' only"):
        parse_config(GRAPH.replace("{kind: onnx}", "{input_layer: embedding, embedding_dim: 4, cell: gru, "
                                                   "hidden_size: 3, head: last}"))


def test_load_checks_tie_the_manifest_to_the_graph(tmp_path: Path) -> None:
    myrnn = make_myrnn(0)
    ok = load_version(myrnn.write_version(tmp_path / "ok"), "m", "1")
    assert ok.kind == "onnx" and ok.attribution_width == 13 and ok.parity_max_abs_diff <= 1e-5

    bad_at = dict(myrnn.graph, attribute_at="states")
    with pytest.raises(ModelConfigError, match="must be the output of the Gather"):
        load_version(myrnn.write_version(tmp_path / "at", extra_yaml={"graph": bad_at}), "m", "1")

    wide = dict(myrnn.graph, states=[{"output": "states", "slices": {"hidden": [0, 99]}}])
    with pytest.raises(ModelConfigError, match="slice 'hidden' ends at 99, past the 8 units"):
        load_version(myrnn.write_version(tmp_path / "wide", extra_yaml={"graph": wide}), "m", "1")

    with pytest.raises(ModelConfigError, match=r"output has shape \[3, 2\].*needs \[3, 5\]"):
        load_version(make_peephole(0).write_version(tmp_path / "h", extra_yaml={"horizon": 5}), "m", "1")


def test_token_ids_read_besides_the_embedding_are_refused(tmp_path: Path) -> None:
    """A graph that also reads the ids elsewhere (here: adds them to the output) would hide a
    path from attributions at the embedding."""
    att = make_attention(0)
    model = onnx.load_from_string(att.onnx_bytes)
    for node in model.graph.node:
        node.output[:] = ["raw" if o == "outputs" else o for o in node.output]
    model.graph.node.extend([
        helper.make_node("Cast", ["inputs"], ["ids_f"], to=onnx.TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["ids_f"], ["ids_sum"], keepdims=0),
        helper.make_node("Add", ["raw", "ids_sum"], ["outputs"]),
    ])
    att.onnx_bytes = model.SerializeToString()
    with pytest.raises(ModelConfigError, match="reads the token input 'inputs' besides the embedding"):
        load_version(att.write_version(tmp_path / "v"), "m", "1")
