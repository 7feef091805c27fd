"""Bulk explanation of whole datasets on Ray Data (``pip install "seqlens[ray]"``).

>>> from seqlens.bulk import BulkSpec, explain_dataset, summarize      # doctest: +SKIP
>>> report = explain_dataset("reviews.jsonl", "out/", BulkSpec(repository="models", model="sentiment"))
>>> summarize("out/").write_html("summary.html")

Names are loaded on first use, so importing ``seqlens.bulk.cli`` (the ``seqlens`` command)
costs nothing; Ray itself is imported only when a job runs. Design: docs/bulk.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..explainers.options import MethodOptions
    from ..explainers.targets import TargetSpec
    from .aggregate import DatasetSummary, summarize
    from .run import BulkProgress, BulkReport, explain_dataset
    from .spec import BulkSpec

_WHERE = {"DatasetSummary": ".aggregate", "summarize": ".aggregate", "BulkProgress": ".run", "BulkReport": ".run",
          "explain_dataset": ".run", "BulkSpec": ".spec", "MethodOptions": "..explainers.options",
          "TargetSpec": "..explainers.targets"}
__all__ = ["BulkProgress", "BulkReport", "BulkSpec", "DatasetSummary", "MethodOptions", "TargetSpec",
           "explain_dataset", "summarize"]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name], __name__), name)
