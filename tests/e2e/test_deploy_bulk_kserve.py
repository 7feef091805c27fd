"""The bulk RayJob component and the KServe runtime, validated offline.

Custom resources are checked against their CRDs' schemas, bundled in tests/e2e/crd_schemas
(scripts/bundle_crd_schema.py: KubeRay's RayJob ray.io/v1, KServe's ClusterServingRuntime
v1alpha1 and InferenceService v1beta1), made strict here: an unknown field is an error, as
with ``kubectl apply --validate=strict``. No network. Built-in kinds go through
kubernetes-validate as in test_deploy.py. Then the manifests are held to seqlens: the
commands parse with the real CLI, ports and paths agree with what the server serves.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
COMPONENT = K8S / "components" / "bulk-rayjob"
KSERVE = ROOT / "deploy" / "kserve"
SCHEMAS = Path(__file__).with_name("crd_schemas")
KUBERNETES_VERSIONS = ("1.30.0", "1.33.0")
UID = 10001
SERVER_SELECTOR = {"app.kubernetes.io/name": "seqlens", "app.kubernetes.io/component": "server"}
SCHEMA_FILES = {
    ("ray.io/v1", "RayJob"): "ray.io_v1_rayjob.json",
    ("serving.kserve.io/v1alpha1", "ClusterServingRuntime"): "serving.kserve.io_v1alpha1_clusterservingruntime.json",
    ("serving.kserve.io/v1beta1", "InferenceService"): "serving.kserve.io_v1beta1_inferenceservice.json",
}


# --------------------------------------------------------------------------- schemas


def _strict(node: Any) -> Any:
    """Unknown fields become errors wherever the CRD lists the fields of an object."""
    if isinstance(node, dict):
        out = {k: _strict(v) for k, v in node.items()}
        if ("properties" in out and "additionalProperties" not in out
                and not out.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


@functools.cache
def _validator(api_version: str, kind: str) -> Any:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((SCHEMAS / SCHEMA_FILES[(api_version, kind)]).read_text())
    crd = schema["x-seqlens-crd"]
    assert f"{crd['group']}/{crd['version']}" == api_version and crd["kind"] == kind
    return jsonschema.Draft7Validator(_strict(schema))


def crd_errors(obj: dict[str, Any]) -> list[str]:
    v = _validator(obj["apiVersion"], obj["kind"])
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message[:300]}" for e in v.iter_errors(obj)]


def _meta_ok(obj: dict[str, Any]) -> None:
    meta = obj["metadata"]
    assert set(meta) <= {"name", "namespace", "labels", "annotations"}, set(meta)
    assert meta["name"] and len(meta["name"]) <= 63


# --------------------------------------------------------------------------- rendering


def _kubectl() -> str:
    exe = shutil.which("kubectl")
    if exe is None:
        pytest.skip("kubectl not found on PATH: it renders the kustomize overlays (`kubectl kustomize`)")
    return exe


@functools.cache
def render_prod_with_bulk() -> tuple[dict[str, Any], ...]:
    """overlays/prod with the bulk component added to its components, as the component's comment says."""
    exe = _kubectl()
    with tempfile.TemporaryDirectory() as tmp:
        copy_dir = Path(tmp) / "k8s"
        shutil.copytree(K8S, copy_dir)
        kfile = copy_dir / "overlays" / "prod" / "kustomization.yaml"
        kust = yaml.safe_load(kfile.read_text())
        kust["components"] = [*kust.get("components", []), "../../components/bulk-rayjob"]
        kfile.write_text(yaml.safe_dump(kust))
        proc = subprocess.run([exe, "kustomize", str(kfile.parent)], check=False, capture_output=True, text=True,
                              timeout=120)
    assert proc.returncode == 0, proc.stderr
    return tuple(d for d in yaml.safe_load_all(proc.stdout) if d)


def rayjob() -> dict[str, Any]:
    (job,) = [o for o in render_prod_with_bulk() if o["kind"] == "RayJob"]
    return job


