"""Newline, tab and special tokens stay visible in the pictures (source-code explanations)."""

from __future__ import annotations

import json
import re

import numpy as np
from seqlens_client import Explanation
from seqlens_client._proto.seqlens.v1 import explain_pb2, predict_pb2, types_pb2
from seqlens_client.report.data import report_data
from seqlens_client.report.glyphs import inline_text, label_text
from seqlens_client.tensors import from_numpy

CODE = "def f(x):\n\treturn x\r\n"


def code_explanation() -> Explanation:
    """A char model's explanation of CODE, with [CLS]-like special tokens at both ends."""
    toks = [types_pb2.Token(text="<s>", id=0, start=0, end=0, special=True)]
    toks += [types_pb2.Token(text=c, id=i + 3, start=i, end=i + 1) for i, c in enumerate(CODE)]
    toks += [types_pb2.Token(text="</s>", id=1, start=0, end=0, special=True)]
    scores = np.linspace(-1, 1, len(toks)).astype(np.float32)
    resp = explain_pb2.ExplainResponse(
        model_name="code", model_version="1", tokens=toks,
        prediction=predict_pb2.Prediction(length=len(toks), tokens=toks, scores=from_numpy(scores[:2]),
                                          probabilities=from_numpy(np.array([0.4, 0.6], np.float32)),
                                          label="b", label_index=1),
        target=explain_pb2.ResolvedTarget(class_index=1, label="b"),
        attributions=[explain_pb2.Attribution(method="saliency", scores=from_numpy(scores))])
    exp = Explanation.from_proto(resp)
    exp.text = CODE
    return exp


def test_glyphs() -> None:
    assert label_text("\n") == "\u23ce" and label_text("\t") == "\u21e5" and label_text("\r") == "\u240d"
    assert label_text("\x00\x1b\x7f") == "\u2400\u241b\u2421"
    assert label_text("  ") == "\u2423\u2423" and label_text("a b") == "a b" and label_text("") == ""
    assert inline_text("\tx\n") == "\u21e5\tx\u23ce\n"  # the break and the indentation are kept


def test_report_data_carries_visible_labels_and_running_text() -> None:
    exp = code_explanation()
    assert exp.tokens[0].special and not exp.tokens[1].special
    assert exp.tokens[10].surface(CODE) == "\n"
    toks = report_data(exp)["tokens"]
    by_text = {t["text"]: t for t in toks}
    assert by_text["\n"]["label"] == "\u23ce" and by_text["\n"]["inline"] == "\u23ce\n"
    assert by_text["\t"]["label"] == "\u21e5" and by_text["\t"]["inline"] == "\u21e5\t"
    assert by_text["<s>"]["inline"] == "<s>" and by_text["<s>"]["special"]  # covers no text: shows itself
    page = exp.to_html()
    raw = re.search(r'<script type="application/json" id="seqlens-data">(.*?)</script>', page, re.DOTALL)
    assert raw is not None
    assert [t["label"] for t in json.loads(raw.group(1))["tokens"]] == [t["label"] for t in toks]


def test_overlapping_tokens_show_their_characters_once() -> None:
    """Byte-level BPE cuts one emoji into two tokens with the same span."""
    exp = code_explanation()
    exp.text = "a😀"
    exp.tokens = [exp.tokens[0].__class__(text=t, id=i, start=s, end=e)
                  for i, (t, s, e) in enumerate([("a", 0, 1), ("ðŁĺ", 1, 2), ("Ģ", 1, 2)])]
    assert [t["inline"] for t in report_data(exp)["tokens"]] == ["a", "😀", "\u00b7"]


def test_text_report_shows_glyphs_and_keeps_source_lines() -> None:
    exp = code_explanation()
    plain = exp.to_text(color=False, width=400)
    assert "\u23ce[" in plain and "\u21e5[" in plain and "\u240d[" in plain
    body = plain.splitlines()[2]  # header, quality line, then the tokens on one line
    assert body.startswith("<s>[") and "\r" not in plain
    coloured = exp.to_text(color=True, width=400).splitlines()
    token_rows = coloured[2:-1]
    visible = [re.sub(r"\x1b\[[0-9;]*m", "", row).replace(" ", "") for row in token_rows]
    assert visible == ["<s>def\u2423f(x):\u23ce", "\u21e5return\u2423x\u240d\u23ce", "</s>"]
