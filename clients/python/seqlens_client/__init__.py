"""seqlens-client: predictions and per-timestep explanations of recurrent sequence models
served by seqlens, over gRPC. Depends on grpcio, protobuf and numpy only.

>>> from seqlens_client import Client, Method
>>> with Client("localhost:50051") as client:                                  # doctest: +SKIP
...     print(client.predict("sentiment", ["a gorgeous, witty film"])[0].label)
...     exp = client.explain("sentiment", "a gorgeous, witty film",
...                          methods=[Method("integrated_gradients", n_steps=64), "occlusion"], state=True)
...     exp.to_html("report.html")
"""

from .aio import AsyncClient
from .carry import RecurrentState
from .channel import TLS, Keepalive, RetryPolicy
from .client import Client
from .errors import (
                     Cancelled,
                     DeadlineExceeded,
                     FailedPrecondition,
                     Internal,
                     InvalidArgument,
                     NotFound,
                     PermissionDenied,
                     ResourceExhausted,
                     SeqlensError,
                     Unauthenticated,
                     Unavailable,
)
from .options import METHODS, STATE_SUMMARIES, Baseline, Method, StateOptions, Target
from .progress import ProgressBar
from .results import (
                     Architecture,
                     Attribution,
                     Explanation,
                     Faithfulness,
                     InputSchema,
                     Limits,
                     ModelInfo,
                     ModelSummary,
                     Prediction,
                     PredictResult,
                     ResolvedTarget,
                     Token,
                     VersionStatus,
)
from .sequences import AsyncSequenceStream, SequenceStream, stitch, stitch_states
from .state import StateSummary

__version__ = "0.1.0"

__all__ = [
                     "METHODS",
                     "STATE_SUMMARIES",
                     "TLS",
                     "Architecture",
                     "AsyncClient",
                     "AsyncSequenceStream",
                     "Attribution",
                     "Baseline",
                     "Cancelled",
                     "Client",
                     "DeadlineExceeded",
                     "Explanation",
                     "FailedPrecondition",
                     "Faithfulness",
                     "InputSchema",
                     "Internal",
                     "InvalidArgument",
                     "Keepalive",
                     "Limits",
                     "Method",
                     "ModelInfo",
                     "ModelSummary",
                     "NotFound",
                     "PermissionDenied",
                     "PredictResult",
                     "Prediction",
                     "ProgressBar",
                     "RecurrentState",
                     "ResolvedTarget",
                     "ResourceExhausted",
                     "RetryPolicy",
                     "SeqlensError",
                     "SequenceStream",
                     "StateOptions",
                     "StateSummary",
                     "Target",
                     "Token",
                     "Unauthenticated",
                     "Unavailable",
                     "VersionStatus",
                     "__version__",
                     "stitch",
                     "stitch_states",
]
