"""Whole explanations, from the request, against Captum driven only by the request and the model
files: the target is the test's own argmax of the plain module, the baseline is read from
model.yaml (PAD id, training_mean) and built here, and Captum gets the module's own ``forward``
(with the embedding swapped for an identity where the baseline exists only at the embedding).
No target, baseline or forward code of seqlens is used on the Captum side, so the defaults
(baseline kinds, unset abs_saliency, step and sample counts, TRAINING_MEAN) are checked too.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from captum.attr import InputXGradient, IntegratedGradients, LayerIntegratedGradients, Saliency
from seqlens import load_model
from seqlens.config import Settings
from seqlens.explain import ExplainRequest, explain
from seqlens.explainers.options import MethodOptions
from seqlens.inputs import SequenceInput
from seqlens.versions import LoadedVersion

from tests.factories import VOCAB, export_tiny
from tests.unit.test_explainers_common import assert_rel

pytestmark = pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require gradients")

MODELS: dict[str, dict[str, Any]] = {
    "lstm_tokens_cls": {"cell": "lstm", "task": "classification"},
    "gru_tokens_bi_tag": {"cell": "gru", "task": "tagging", "bidirectional": True},
    "rnn_features_fc": {"cell": "rnn_tanh", "task": "forecasting", "tokens": False},
    "lstm_features_bi2_cls": {"cell": "lstm", "task": "classification", "tokens": False, "bidirectional": True,
                              "layers": 2},
}
LENGTH = 8
SETTINGS = Settings()


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("captum-oracle")
    for i, (name, spec) in enumerate(MODELS.items()):
        export_tiny(root, name, seed=40 + i, **spec)
    return root


class Case:
    """One model and one input, with everything the Captum side needs, built from the files."""

    def __init__(self, repo: Path, name: str) -> None:
        self.loaded: LoadedVersion = load_model(repo, name)
        self.yaml = yaml.safe_load((repo / name / "1" / "model.yaml").read_text(encoding="utf-8"))
        self.module = self.loaded.torch_module
        self.tokens = self.yaml["input"]["kind"] == "tokens"
        rng = np.random.default_rng(7)
        if self.tokens:
            self.values = rng.integers(2, len(VOCAB), size=LENGTH).astype(np.int64)
            self.item = SequenceInput(token_ids=self.values)
            self.x = torch.from_numpy(self.values)[None]
        else:
            self.values = rng.normal(size=(LENGTH, 3)).astype(np.float32) * 2
            self.item = SequenceInput(features=self.values)
            self.x = torch.from_numpy(self.values)[None]
        self.lengths = torch.tensor([LENGTH])
        with torch.no_grad():
            out = self.module(self.x, self.lengths)[0]
        task = self.yaml["task"]
        # the defaults, by the README: predicted class, last step's predicted class, horizon step 0
        if task == "classification":
            self.target: int | tuple[int, int] = int(out.argmax())
        elif task == "tagging":
            self.target = (LENGTH - 1, int(out[LENGTH - 1].argmax()))
        else:
            self.target = 0

    def forward(self, module: torch.nn.Module | None = None) -> Any:
        module = module or self.module
        return lambda x, lengths: module(x, lengths)

    # --- at the embedding, for token models, without seqlens' forward_from_embedding --------
    def embeddings(self) -> torch.Tensor:
        return self.module.embedding.weight.detach()[self.x]  # [1,T,E]

    def identity_embedding(self) -> torch.nn.Module:
        """A copy of the module whose embedding layer passes embeddings through."""
        copy_ = copy.deepcopy(self.module)
        copy_.embedding = torch.nn.Identity()  # type: ignore[assignment]
        return copy_

    def run(self, *methods: MethodOptions, baseline: str = "default", settings: Settings = SETTINGS) -> Any:
        request = ExplainRequest(self.loaded.name, self.item, methods=methods, baseline_kind=baseline)  # type: ignore[arg-type]
        result = explain(self.loaded, request, settings)
        t = result.target
        want = self.target
        got = t.horizon_step if not t.is_class else ((t.timestep, t.class_index) if t.timestep >= 0
                                                     else t.class_index)
        assert got == want, f"target {got} is not the default {want}"
        return result.attributions


@pytest.mark.parametrize("name", list(MODELS))
def test_default_explanation_is_captum_ig_from_the_default_baseline(repo: Path, name: str) -> None:
    """No options at all: IG from the default baseline (PAD ids; training_mean for features),
    against Captum at 256 Gauss-Legendre steps (converged far below the bound)."""
    case = Case(repo, name)
    [ours] = case.run()
    assert ours.method == "integrated_gradients"
    if case.tokens:
        pad = int(case.yaml["input"].get("pad_id", 0))
        ref = LayerIntegratedGradients(case.forward(), case.module.embedding).attribute(
            case.x, torch.full_like(case.x, pad), target=case.target, additional_forward_args=(case.lengths,),
            n_steps=256, method="gausslegendre")
    else:
        mean = torch.tensor(case.yaml["training_mean"], dtype=torch.float32).expand_as(case.x)
        ref = IntegratedGradients(case.forward()).attribute(
            case.x, mean, target=case.target, additional_forward_args=(case.lengths,), n_steps=256,
            method="gausslegendre")
    assert_rel(ours.full, ref, tol=1e-5, rtol=1e-4)  # quadrature error of the default step count


@pytest.mark.parametrize("kind", ["training_mean", "zeros"])
@pytest.mark.parametrize("name", list(MODELS))
def test_ig_from_training_mean_and_zeros_equals_captum(repo: Path, name: str, kind: str) -> None:
    case = Case(repo, name)
    [ours] = case.run(MethodOptions("integrated_gradients", n_steps=32), baseline=kind)
    if case.tokens:  # these baselines exist only at the embedding: [T,E] vectors
        emb = case.embeddings()
        base = (torch.tensor(case.yaml["training_mean"], dtype=torch.float32).expand_as(emb)
                if kind == "training_mean" else torch.zeros_like(emb))
        ref = IntegratedGradients(case.forward(case.identity_embedding())).attribute(
            emb, base, target=case.target, additional_forward_args=(case.lengths,), n_steps=32,
            method="gausslegendre")
    else:
        base = (torch.tensor(case.yaml["training_mean"], dtype=torch.float32).expand_as(case.x)
                if kind == "training_mean" else torch.zeros_like(case.x))
        ref = IntegratedGradients(case.forward()).attribute(
            case.x, base, target=case.target, additional_forward_args=(case.lengths,), n_steps=32,
            method="gausslegendre")
    assert_rel(ours.full, ref)


@pytest.mark.parametrize("name", list(MODELS))
def test_saliency_and_input_x_gradient_defaults_equal_captum_defaults(repo: Path, name: str) -> None:
    case = Case(repo, name)
    saliency, ixg = case.run(MethodOptions("saliency"), MethodOptions("input_x_gradient"))
    module = case.identity_embedding() if case.tokens else case.module
    x = case.embeddings() if case.tokens else case.x
    args = {"target": case.target, "additional_forward_args": (case.lengths,)}
    assert_rel(saliency.full, Saliency(case.forward(module)).attribute(x.clone(), **args))  # abs=True
    assert_rel(ixg.full, InputXGradient(case.forward(module)).attribute(x.clone(), **args))


@pytest.mark.parametrize("name", list(MODELS))
def test_adaptive_ig_is_within_its_tolerance_of_captum_at_many_steps(repo: Path, name: str) -> None:
    tolerance = 1e-3
    case = Case(repo, name)
    [ours] = case.run(MethodOptions("integrated_gradients", adaptive=True, tolerance=tolerance))
    if case.tokens:
        pad = int(case.yaml["input"].get("pad_id", 0))
        ref = LayerIntegratedGradients(case.forward(), case.module.embedding).attribute(
            case.x, torch.full_like(case.x, pad), target=case.target, additional_forward_args=(case.lengths,),
            n_steps=512, method="gausslegendre")
    else:
        mean = torch.tensor(case.yaml["training_mean"], dtype=torch.float32).expand_as(case.x)
        ref = IntegratedGradients(case.forward()).attribute(
            case.x, mean, target=case.target, additional_forward_args=(case.lengths,), n_steps=512,
            method="gausslegendre")
    ref_np = ref.detach().numpy().reshape(ours.full.shape).astype(np.float64)
    relative_l1 = float(np.abs(ours.full - ref_np).sum() / np.abs(ref_np).sum())
    assert relative_l1 <= tolerance, relative_l1


def test_smoothgrad_default_sample_count_is_captums(repo: Path) -> None:
    """Captum's NoiseTunnel draws nt_samples copies by default; SmoothGrad's default is the same."""
    import inspect

    from captum.attr import NoiseTunnel

    captum_default = inspect.signature(NoiseTunnel.attribute).parameters["nt_samples"].default
    [ours] = Case(repo, "lstm_tokens_cls").run(MethodOptions("smoothgrad"))
    assert ours.n_steps == captum_default


@pytest.mark.parametrize("name", ["lstm_tokens_cls", "rnn_features_fc"])
def test_smoothgrad_default_noise_is_15_percent_of_the_input_range(repo: Path, name: str) -> None:
    """The README's default noise (15% of the input's range at the attribution layer), against
    Captum's NoiseTunnel at that level, with many samples: nearer to it than to half or double it."""
    from captum.attr import NoiseTunnel

    case = Case(repo, name)
    samples = 3000
    [ours] = case.run(MethodOptions("smoothgrad", n_samples=samples, seed=3),
                      settings=Settings(max_steps=samples, max_explain_work=10**8))
    module = case.identity_embedding() if case.tokens else case.module
    x = case.embeddings() if case.tokens else case.x
    spread = float(x.max() - x.min())

    def captum(fraction: float) -> np.ndarray:
        torch.manual_seed(5)
        ref = NoiseTunnel(Saliency(case.forward(module))).attribute(
            x.clone(), nt_type="smoothgrad", nt_samples=samples, nt_samples_batch_size=500,
            stdevs=fraction * spread, target=case.target, additional_forward_args=(case.lengths,))
        return ref.detach().numpy().reshape(ours.full.shape).astype(np.float64)

    def distance(ref: np.ndarray) -> float:
        return float(np.abs(ours.full - ref).sum() / np.abs(ref).sum())

    at, half, double = distance(captum(0.15)), distance(captum(0.075)), distance(captum(0.30))
    assert at < 0.05 and at < half / 2 and at < double / 2, (at, half, double)
