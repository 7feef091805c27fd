"""Issue #19: a new user's path through the CLI, the SDK and the OIP endpoint against a real
server: method flags reach the default method, blank input lines keep their place, inapplicable
options are refused, min_length is enforced and reported, and errors say what to do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from seqlens.export import export_model
from seqlens.families import build_model
from seqlens_client import Client, InvalidArgument, Method
from seqlens_client._proto.inference import grpc_service_pb2 as oip
from seqlens_client._proto.inference import grpc_service_pb2_grpc as oip_grpc
from seqlens_client._proto.seqlens.v1 import explain_pb2, service_pb2_grpc, types_pb2

from tests.conftest import ServerThread
from tests.factories import VOCAB, export_tiny, tiny_config

TOKEN = "ux-token"
TEXT = "the film was not very good , but the plot was witty !"
MIN_LENGTH = 4


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    root = tmp_path_factory.mktemp("ux-repo")
    export_tiny(root, "words", cell="lstm", task="classification", tokens=True)
    config = tiny_config(cell="gru", task="forecasting", tokens=False).model_copy(update={"min_length": MIN_LENGTH})
    export_model(build_model(config, None, seed=1).eval(), root / "series" / "1")
    with ServerThread(root, poll_interval_s=0, auth_token=TOKEN) as srv:
        yield srv


@pytest.fixture
def sdk(server: ServerThread) -> Iterator[Client]:
    with Client(server.target, token=TOKEN) as c:
        yield c


def cli(server: ServerThread | None, *args: str, token: str | None = TOKEN, address: str | None = None
        ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SEQLENS_TOKEN", "SEQLENS_ADDRESS")}
    conn = ["--target-address", address or (server.target if server else "")]
    conn += ["--token", token] if token is not None else []
    return subprocess.run([sys.executable, "-m", "seqlens_client.cli", *args, *conn], capture_output=True,
                          text=True, timeout=120, env=env, check=False)


def series(t: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(t, 3)).astype(np.float32)


# --- 1. method flags without --method -----------------------------------------------
def test_steps_without_method_go_to_the_default_method_and_are_checked(server: ServerThread, sdk: Client) -> None:
    r = cli(server, "explain", "words", TEXT, "--steps", "5000")
    assert r.returncode == 1 and "INVALID_ARGUMENT" in r.stderr and "max_steps" in r.stderr, r.stderr
    r = cli(server, "explain", "words", TEXT, "--steps", "5", "--quadrature", "riemann_left", "--json")
    assert r.returncode == 0, r.stderr
    ig = json.loads(r.stdout)["attributions"]["integrated_gradients"]
    want = sdk.explain("words", TEXT, Method("integrated_gradients", n_steps=5, quadrature="riemann_left"))
    assert ig["n_steps"] == 5
    np.testing.assert_allclose(ig["scores"], want.attributions["integrated_gradients"].scores, rtol=1e-5, atol=1e-7)
    r = cli(server, "explain", "words", TEXT, "--samples", "3")
    assert r.returncode == 2 and "--samples applies to gradient_shap" in r.stderr and "--method" in r.stderr
    r = cli(server, "explain", "words", TEXT, "--steps", "0")
    assert r.returncode == 2 and "at least 1" in r.stderr


def test_option_flags_reach_the_methods_that_take_them(server: ServerThread, sdk: Client, tmp_path: Path) -> None:
    """--steps with two methods goes to the one that integrates; every API option has a flag."""
    r = cli(server, "explain", "words", TEXT, "--method", "integrated_gradients", "--method", "saliency",
            "--steps", "16", "--signed", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)["attributions"]
    want = sdk.explain("words", TEXT, [Method("integrated_gradients", n_steps=16),
                                       Method("saliency", abs_saliency=False)])
    for name in ("integrated_gradients", "saliency"):
        np.testing.assert_allclose(out[name]["scores"], want.attributions[name].scores, rtol=1e-5, atol=1e-7)
    assert (np.asarray(out["saliency"]["scores"]) < 0).any()  # signed, not absolute

    x = series(10)
    np.save(tmp_path / "x.npy", x)
    cases = [
        (["--method", "occlusion", "--window", "3", "--stride", "2"], Method("occlusion", window=3, stride=2), None),
        (["--method", "smoothgrad", "--samples", "3", "--noise-stdev", "0.5", "--seed", "7"],
         Method("smoothgrad", n_samples=3, noise_stdev=0.5, seed=7), None),
        (["--method", "feature_ablation", "--ablation", "PER_FEATURE"],
         Method("feature_ablation", ablation="per_feature"), None),
        (["--adaptive", "--tolerance", "0.05", "--max-steps", "60"],
         Method("integrated_gradients", adaptive=True, tolerance=0.05, max_steps=60), None),
        (["--method", "saliency", "--baseline-features", str(tmp_path / "x.npy")], Method("saliency"), x * 0.5),
    ]
    for flags, method, custom in cases:
        if custom is not None:
            np.save(tmp_path / "x.npy", custom)
            flags = [*flags[:-1], str(tmp_path / "x.npy")]
            np.save(tmp_path / "in.npy", x)
            src = tmp_path / "in.npy"
        else:
            src = tmp_path / "x.npy"
        r = cli(server, "explain", "series", "--features", str(src), *flags, "--json")
        assert r.returncode == 0, (flags, r.stderr)
        got = json.loads(r.stdout)["attributions"][method.name]
        want = sdk.explain("series", x, method, baseline=custom).attributions[method.name]
        np.testing.assert_allclose(got["feature_scores"], want.feature_scores, rtol=1e-5, atol=1e-7)
        np.save(tmp_path / "x.npy", x)
    r = cli(server, "explain", "words", TEXT, "--method", "saliency", "--baseline-ids", " ".join(["0"] * 13),
            "--json")
    assert r.returncode == 0, r.stderr


# --- 2. blank lines in bulk input ---------------------------------------------------
def test_a_blank_line_is_an_error_row_at_its_own_index(server: ServerThread, sdk: Client, tmp_path: Path) -> None:
    lines = ["the film was good", "", "a dull plot", "   ", "witty"]
    src = tmp_path / "in.txt"
    src.write_text("\n".join(lines) + "\n")
    r = cli(server, "explain", "words", "--input-file", str(src), "--method", "saliency", "--quiet")
    assert r.returncode == 1 and "2 of 5 inputs failed" in r.stderr
    rows = {json.loads(ln)["index"]: json.loads(ln) for ln in r.stdout.splitlines()}
    assert sorted(rows) == [0, 1, 2, 3, 4] and all(rows[i]["line"] == i + 1 for i in rows)
    assert rows[1]["error"]["code"] == rows[3]["error"]["code"] == "INVALID_ARGUMENT"
    assert rows[2]["text"] == "a dull plot" and rows[4]["text"] == "witty"
    sdk_rows = dict(sdk.explain_iter("words", lines, "saliency"))
    assert [i for i, v in sorted(sdk_rows.items()) if isinstance(v, InvalidArgument)] == [1, 3]
    r = cli(server, "predict", "words", "--input-file", str(src))
    assert r.returncode == 2 and f"{src}:2: blank line" in r.stderr


# --- 4. inapplicable options on the server ------------------------------------------
def test_the_server_refuses_an_option_the_method_does_not_take(server: ServerThread) -> None:
    with grpc.insecure_channel(server.target) as channel:
        stub = service_pb2_grpc.SequenceExplainerServiceStub(channel)
        req = explain_pb2.ExplainRequest(model_name="words", input=types_pb2.SequenceInput(text=TEXT),
                                         methods=[explain_pb2.AttributionMethod(name="saliency", window=3)])
        with pytest.raises(grpc.RpcError) as err:
            stub.Explain(req, metadata=[("authorization", f"Bearer {TOKEN}")])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "saliency does not take window" in (err.value.details() or "")


# --- 6. min_length ------------------------------------------------------------------
def test_min_length_is_enforced_and_reported(server: ServerThread, sdk: Client) -> None:
    assert sdk.get_model("series").limits.min_length == MIN_LENGTH
    assert sdk.get_model("words").limits.min_length == 1
    with pytest.raises(InvalidArgument, match=f"inputs\\[0\\] has 3 timesteps; model 'series' needs at least "
                                              f"min_length={MIN_LENGTH}"):
        sdk.predict("series", series(3))
    with pytest.raises(InvalidArgument, match=f"min_length={MIN_LENGTH}"):
        sdk.explain("series", series(3), "saliency")
    assert sdk.predict("series", series(MIN_LENGTH))[0].forecast is not None
    with grpc.insecure_channel(server.target) as channel:
        stub = oip_grpc.GRPCInferenceServiceStub(channel)
        x = series(3)[None]
        req = oip.ModelInferRequest(model_name="series", inputs=[oip.ModelInferRequest.InferInputTensor(
            name="inputs", datatype="FP32", shape=list(x.shape))], raw_input_contents=[x.tobytes()])
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(req, metadata=[("authorization", f"Bearer {TOKEN}")])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"min_length={MIN_LENGTH}" in (err.value.details() or "")
    r = cli(server, "models", "series")
    assert f"input length: {MIN_LENGTH} to 64 timesteps" in r.stdout


def test_demo_forecasters_state_their_minimum(demo_repository: Path) -> None:
    from seqlens.schema import load_config

    for name in ("airline", "sunspots"):
        config = load_config(demo_repository / name / "1" / "model.yaml")
        assert config.min_length == 24 and "at least 24" in config.description


# --- 9. OIP errors name OIP fields --------------------------------------------------
def test_oip_errors_name_the_request_tensor(server: ServerThread) -> None:
    meta = [("authorization", f"Bearer {TOKEN}")]
    with grpc.insecure_channel(server.target) as channel:
        stub = oip_grpc.GRPCInferenceServiceStub(channel)
        ids = np.array([[2, 3, len(VOCAB) + 5]], dtype=np.int32)  # INT32 ids are accepted too
        req = oip.ModelInferRequest(model_name="words", inputs=[oip.ModelInferRequest.InferInputTensor(
            name="inputs", datatype="INT32", shape=list(ids.shape))], raw_input_contents=[ids.tobytes()])
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(req, metadata=meta)
        details = err.value.details() or ""
        assert "ModelInferRequest.inputs[0] ('inputs') row 0, timestep 2" in details and "token_ids" not in details
        ok = ids.copy()
        ok[0, 2] = 4
        req.raw_input_contents[0] = ok.tobytes()
        assert stub.ModelInfer(req, metadata=meta).outputs[0].shape == [1, 3]
        x = series(5)[None].copy()
        x[0, 1, 2] = np.nan
        req = oip.ModelInferRequest(model_name="series", inputs=[oip.ModelInferRequest.InferInputTensor(
            name="inputs", datatype="FP32", shape=list(x.shape))], raw_input_contents=[x.tobytes()])
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(req, metadata=meta)
        details = err.value.details() or ""
        assert "ModelInferRequest.inputs[0] ('inputs') row 0 has NaN" in details and "features" not in details


# --- 10. errors that point to the fix -----------------------------------------------
def test_errors_name_the_flag_that_fixes_them(server: ServerThread, tmp_path: Path) -> None:
    r = cli(server, "models", token=None)
    assert r.returncode == 1 and "UNAUTHENTICATED" in r.stderr
    assert all(s in r.stderr for s in ("--token", "--token-file", "SEQLENS_TOKEN")), r.stderr
    r = cli(server, "models", token=f"Bearer {TOKEN}")
    assert r.returncode == 2 and "added for you" in r.stderr
    r = cli(None, "models", address="127.0.0.1:1", token=None)
    assert r.returncode == 1 and "UNAVAILABLE" in r.stderr and "--target-address" in r.stderr, r.stderr
    r = cli(server, "explain", "words", TEXT, "--method", "occlusion")
    assert r.returncode == 2 and "--window" in r.stderr


def test_a_csv_with_a_date_column(server: ServerThread, sdk: Client, tmp_path: Path) -> None:
    x = series(8)
    body = "\n".join(f"1949-{i + 1:02d}," + ",".join(f"{v:.6f}" for v in row) for i, row in enumerate(x))
    named = tmp_path / "named.csv"
    named.write_text("month,f0,f1,f2\n" + body)  # the model's feature names: those columns are read
    want = sdk.predict("series", np.round(x, 6))[0].forecast
    r = cli(server, "predict", "series", "--features", str(named), "--json")
    assert r.returncode == 0, r.stderr
    np.testing.assert_allclose(json.loads(r.stdout)["forecast"], want, rtol=1e-5)  # type: ignore[arg-type]
    other = tmp_path / "other.csv"
    other.write_text("month,a,b,c\n" + body)
    r = cli(server, "predict", "series", "--features", str(other))
    assert r.returncode == 2 and "only numeric feature columns are read" in r.stderr and "--columns" in r.stderr
    assert "'month'" in r.stderr and "numeric here: a, b, c" in r.stderr
    r = cli(server, "predict", "series", "--features", str(other), "--columns", "a,b,c", "--json")
    assert r.returncode == 0, r.stderr
    np.testing.assert_allclose(json.loads(r.stdout)["forecast"], want, rtol=1e-5)  # type: ignore[arg-type]


def test_forecast_text_names_the_horizon_step_and_report_hints_fit_the_cli(server: ServerThread, sdk: Client,
                                                                          tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", series(6))
    r = cli(server, "explain", "series", "--features", str(tmp_path / "x.npy"), "--horizon-step", "2")
    assert r.returncode == 0, r.stderr
    assert "target: horizon step 2" in r.stdout and "None" not in r.stdout
    page = sdk.explain("words", TEXT, "saliency").to_html()
    assert "(CLI: --faithfulness)" in page and "faithfulness=True" in page
