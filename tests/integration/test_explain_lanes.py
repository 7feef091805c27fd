"""A lone Explain on a real server splits its gradient rows across the server's lanes, and
answers exactly what a one-thread server answers."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
from seqlens_client._proto.seqlens.v1 import explain_pb2, service_pb2_grpc, types_pb2

from tests.factories import export_tiny


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lanes")
    export_tiny(root, "words", seed=3, cell="lstm", task="classification", tokens=True)
    return root


def _explain(target: str) -> np.ndarray:
    with grpc.insecure_channel(target) as channel:
        reply = service_pb2_grpc.SequenceExplainerServiceStub(channel).Explain(explain_pb2.ExplainRequest(
            model_name="words", input=types_pb2.SequenceInput(token_ids=types_pb2.TokenIds(ids=[2, 5, 7, 9, 3, 4])),
            methods=[explain_pb2.AttributionMethod(name="integrated_gradients", n_steps=40)]))
    scores = reply.attributions[0].scores
    return np.frombuffer(scores.data, dtype="<f4").reshape(list(scores.shape))


def test_lone_explanation_uses_the_lanes_and_answers_the_same(repo: Path, start_server) -> None:  # type: ignore[no-untyped-def]
    wide = start_server(repo, explain_threads=2)
    narrow = start_server(repo, explain_threads=1)
    runner = wide.server.dataplane.explainer
    assert runner.lanes is not None and runner.lanes.extra == 1
    assert narrow.server.dataplane.explainer.lanes is None
    split = _explain(wide.target)
    assert runner.lanes.splits >= 1  # nothing else ran or waited: the rows were split
    assert runner.running == 0 and runner.waiting == 0
    np.testing.assert_allclose(split, _explain(narrow.target), rtol=1e-6, atol=1e-7)
