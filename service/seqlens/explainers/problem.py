"""One sequence, its resolved target and baseline: what every method attributes.

The torch side works at the attribution layer: the embedding output [T,E] for token
models (as Captum's LayerIntegratedGradients on ``model.embedding``), the raw input [T,F]
for feature models. ``lengths`` is passed to the model as its own argument and never
interpolated. The ONNX side evaluates many perturbed copies of the input, in chunks.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property

import numpy as np
import torch
from torch import Tensor

from ..families import LayerStates
from ..schema import TokenInput
from ..versions import LoadedVersion
from .baselines import Baseline
from .control import WorkControl
from .options import Runtime
from .targets import OutputSpace, ResolvedTarget, select, select_numpy


class Problem:
    def __init__(self, loaded: LoadedVersion, values: np.ndarray, target: ResolvedTarget, baseline: Baseline,
                 *, chunk_elements: int, control: WorkControl | None = None,
                 initial: LayerStates | None = None) -> None:
        self.loaded = loaded
        self.module = loaded.torch_module  # the family module or a graph's replay: same interface
        self.width = loaded.attribution_width  # E of the attribution layer
        self.onnx = loaded.onnx
        self.config = loaded.config
        self.values = values  # token ids [T] int64 or features [T,F] float32
        self.target = target
        self.baseline = baseline
        self.chunk_elements = chunk_elements  # bound on rows x T x E per forward(+backward) pass
        self.control = control or WorkControl()
        self.length = int(values.shape[0])
        self.is_tokens = self.config.is_tokens
        # A carried state ([1,H] tensors per layer), held fixed: the chunk's past is context,
        # and every forward pass (perturbations included) runs on torch from it.
        self.initial = initial

    def initial_rows(self, n: int) -> LayerStates | None:
        """The carried state repeated for ``n`` rows (None: start from zero)."""
        if self.initial is None:
            return None
        return [tuple(t.expand(n, -1).contiguous() for t in layer) for layer in self.initial]

    # --- torch: the attribution layer ------------------------------------------------
    def row_lengths(self, n: int) -> Tensor:
        return torch.full((n,), self.length, dtype=torch.int64)

    @cached_property
    def x(self) -> Tensor:
        """The input at the attribution layer [T,D] (D = E for tokens, F for features)."""
        with torch.no_grad():
            if self.is_tokens:
                return self.module.embed(torch.from_numpy(self.values)[None])[0]
            return torch.tensor(self.values, dtype=torch.float32)  # a copy: request buffers are read-only

    @cached_property
    def b(self) -> Tensor:
        """The baseline at the attribution layer [T,D]."""
        base = self.baseline
        if not self.is_tokens:
            assert base.values is not None
            return torch.tensor(base.values, dtype=torch.float32)
        if base.values is not None:
            with torch.no_grad():
                return self.module.embed(torch.from_numpy(base.values)[None])[0]
        if base.embedding_mean is not None:
            return torch.from_numpy(base.embedding_mean).expand_as(self.x).contiguous()
        return torch.zeros_like(self.x)

    @property
    def rows_per_chunk(self) -> int:
        """Rows per pass so that rows x T x E stays within ``chunk_elements``."""
        return max(1, self.chunk_elements // (self.length * self.width))

    def forward(self, rows: Tensor) -> Tensor:
        """Rows at the attribution layer [N,T,D] -> the target output of each row [N]."""
        lengths = self.row_lengths(rows.shape[0])
        initial = self.initial_rows(rows.shape[0])
        if initial is not None:
            family = self.loaded.family_module  # carried states: built-in family only
            emb = rows if self.is_tokens else family.embed(rows)
            out = family.forward_from_embedding_with_state(emb, lengths, initial)[0]
        elif self.is_tokens:
            out = self.module.forward_from_embedding(rows, lengths)
        else:
            out = self.module(rows, lengths)
        return select(out, self.target)

    def forward_no_grad(self, rows: Tensor) -> Tensor:
        """Target outputs [N] without gradients, chunked like gradient work."""
        outs = []
        step = self.rows_per_chunk
        with torch.no_grad():
            for start in range(0, rows.shape[0], step):
                self.control.check("forward passes")
                outs.append(self.forward(rows[start:start + step]))
        return torch.cat(outs)

    @cached_property
    def torch_endpoints(self) -> tuple[float, float]:
        """f(x) and f(baseline) on torch (what completeness is measured against)."""
        fx, fb = self.forward_no_grad(torch.stack([self.x, self.b])).double().tolist()
        return fx, fb

    def endpoints(self, runtime: Runtime) -> tuple[float, float]:
        """f(x) and f(baseline) on the runtime a plan declares (its ``endpoints``); each is
        computed once per problem."""
        return self.torch_endpoints if runtime == "torch" else self.onnx_endpoints

    # --- ONNX Runtime: perturbed copies ----------------------------------------------
    @property
    def removal_values(self) -> np.ndarray:
        """What perturbations put in place of removed steps: the baseline in input space, or
        PAD ids for token baselines that exist only at the embedding (faithfulness)."""
        if self.baseline.values is not None:
            return self.baseline.values
        assert isinstance(self.config.input, TokenInput)
        return np.full(self.length, self.config.input.pad_id, dtype=np.int64)

    def onnx_targets(self, n: int, make: Callable[[int, int], np.ndarray], what: str,
                     space: OutputSpace | None = None) -> np.ndarray:
        """Target outputs [n] (float64) of ``n`` same-length variants of the input.

        ``make(start, stop)`` builds variants start..stop-1 ([k,T] ids or [k,T,F] features),
        so that at most one chunk of copies exists at a time.
        """
        out = np.empty(n, dtype=np.float64)
        step = self.rows_per_chunk
        for start in range(0, n, step):
            self.control.check(what)
            stop = min(n, start + step)
            batch = make(start, stop)
            raw = self._run_rows(batch, np.full(stop - start, self.length, dtype=np.int64))
            out[start:stop] = select_numpy(raw, self.target, space)
        return out

    def _run_rows(self, batch: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Raw outputs of a batch of inputs: ONNX Runtime, or torch from a carried state."""
        initial = self.initial_rows(batch.shape[0])
        if initial is None:
            return self.onnx.run(batch, lengths)
        with torch.no_grad():
            return self.loaded.family_module.forward_with_state(
                torch.from_numpy(np.ascontiguousarray(batch)), torch.from_numpy(lengths), initial)[0].numpy()

    @cached_property
    def onnx_endpoints(self) -> tuple[float, float]:
        """f(x) and f(removal baseline) on ONNX Runtime (perturbation methods)."""
        pair = np.stack([self.values, self.removal_values])
        fx, fb = self.onnx_targets(2, lambda a, b: pair[a:b], "forward passes")
        return float(fx), float(fb)
