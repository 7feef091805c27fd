"""Stateful sequences: feed one sequence in chunks and get the answers of the whole.

Two ways (see the README section "Stateful sequences"):

- **client-held state**: ``client.predict(model, chunk, state=previous.state)`` returns a
  :class:`RecurrentState` in ``.state``; feed it with the next chunk. Works behind any load
  balancer; the state is only valid for the model version that made it.
- **server-held sequences**: ``with client.sequence(model) as seq: seq.feed(chunk)`` keeps the
  state on the server under a sequence id, over one ``StreamSequence`` stream (the stream
  keeps the sequence on one replica), or over unary calls with ``stream=False``.

>>> with Client("localhost:50051") as client, client.sequence("sunspots") as seq:  # doctest: +SKIP
...     for chunk in np.array_split(series, 8):
...         forecast = seq.feed(chunk).forecast
"""

from __future__ import annotations

import itertools
import queue
import uuid
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np

from ._proto.seqlens.v1 import explain_pb2, predict_pb2, recurrent_pb2, sequence_pb2, types_pb2
from .carry import RecurrentState
from .errors import InvalidArgument, SeqlensError, error_from_code, error_from_rpc
from .inputs import SequenceLike, to_sequence_input
from .options import BaselineLike, MethodsLike, StateLike, TargetLike
from .results import Explanation, Prediction
from .state import LayerStateSummary, StateSummary

if TYPE_CHECKING:
    from typing import Self

__all__ = ["AsyncSequenceStream", "RecurrentState", "SequenceId", "SequenceStream", "stitch", "stitch_states"]

#: A server-held sequence id: a non-empty string or a non-zero uint64 (as Triton's correlation ids).
SequenceId = str | int


def control(seq_id: SequenceId, start: bool, end: bool) -> recurrent_pb2.SequenceControl:
    if isinstance(seq_id, bool) or not isinstance(seq_id, str | int):
        raise InvalidArgument(grpc.StatusCode.INVALID_ARGUMENT, f"sequence id must be a str or int, got {seq_id!r}")
    if isinstance(seq_id, str):
        if not seq_id:
            raise InvalidArgument(grpc.StatusCode.INVALID_ARGUMENT, "sequence id is empty")
        return recurrent_pb2.SequenceControl(string_id=seq_id, start=start, end=end)
    if not 0 < seq_id < 2 ** 64:
        raise InvalidArgument(grpc.StatusCode.INVALID_ARGUMENT, f"sequence id {seq_id} is not a non-zero uint64")
    return recurrent_pb2.SequenceControl(uint_id=seq_id, start=start, end=end)


