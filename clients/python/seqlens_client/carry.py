"""A sequence's recurrent state as the client holds it (client-held streaming)."""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
import numpy as np

from ._proto.seqlens.v1 import explain_pb2, recurrent_pb2
from .errors import InvalidArgument
from .tensors import from_numpy, to_numpy

__all__ = ["RecurrentState"]


@dataclass(frozen=True)
class RecurrentState:
    """The recurrent state after ``steps`` timesteps of a sequence, and the model version that
    made it: named float32 tensors (``layer0.forward.h``, ``layer0.forward.c``, ...). Feed it back
    as is with the next chunk; it is only valid for ``model_name``/``model_version``."""

    model_name: str
    model_version: str
    steps: int
    tensors: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def from_proto(cls, msg: recurrent_pb2.RecurrentState) -> RecurrentState:
        return cls(msg.model_name, msg.model_version, msg.steps, {t.name: to_numpy(t.tensor) for t in msg.tensors})

    def to_proto(self) -> recurrent_pb2.RecurrentState:
        return recurrent_pb2.RecurrentState(
            model_name=self.model_name, model_version=self.model_version, steps=self.steps,
            tensors=[recurrent_pb2.StateTensor(name=k, tensor=from_numpy(np.asarray(v, dtype=np.float32)))
                     for k, v in self.tensors.items()])

    @property
    def nbytes(self) -> int:
        return sum(int(np.asarray(v).nbytes) for v in self.tensors.values())


StateArg = RecurrentState | list[RecurrentState] | None


def predict_states(state: StateArg, n_inputs: int) -> list[recurrent_pb2.RecurrentState]:
    """``predict(state=...)``: one state for a single input, or a list (None: from zero)."""
    if state is None:
        return []
    states = [state] if isinstance(state, RecurrentState) else list(state)
    if len(states) != n_inputs:
        raise InvalidArgument(grpc.StatusCode.INVALID_ARGUMENT,
                              f"state has {len(states)} entries; give one per input ({n_inputs})")
    return [s.to_proto() for s in states]


def with_state(req: explain_pb2.ExplainRequest, initial_state: RecurrentState | None, return_state: bool) -> None:
    """``explain(initial_state=..., return_state=...)`` into the request."""
    if initial_state is not None:
        req.initial_state.CopyFrom(initial_state.to_proto())
    req.return_state = return_state or initial_state is not None
