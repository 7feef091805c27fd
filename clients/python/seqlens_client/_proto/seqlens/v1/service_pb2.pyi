from seqlens_client._proto.seqlens.v1 import models_pb2 as _models_pb2
from seqlens_client._proto.seqlens.v1 import predict_pb2 as _predict_pb2
from seqlens_client._proto.seqlens.v1 import explain_pb2 as _explain_pb2
from seqlens_client._proto.seqlens.v1 import sequence_pb2 as _sequence_pb2
from google.protobuf import descriptor as _descriptor
from typing import ClassVar as _ClassVar

DESCRIPTOR: _descriptor.FileDescriptor