def _input(chunk: SequenceLike) -> types_pb2.SequenceInput:
    try:
        return to_sequence_input(chunk)
    except ValueError as e:
        raise InvalidArgument(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from e


def stitch(predictions: list[Prediction]) -> np.ndarray:
    """Per-step outputs of consecutive chunks (tagging) joined into the whole sequence's ``[T,C]``."""
    return np.concatenate([p.scores for p in predictions], axis=0)


# Per-step state summaries and their time axis; the others describe one chunk and are not joined.
_PER_STEP = {"hidden": 0, "cell_state": 0, "state_norm": 0, "delta_norm": 0, "top_units": 0,
             "prefix_prediction": 0, "active_count": 0, "projection": 0, "gate_mean": 1, "gates": 1}


def stitch_states(explanations: list[Explanation]) -> StateSummary:
    """The per-step state summaries of consecutive chunk explanations (``explain(initial_state=...)``)
    joined in step order into the whole sequence's. Chunks must follow each other without gaps
    (``step_offset`` of each = the previous one's end). Per-chunk aggregates (saturation,
    timescale, unit contribution) are left out: recompute them from the joined gates."""
    parts = sorted(explanations, key=lambda e: e.step_offset)
    if not parts or any(e.state is None for e in parts):
        raise ValueError("every explanation needs state summaries (explain(..., state=...))")
    expected = parts[0].step_offset
    for e in parts:
        if e.step_offset != expected:
            raise ValueError(f"chunks are not consecutive: one starts at step {e.step_offset}, expected {expected}")
        expected += e.length
    layers = []
    for k, first in enumerate(parts[0].state or []):
        joined = LayerStateSummary(first.layer, first.direction, first.cell, list(first.gate_names))
        for name, axis in _PER_STEP.items():
            arrays = [getattr((e.state or StateSummary([])).layers[k], name) for e in parts]
            if all(a is not None for a in arrays):
                setattr(joined, name, np.concatenate(arrays, axis=axis))
        layers.append(joined)
    return StateSummary(layers)


class _SequenceBase:
    """What the blocking and asyncio sequence handles share: ids, flags, offsets."""

    def __init__(self, stub: Any, model: str, version: str | None, sequence_id: SequenceId | None,
                 metadata: tuple[tuple[str, str], ...], timeout: float | None) -> None:
        self._stub = stub
        self._metadata = metadata
        self._timeout = timeout
        self.model = model
        self.version = version or ""
        self.id: SequenceId = sequence_id if sequence_id is not None else uuid.uuid4().hex
        self.started = False
        self.ended = False
        self.offset = 0  # absolute step of the last chunk's first timestep
        self.steps = 0  # timesteps fed so far
        self.model_version = ""
        self._ids = itertools.count()

    def _chunk_request(self, chunk: SequenceLike | None, end: bool) -> sequence_pb2.StreamSequenceRequest:
        if self.ended:
            raise InvalidArgument(grpc.StatusCode.INVALID_ARGUMENT, f"sequence {self.id!r} has ended")
        req = sequence_pb2.StreamSequenceRequest(request_id=str(next(self._ids)), model_name=self.model,
                                                model_version=self.version,
                                                sequence=control(self.id, not self.started, end))
        if chunk is not None:
            req.input.CopyFrom(_input(chunk))
        return req

    def _unary_request(self, chunk: SequenceLike | None, end: bool) -> predict_pb2.PredictRequest:
        req = self._chunk_request(chunk, end)
        return predict_pb2.PredictRequest(model_name=req.model_name, model_version=req.model_version,
                                          inputs=[req.input] if chunk is not None else [], sequence=req.sequence)

    def _explain_request(self, chunk: SequenceLike, end: bool, methods: MethodsLike, target: TargetLike,
                         baseline: BaselineLike, state: StateLike, faithfulness: bool) -> explain_pb2.ExplainRequest:
        from .calls import ExplainSpec  # calls imports this module

        spec = ExplainSpec.build(self.model, methods, target, baseline, state, faithfulness, self.version)
        req = spec.request(chunk)
        req.sequence.CopyFrom(self._chunk_request(None, end).sequence)
        return req

    def _explained(self, resp: explain_pb2.ExplainResponse, req: explain_pb2.ExplainRequest) -> Explanation:
        from .calls import finish_explanation

        self._status(resp.model_version, resp.sequence)
        return finish_explanation(resp, req.input, None)

    def _status(self, model_version: str, status: recurrent_pb2.SequenceStatus) -> None:
        self.started = True
        self.model_version = model_version
        self.offset, self.steps, self.ended = status.offset, status.steps, status.ended


class SequenceStream(_SequenceBase):
    """A server-held sequence (blocking). Made by :meth:`Client.sequence`; use it as a context
    manager: leaving the block ends the sequence on the server."""

    def __init__(self, stub: Any, model: str, version: str | None, sequence_id: SequenceId | None,
                 metadata: tuple[tuple[str, str], ...], timeout: float | None, stream: bool) -> None:
        super().__init__(stub, model, version, sequence_id, metadata, timeout)
        self._requests: queue.Queue[sequence_pb2.StreamSequenceRequest | None] | None = None
        self._call: Any = None
        if stream:
            requests: queue.Queue[sequence_pb2.StreamSequenceRequest | None] = queue.Queue()
            self._requests = requests
            self._call = stub.StreamSequence(iter(requests.get, None), timeout=timeout, metadata=metadata)

    def feed(self, chunk: SequenceLike, *, end: bool = False) -> Prediction:
        """Run the next chunk (text, token ids or ``[T,F]`` features) and return the prediction
        after it (tagging: the chunk's steps). ``end=True`` ends the sequence after it."""
        pred = self._send(chunk, end)
        assert pred is not None
        return pred

    def explain(self, chunk: SequenceLike, methods: MethodsLike = None, *, target: TargetLike = None,
                baseline: BaselineLike = None, state: StateLike = None, faithfulness: bool = False,
                end: bool = False) -> Explanation:
        """Explain the next chunk from the sequence's state (held fixed: the past is context) and
        advance the sequence by it; options as :meth:`Client.explain`. A unary call: on several
        replicas it needs the replica that holds the sequence (session affinity)."""
        req = self._explain_request(chunk, end, methods, target, baseline, state, faithfulness)
        try:
            resp = self._stub.Explain(req, timeout=self._timeout, metadata=self._metadata)
        except grpc.RpcError as e:
            raise error_from_rpc(e) from None
        return self._explained(resp, req)

    def end(self, chunk: SequenceLike | None = None) -> Prediction | None:
        """End the sequence, optionally with a last chunk (its prediction is returned)."""
        if self.ended or (not self.started and chunk is None):
            self.ended = True
            return None
        return self._send(chunk, True)

    def _send(self, chunk: SequenceLike | None, end: bool) -> Prediction | None:
        try:
            if self._requests is None:
                resp = self._stub.Predict(self._unary_request(chunk, end), timeout=self._timeout,
                                          metadata=self._metadata)
                self._status(resp.model_version, resp.sequence)
                return Prediction.from_proto(resp.predictions[0]) if resp.predictions else None
            self._requests.put(self._chunk_request(chunk, end))
            answer = next(self._call)
        except grpc.RpcError as e:
            raise error_from_rpc(e) from None
        except StopIteration:
            raise error_from_code(grpc.StatusCode.UNAVAILABLE, "the sequence stream ended") from None
        if answer.HasField("error"):
            raise error_from_code(answer.error.code, answer.error.message)
        self._status(answer.model_version, answer.sequence)
        return Prediction.from_proto(answer.prediction) if answer.HasField("prediction") else None

    def close(self) -> None:
        """End the sequence (best effort) and close the stream."""
        try:
            if not self.ended and self.started:
                self.end()
        except SeqlensError:
            pass
        finally:
            if self._requests is not None:
                self._requests.put(None)  # done writing: the server ends the stream
                try:
                    for _ in self._call:
                        pass
                except grpc.RpcError:
                    pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncSequenceStream(_SequenceBase):
    """A server-held sequence (asyncio); see :class:`SequenceStream`. Use ``async with``."""

    def __init__(self, stub: Any, model: str, version: str | None, sequence_id: SequenceId | None,
                 metadata: tuple[tuple[str, str], ...], timeout: float | None, stream: bool) -> None:
        super().__init__(stub, model, version, sequence_id, metadata, timeout)
        self._call: Any = stub.StreamSequence(timeout=timeout, metadata=metadata) if stream else None

    async def feed(self, chunk: SequenceLike, *, end: bool = False) -> Prediction:
        pred = await self._send(chunk, end)
        assert pred is not None
        return pred

    async def explain(self, chunk: SequenceLike, methods: MethodsLike = None, *, target: TargetLike = None,
                      baseline: BaselineLike = None, state: StateLike = None, faithfulness: bool = False,
                      end: bool = False) -> Explanation:
        """See :meth:`SequenceStream.explain`."""
        req = self._explain_request(chunk, end, methods, target, baseline, state, faithfulness)
        try:
            resp = await self._stub.Explain(req, timeout=self._timeout, metadata=self._metadata)
        except grpc.RpcError as e:
            raise error_from_rpc(e) from None
        return self._explained(resp, req)

    async def end(self, chunk: SequenceLike | None = None) -> Prediction | None:
        if self.ended or (not self.started and chunk is None):
            self.ended = True
            return None
        return await self._send(chunk, True)

    async def _send(self, chunk: SequenceLike | None, end: bool) -> Prediction | None:
        try:
            if self._call is None:
                resp = await self._stub.Predict(self._unary_request(chunk, end), timeout=self._timeout,
                                                metadata=self._metadata)
                self._status(resp.model_version, resp.sequence)
                return Prediction.from_proto(resp.predictions[0]) if resp.predictions else None
            await self._call.write(self._chunk_request(chunk, end))
            answer = await self._call.read()
        except grpc.RpcError as e:
            raise error_from_rpc(e) from None
        if answer is grpc.aio.EOF:
            raise error_from_code(grpc.StatusCode.UNAVAILABLE, "the sequence stream ended")
        if answer.HasField("error"):
            raise error_from_code(answer.error.code, answer.error.message)
        self._status(answer.model_version, answer.sequence)
        return Prediction.from_proto(answer.prediction) if answer.HasField("prediction") else None

    async def close(self) -> None:
        try:
            if not self.ended and self.started:
                await self.end()
        except SeqlensError:
            pass
        finally:
            if self._call is not None:
                try:
                    await self._call.done_writing()
                    while await self._call.read() is not grpc.aio.EOF:
                        pass
                except grpc.RpcError:
                    pass

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