def ray_pods(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    spec = job["spec"]["rayClusterSpec"]
    pods = {"head": spec["headGroupSpec"]["template"]}
    for group in spec["workerGroupSpecs"]:
        pods[f"worker/{group['groupName']}"] = group["template"]
    pods["submitter"] = job["spec"]["submitterPodTemplate"]
    return pods


def kserve(name: str) -> dict[str, Any]:
    (obj,) = [d for d in yaml.safe_load_all((KSERVE / name).read_text()) if d]
    return obj


# --------------------------------------------------------------------------- validation


def test_strict_crd_validation_can_fail():
    job = copy.deepcopy(rayjob())
    assert not crd_errors(job)
    job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "x"
    job["spec"]["entrypoint"] = 3
    errors = "\n".join(crd_errors(job))
    assert "imagePullPolicyy" in errors and "entrypoint" in errors


@pytest.mark.parametrize("k8s_version", KUBERNETES_VERSIONS)
def test_prod_with_bulk_component_validates(k8s_version):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    errors = []
    for obj in render_prod_with_bulk():
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        if (obj["apiVersion"], obj["kind"]) in SCHEMA_FILES:
            _meta_ok(obj)
            errors += [f"{where}: {e}" for e in crd_errors(obj)]
        elif obj["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # test_deploy.py checks the ServiceMonitor structurally
        else:
            try:
                kubernetes_validate.validate(obj, k8s_version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                errors.append(f"{where}: {'.'.join(map(str, exc.path))}: {exc.message}")
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("name", ["clusterservingruntime.yaml", "inferenceservice.yaml"])
def test_kserve_manifests_validate(name):
    obj = kserve(name)
    _meta_ok(obj)
    assert not crd_errors(obj), crd_errors(obj)


# --------------------------------------------------------------------------- RayJob vs seqlens


def _bulk_args(entrypoint: str) -> argparse.Namespace:
    from seqlens.bulk.cli import add_parser

    parser = argparse.ArgumentParser(prog="seqlens")
    add_parser(parser.add_subparsers(dest="command", required=True))
    words = shlex.split(entrypoint)
    assert words[:2] == ["seqlens", "explain-dataset"], words
    return parser.parse_args(words[1:])


def test_rayjob_runs_explain_dataset_on_the_model_volume():
    objs = render_prod_with_bulk()
    job = rayjob()
    args = _bulk_args(job["spec"]["entrypoint"])
    server = next(o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == "seqlens")
    server_claims = [v["persistentVolumeClaim"]["claimName"] for v in server["spec"]["template"]["spec"]["volumes"]
                     if "persistentVolumeClaim" in v]
    pvcs = {o["metadata"]["name"]: o for o in objs if o["kind"] == "PersistentVolumeClaim"}
    namespace = server["metadata"]["namespace"]
    assert job["metadata"]["namespace"] == namespace and pvcs["seqlens-bulk-data"]["metadata"]["namespace"] == namespace
    assert "ReadWriteMany" in pvcs["seqlens-bulk-data"]["spec"]["accessModes"], "workers write their blocks"
    for role, template in ray_pods(job).items():
        if role == "submitter":
            continue
        spec = template["spec"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        (c,) = spec["containers"]
        mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
        repo = mounts[str(args.model_repository)]
        assert repo.get("readOnly") is True
        assert volumes[repo["name"]]["persistentVolumeClaim"]["claimName"] in server_claims, \
            f"{role}: the same model repository volume the server serves"
        for path in (args.input, args.output, args.html):
            owner = [m for p, m in mounts.items() if str(path).startswith(p.rstrip("/") + "/")]
            assert owner and not owner[0].get("readOnly"), f"{role}: {path} on a writable volume"
            assert volumes[owner[0]["name"]]["persistentVolumeClaim"]["claimName"] == "seqlens-bulk-data"
        assert "/tmp" in mounts and "emptyDir" in volumes[mounts["/tmp"]["name"]], "Ray writes /tmp/ray"
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        assert env.get("SEQLENS_TORCH_THREADS") == "1", "one actor per CPU, one torch thread per actor"
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]
    assert head["rayStartParams"].get("num-cpus") == "0", "actors run on workers; the head only drives"
    assert job["spec"]["shutdownAfterJobFinishes"] is True


def test_ray_pods_are_hardened_and_not_server_pods():
    job = rayjob()
    dockerfile = (COMPONENT / "Dockerfile.ray").read_text()
    pinned = dockerfile.split('"ray[data]==', 1)[1].split('"', 1)[0]
    assert job["spec"]["rayClusterSpec"]["rayVersion"] == pinned, "KubeRay's rayVersion = the image's Ray"
    images = set()
    for role, template in ray_pods(job).items():
        labels = template["metadata"]["labels"]
        assert not all(labels.get(k) == v for k, v in SERVER_SELECTOR.items()), f"{role} must not get server traffic"
        spec = template["spec"]
        assert spec.get("automountServiceAccountToken") is False, role
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] == UID, role
        assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault", role
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True, role
            assert sc["capabilities"]["drop"] == ["ALL"], role
            assert c["resources"]["limits"].get("memory"), role
            images.add(c["image"])
    assert len(images) == 1 and next(iter(images)).split("/")[-1].split(":")[0] == "seqlens-ray", images


def test_rayjob_image_has_the_ray_extra():
    import tomllib

    from packaging.requirements import Requirement
    from packaging.version import Version

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    (req,) = [Requirement(r) for r in extras["ray"]]
    assert req.name == "ray" and "data" in req.extras
    pinned = (COMPONENT / "Dockerfile.ray").read_text().split('"ray[data]==', 1)[1].split('"', 1)[0]
    assert req.specifier.contains(Version(pinned)), f"Dockerfile.ray pins {pinned}, outside seqlens[ray] {req}"


# --------------------------------------------------------------------------- KServe vs seqlens


def test_kserve_runtime_serves_oip_grpc_on_h2c():
    from seqlens.config import Settings

    rt = kserve("clusterservingruntime.yaml")
    spec = rt["spec"]
    assert spec["protocolVersions"] == ["v2", "grpc-v2"]
    formats = {f["name"] for f in spec["supportedModelFormats"]}
    assert formats == {"seqlens"}
    (c,) = spec["containers"]
    assert c["name"] == "kserve-container", "KServe merges the predictor into the container of this name"
    args = c["args"]
    assert args[0] == "serve"
    flags = dict(zip(args[1::2], args[2::2], strict=True))
    fields = Settings.model_fields
    for flag in flags:
        assert flag[2:].replace("-", "_") in fields, f"seqlens serve has no {flag}"
    assert flags["--model-repository"] == "/mnt/models", "KServe mounts storageUri at /mnt/models"
    assert flags["--host"] == "0.0.0.0"
    (port,) = c["ports"]
    assert port["name"] == "h2c" and port["containerPort"] == int(flags["--port"]), "gRPC on the h2c port"
    annotations = spec["annotations"]
    assert annotations["prometheus.kserve.io/port"] == flags["--metrics-port"]
    assert annotations["prometheus.kserve.io/path"] == "/metrics"
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == UID and sc["allowPrivilegeEscalation"] is False


def test_inference_service_uses_the_runtime():
    rt, isvc = kserve("clusterservingruntime.yaml"), kserve("inferenceservice.yaml")
    model = isvc["spec"]["predictor"]["model"]
    assert model["runtime"] == rt["metadata"]["name"]
    assert model["modelFormat"]["name"] in {f["name"] for f in rt["spec"]["supportedModelFormats"]}
    assert model["protocolVersion"] in rt["spec"]["protocolVersions"] and model["protocolVersion"] == "grpc-v2"
    assert model["storageUri"].startswith("pvc://seqlens-models"), "the server's model repository volume"


def test_serve_cli_accepts_runtime_args(monkeypatch):
    """The runtime's args through the real `seqlens serve` parser (unknown flags and bad values fail)."""
    import seqlens.cli

    seen: list[argparse.Namespace] = []
    monkeypatch.setattr(seqlens.cli, "_cmd_serve", lambda a: seen.append(a) or 0)
    args = kserve("clusterservingruntime.yaml")["spec"]["containers"][0]["args"]
    assert seqlens.cli.main(list(args)) == 0
    (parsed,) = seen
    assert (str(parsed.model_repository), parsed.port, parsed.metrics_port) == ("/mnt/models", 8081, 9090)
    with pytest.raises(SystemExit):
        seqlens.cli.main([*args, "--no-such-flag"])


def test_readme_sections_match_the_cli_and_files():
    import re

    text = (ROOT / "README.md").read_text()
    start = text.index("## Explaining whole datasets (Ray Data)")
    section = text[start:text.index("\n## ", text.index("## KServe", start) + 1)]
    commands = [c.replace("\\\n", " ") for c in re.findall(r"^seqlens explain-dataset (?:.*\\\n)*.*$", section,
                                                            re.MULTILINE)]
    assert commands
    for command in commands:
        args = _bulk_args(command)
        assert args.model and args.output
    for path in set(re.findall(r"\b(deploy/[\w./-]+[\w])", section)):
        assert (ROOT / path).exists(), f"README mentions {path}, which does not exist"
    assert "seqlens-ray=" in section and "components/bulk-rayjob" in section
