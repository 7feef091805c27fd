"""The generated protobuf and gRPC stubs, as a public module of the SDK.

The server (distribution ``seqlens``) and other tools import the wire types from here and never
from the private ``seqlens_client._proto`` package, whose layout is the generator's to change
(``scripts/gen_protos.py`` writes it from ``protos/``). Names: the ``seqlens.v1`` modules under
their generated names, and the Open Inference Protocol v2 modules as ``oip_pb2`` /
``oip_pb2_grpc`` (package ``inference``).
"""

from __future__ import annotations

from ._proto.inference import grpc_service_pb2 as oip_pb2
from ._proto.inference import grpc_service_pb2_grpc as oip_pb2_grpc
from ._proto.seqlens.v1 import (
    explain_pb2,
    models_pb2,
    predict_pb2,
    recurrent_pb2,
    sequence_pb2,
    service_pb2,
    service_pb2_grpc,
    state_pb2,
    types_pb2,
)

__all__ = ["explain_pb2", "models_pb2", "oip_pb2", "oip_pb2_grpc", "predict_pb2", "recurrent_pb2", "sequence_pb2",
           "service_pb2", "service_pb2_grpc", "state_pb2", "types_pb2"]
