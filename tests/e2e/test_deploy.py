"""Kubernetes manifests (deploy/k8s): rendered with `kubectl kustomize`, validated strictly, and
held to the server's contract.

* Every built-in kind is validated with kubernetes-validate in strict mode (unknown fields are
  errors) against pinned Kubernetes versions: the oldest we support (1.30: native gRPC probes
  GA, preStop `sleep` on by default) and a recent one.
* The ServiceMonitor is a Prometheus-operator CRD whose schema kubernetes-validate does not ship;
  it is checked structurally here (known fields only, and that it really scrapes the metrics
  port of the server pods).
* Rendered objects are checked against the server: probes on a plaintext gRPC port with the
  health names the server serves, hardened security contexts, ports equal to the server defaults
  (50051 gRPC, 9090 metrics), a termination grace longer than the drain, SEQLENS_* variables
  the server reads, and the flags `seqlens serve` accepts.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
DOCKERFILE = ROOT / "Dockerfile"
README = ROOT / "README.md"

KUBERNETES_VERSIONS = ("1.30.0", "1.33.0")
GRPC_PORT, METRICS_PORT = 50051, 9090
DEFAULT_DRAIN_GRACE_S = 20.0
UID = 10001
LIVENESS_SERVICE = "liveness"  # health name that is SERVING while the process runs
SECRET_MODE = 0o440
PSS_RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
SERVER_SELECTOR = {"app.kubernetes.io/name": "seqlens", "app.kubernetes.io/component": "server"}

VARIANTS = ("base", "overlays/dev", "overlays/prod", "prod+mtls")


# --------------------------------------------------------------------------- rendering


def _kubectl() -> str:
    exe = shutil.which("kubectl")
    if exe is None:
        pytest.skip(
            "kubectl not found on PATH: it renders the kustomize overlays (`kubectl kustomize`); "
            "install kubectl >= 1.27 to run the deployment tests"
        )
    return exe


@functools.cache
def _render_dir(path: str) -> tuple[dict[str, Any], ...]:
    proc = subprocess.run(
        [_kubectl(), "kustomize", path], check=False, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, f"kubectl kustomize {path} failed:\n{proc.stderr}"
    return tuple(d for d in yaml.safe_load_all(proc.stdout) if d)


@functools.cache
def render(variant: str) -> tuple[dict[str, Any], ...]:
    if variant != "prod+mtls":
        return _render_dir(str(K8S / variant))
    # prod with the optional mutual-TLS component, as the prod kustomization's comment suggests.
    # kustomize refuses absolute resource paths, so render a copy of deploy/k8s with one more
    # overlay in it.
    _kubectl()
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "k8s"
        shutil.copytree(K8S, copy)
        overlay = copy / "overlays" / "prod-mtls"
        overlay.mkdir()
        (overlay / "kustomization.yaml").write_text(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
            "resources: [../prod]\ncomponents: [../../components/mtls]\n"
        )
        return _render_dir(str(overlay))


def tool_manifests() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((K8S / "tools").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def find(objs, kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(objs, kind: str, name: str) -> dict[str, Any]:
    found = find(objs, kind, name)
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def server(objs) -> dict[str, Any]:
    return one(objs, "Deployment", "seqlens")


def server_container(objs) -> dict[str, Any]:
    containers = server(objs)["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "seqlens")


def pod_specs(objs) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for o in objs:
        name = f"{o['kind']}/{o['metadata']['name']}"
        if o["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
            out.append((name, o["spec"]["template"]["spec"]))
        elif o["kind"] == "CronJob":
            out.append((name, o["spec"]["jobTemplate"]["spec"]["template"]["spec"]))
        elif o["kind"] == "Pod":
            out.append((name, o["spec"]))
    return out


def env_of(objs, container: dict[str, Any]) -> dict[str, str | None]:
    """The container's environment: ConfigMaps from envFrom, then env (valueFrom -> None)."""
    env: dict[str, str | None] = {}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef")
        if ref:
            cm = one(objs, "ConfigMap", ref["name"])
            env.update({source.get("prefix", "") + k: v for k, v in cm.get("data", {}).items()})
    for item in container.get("env", []):
        env[item["name"]] = item.get("value")
    return env


def container_port(container: dict[str, Any], ref: int | str) -> int:
    if isinstance(ref, int):
        assert any(p["containerPort"] == ref for p in container.get("ports", [])), f"port {ref} not declared"
        return ref
    return next(p["containerPort"] for p in container["ports"] if p.get("name") == ref)


def tls_on(env) -> bool:
    return bool(env.get("SEQLENS_TLS_CERT"))


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# --------------------------------------------------------------------------- schema validation


@pytest.mark.parametrize("k8s_version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("variant", [*VARIANTS, "tools"])
def test_manifests_validate_strictly(variant, k8s_version):
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate (a test dependency) is not installed"
    )
    objs = tool_manifests() if variant == "tools" else render(variant)
    assert objs, f"{variant} renders nothing"
    errors = []
    for obj in objs:
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # CRD without a shipped schema: test_service_monitor_scrapes_metrics_port
        try:
            kubernetes_validate.validate(obj, k8s_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(
                f"{obj['kind']}/{obj['metadata']['name']}: {'.'.join(map(str, exc.path))}: {exc.message}"
            )
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message}")
    assert not errors, f"{variant} against Kubernetes {k8s_version}:\n" + "\n".join(errors)


@pytest.mark.parametrize("variant", VARIANTS)
def test_expected_objects(variant):
    kinds = {(o["kind"], o["metadata"]["name"]) for o in render(variant)}
    common = {
        ("Deployment", "seqlens"),
        ("Service", "seqlens"),
        ("Service", "seqlens-headless"),
        ("PodDisruptionBudget", "seqlens"),
        ("NetworkPolicy", "seqlens"),
        ("ServiceAccount", "seqlens"),
    }
    assert common <= kinds, common - kinds
    assert len(find(render(variant), "ConfigMap")) == 1
    with_volume = {
        ("HorizontalPodAutoscaler", "seqlens"),
        ("PersistentVolumeClaim", "seqlens-models"),
        ("Job", "seqlens-seed-models"),
    }
    if variant == "overlays/dev":
        assert not with_volume & kinds, (
            "dev serves the image's demo models with one replica: "
            f"no HPA, volume or seed Job ({with_volume & kinds})"
        )
    else:
        assert with_volume <= kinds, with_volume - kinds
    assert (("ServiceMonitor", "seqlens") in kinds) == variant.startswith(("overlays/prod", "prod")), kinds


@pytest.mark.parametrize("variant", ["overlays/dev", "overlays/prod"])
def test_overlays_set_namespace_with_restricted_pod_security(variant):
    objs = render(variant)
    namespaces = find(objs, "Namespace")
    assert len(namespaces) == 1
    ns = namespaces[0]["metadata"]
    assert ns["labels"].get("pod-security.kubernetes.io/enforce") == "restricted"
    for o in objs:
        if o["kind"] != "Namespace":
            assert o["metadata"].get("namespace") == ns["name"], f"{o['kind']}/{o['metadata']['name']}"


# --------------------------------------------------------------------------- probes and ports


@pytest.mark.parametrize("variant", VARIANTS)
def test_probes_are_native_grpc_on_a_plaintext_port(variant):
    objs = render(variant)
    c = server_container(objs)
    env = env_of(objs, c)
    # The kubelet's gRPC probe speaks plaintext only: with TLS on the API port, probes must use
    # the health-only plaintext port.
    expected = int(env["SEQLENS_HEALTH_PORT"]) if tls_on(env) else GRPC_PORT
    if tls_on(env):
        assert expected != GRPC_PORT, "SEQLENS_HEALTH_PORT must differ from the TLS port"
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = c.get(kind)
        assert probe, f"{kind} missing"
        assert set(probe) & {"grpc", "exec", "httpGet", "tcpSocket"} == {"grpc"}, f"{kind}: native gRPC probe"
        assert probe["grpc"]["port"] == expected, (
            f"{kind} probes {probe['grpc']['port']}, expected {expected}"
        )
        container_port(c, expected)
    assert c["readinessProbe"]["grpc"].get("service", "") == "", "readiness uses the overall health ('')"
    for kind in ("startupProbe", "livenessProbe"):
        assert c[kind]["grpc"].get("service") == LIVENESS_SERVICE, (
            f"{kind}: use the '{LIVENESS_SERVICE}' health name, so an empty repository is not a restart loop"
        )
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120, "allow minutes for loading models"


@pytest.mark.parametrize("variant", VARIANTS)
def test_ports_agree_with_server_defaults(variant):
    objs = render(variant)
    c = server_container(objs)
    env = env_of(objs, c)
    assert int(env.get("SEQLENS_PORT") or GRPC_PORT) == GRPC_PORT
    assert int(env.get("SEQLENS_METRICS_PORT") or METRICS_PORT) == METRICS_PORT
    assert env.get("SEQLENS_HOST") == "0.0.0.0", (
        "the server defaults to 127.0.0.1: bind all interfaces in a pod"
    )
    assert container_port(c, "grpc") == GRPC_PORT and container_port(c, "metrics") == METRICS_PORT
    svc = one(objs, "Service", "seqlens")
    ports = {p["name"]: p for p in svc["spec"]["ports"]}
    assert ports["grpc"]["port"] == GRPC_PORT and container_port(c, ports["grpc"]["targetPort"]) == GRPC_PORT
    assert ports["grpc"].get("appProtocol") == "grpc"
    assert ports["metrics"]["port"] == METRICS_PORT
    assert container_port(c, ports["metrics"]["targetPort"]) == METRICS_PORT
    annotations = server(objs)["spec"]["template"]["metadata"].get("annotations", {})
    assert annotations.get("prometheus.io/port", str(METRICS_PORT)) == str(METRICS_PORT)
    exposed = re.findall(r"^EXPOSE\s+(.+)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert {str(GRPC_PORT), str(METRICS_PORT)} <= set(" ".join(exposed).split()), "Dockerfile EXPOSE"


@pytest.mark.parametrize("variant", VARIANTS)
def test_headless_service_for_client_side_balancing(variant):
    objs = render(variant)
    svc = one(objs, "Service", "seqlens-headless")
    assert svc["spec"].get("clusterIP") == "None"
    assert not svc["spec"].get("publishNotReadyAddresses"), "only ready pods in DNS"
    ports = svc["spec"]["ports"]
    assert [(p["name"], p["port"], p.get("appProtocol")) for p in ports] == [("grpc", GRPC_PORT, "grpc")], (
        "gRPC only: a metrics port here would make the ServiceMonitor scrape every pod twice"
    )


@pytest.mark.parametrize("variant", VARIANTS)
def test_selectors_pick_exactly_the_server_pods(variant):
    objs = render(variant)
    pod_labels = server(objs)["spec"]["template"]["metadata"]["labels"]
    assert server(objs)["spec"]["selector"]["matchLabels"] == SERVER_SELECTOR
    selectors = {f"Service/{s['metadata']['name']}": s["spec"]["selector"] for s in find(objs, "Service")}
    selectors["PodDisruptionBudget"] = one(objs, "PodDisruptionBudget", "seqlens")["spec"]["selector"][
        "matchLabels"
    ]
    selectors["NetworkPolicy"] = one(objs, "NetworkPolicy", "seqlens")["spec"]["podSelector"]["matchLabels"]
    others = [(n, spec) for n, spec in pod_specs(objs) if n != "Deployment/seqlens"]
    other_labels = {
        o["metadata"]["name"]: o["spec"]["template"]["metadata"]["labels"] for o in objs if o["kind"] == "Job"
    }
    for what, sel in selectors.items():
        assert sel and selects(sel, pod_labels), f"{what} does not select the server pods"
        for name, labels in other_labels.items():
            assert not selects(sel, labels), f"{what} also selects the pods of Job/{name}"
    assert len(others) == len(other_labels)


# --------------------------------------------------------------------------- security


def _effective(pod_sc: dict[str, Any], c_sc: dict[str, Any], key: str) -> Any:
    return c_sc[key] if key in c_sc else pod_sc.get(key)


@pytest.mark.parametrize("variant", [*VARIANTS, "tools"])
def test_pods_are_hardened(variant):
    objs = tool_manifests() if variant == "tools" else render(variant)
    specs = pod_specs(objs)
    assert specs
    for name, spec in specs:
        pod_sc = spec.get("securityContext", {})
        assert not (spec.get("hostNetwork") or spec.get("hostPID") or spec.get("hostIPC")), name
        assert spec.get("automountServiceAccountToken") is False, f"{name}: no API token needed"
        assert spec.get("enableServiceLinks") is False, (
            f"{name}: service links inject SEQLENS_PORT=tcp://... and clash with the server's settings"
        )
        for vol in spec.get("volumes", []):
            kinds = set(vol) - {"name"}
            assert kinds <= PSS_RESTRICTED_VOLUMES, f"{name}: volume {vol['name']} ({kinds}) not allowed"
        for c in spec.get("initContainers", []) + spec["containers"]:
            sc = c.get("securityContext", {})
            where = f"{name} container {c['name']}"
            assert _effective(pod_sc, sc, "runAsNonRoot") is True, where
            assert _effective(pod_sc, sc, "runAsUser") == UID, where
            assert (_effective(pod_sc, sc, "seccompProfile") or {}).get("type") == "RuntimeDefault", where
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("readOnlyRootFilesystem") is True, where
            assert not sc.get("privileged"), where
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not sc.get("capabilities", {}).get("add"), where
            assert c.get("resources", {}).get("limits", {}).get("memory"), f"{where}: memory limit"
            mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{where}: HOME, TMPDIR and the cache live on a writable /tmp"
            tmp_vol = next(v for v in spec["volumes"] if v["name"] == mounts["/tmp"]["name"])
            assert "emptyDir" in tmp_vol, where
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            assert env.get("HOME") == "/tmp" and env.get("TMPDIR") == "/tmp", where


@pytest.mark.parametrize("variant", VARIANTS)
def test_resources_and_graceful_shutdown(variant):
    objs = render(variant)
    c = server_container(objs)
    res = c["resources"]
    for key in ("cpu", "memory"):
        assert res["requests"][key] and res["limits"][key], key
    env = env_of(objs, c)
    drain = float(env.get("SEQLENS_DRAIN_GRACE_S") or DEFAULT_DRAIN_GRACE_S)
    pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    grace = server(objs)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > pre_stop + drain, (
        f"terminationGracePeriodSeconds={grace} must exceed preStop {pre_stop}s + drain {drain}s, "
        "or the kubelet SIGKILLs a draining server"
    )


# --------------------------------------------------------------------------- scaling


@pytest.mark.parametrize("variant", VARIANTS)
def test_autoscaling_and_disruption_budget(variant):
    objs = render(variant)
    deploy = server(objs)
    hpas = find(objs, "HorizontalPodAutoscaler")
    pdb = one(objs, "PodDisruptionBudget", "seqlens")
    if variant == "overlays/dev":
        assert not hpas and deploy["spec"].get("replicas") == 1
        min_replicas = 1
    else:
        (hpa,) = hpas
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": "seqlens",
        }
        metrics = hpa["spec"]["metrics"]
        assert any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in metrics)
        min_replicas = hpa["spec"]["minReplicas"]
        assert 2 <= min_replicas <= hpa["spec"]["maxReplicas"]
        assert "replicas" not in deploy["spec"], "the HPA owns replicas; re-applying must not reset them"
    # A drain must be able to evict one pod even at the smallest size.
    assert "maxUnavailable" in pdb["spec"] or pdb["spec"]["minAvailable"] < min_replicas


@pytest.mark.parametrize("variant", VARIANTS)
def test_network_policy_opens_grpc_and_metrics_only(variant):
    objs = render(variant)
    np = one(objs, "NetworkPolicy", "seqlens")
    assert "Ingress" in np["spec"]["policyTypes"]
    opened = {p["port"] for rule in np["spec"]["ingress"] for p in rule.get("ports", [])}
    assert all(rule.get("ports") for rule in np["spec"]["ingress"]), "every ingress rule names its ports"
    assert opened == {GRPC_PORT, METRICS_PORT}, opened


# --------------------------------------------------------------------------- models and secrets


@pytest.mark.parametrize("variant", VARIANTS)
def test_model_repository_source(variant):
    objs = render(variant)
    c = server_container(objs)
    env = env_of(objs, c)
    repo = env.get("SEQLENS_MODEL_REPOSITORY")
    spec = server(objs)["spec"]["template"]["spec"]
    if variant == "overlays/dev":
        demo = re.search(r"build-demo --output (\S+)", DOCKERFILE.read_text())
        assert demo and repo == demo.group(1), "dev serves the demo repository baked into the image"
        assert not any("persistentVolumeClaim" in v for v in spec.get("volumes", []))
        return
    assert repo == "/models"
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == repo)
    assert mount.get("readOnly") is True and "subPath" not in mount, (
        "read-only, whole volume (new versions appear)"
    )
    claim = next(v for v in spec["volumes"] if v["name"] == mount["name"])["persistentVolumeClaim"][
        "claimName"
    ]
    pvc = one(objs, "PersistentVolumeClaim", claim)
    assert "ReadWriteMany" in pvc["spec"]["accessModes"], "every replica mounts the repository"
    # The seed Job fills the same claim, read-write, from the demo repository in the image.
    job = one(objs, "Job", "seqlens-seed-models")
    job_spec = job["spec"]["template"]["spec"]
    job_claims = [
        v["persistentVolumeClaim"]["claimName"] for v in job_spec["volumes"] if "persistentVolumeClaim" in v
    ]
    assert job_claims == [claim]
    (seed,) = job_spec["containers"]
    assert seed["image"] == c["image"], "seed with the same image that serves"
    script = " ".join(seed.get("command", []) + seed.get("args", []))
    assert "/opt/seqlens/demo" in script and "mv -T" in script and "seqlens check" in script
    assert not any(m.get("readOnly") for m in seed["volumeMounts"] if m["mountPath"] == "/models")
    # The loader tool mounts that claim too, with the prod image.
    (loader,) = [o for o in tool_manifests() if o["kind"] == "Pod"]
    assert [
        v["persistentVolumeClaim"]["claimName"]
        for v in loader["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    ] == [claim]
    if variant == "overlays/prod":
        assert loader["spec"]["containers"][0]["image"] == c["image"], "tools/model-loader.yaml image"


def _secret_file_wiring(objs, c, spec, path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The mount and secret volume that provide the file at `path`."""
    mounts = [m for m in c["volumeMounts"] if path.startswith(m["mountPath"].rstrip("/") + "/")]
    assert len(mounts) == 1, f"{path} is not inside exactly one volume mount"
    mount = mounts[0]
    assert "subPath" not in mount, f"{path}: a subPath mount never sees Secret updates (rotation)"
    assert mount.get("readOnly") is True
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    assert "secret" in volume, f"{path} must come from a Secret"
    secret = volume["secret"]
    rel = path[len(mount["mountPath"].rstrip("/")) + 1 :]
    if "items" in secret:
        assert rel in {i["path"] for i in secret["items"]}, f"{rel} not projected from the Secret"
    assert secret.get("defaultMode") == SECRET_MODE, "0440: readable by the fsGroup, nobody else"
    return mount, secret


@pytest.mark.parametrize("variant", ["overlays/prod", "prod+mtls"])
def test_prod_tls_and_tokens_from_secrets(variant):
    objs = render(variant)
    c = server_container(objs)
    spec = server(objs)["spec"]["template"]["spec"]
    env = env_of(objs, c)
    assert spec["securityContext"].get("fsGroup") == UID, "Secret files are group-readable by the fsGroup"
    wanted = {
        "SEQLENS_TLS_CERT": "seqlens-tls",
        "SEQLENS_TLS_KEY": "seqlens-tls",
        "SEQLENS_AUTH_TOKEN_FILE": "seqlens-auth-tokens",
    }
    if variant == "prod+mtls":
        wanted["SEQLENS_TLS_CLIENT_CA"] = "seqlens-tls"
    else:
        assert "SEQLENS_TLS_CLIENT_CA" not in env
    for var, secret_name in wanted.items():
        assert env.get(var), f"{var} not set"
        _, secret = _secret_file_wiring(objs, c, spec, env[var])
        assert secret["secretName"] == secret_name, var
    assert not any(n in env for n in ("SEQLENS_AUTH_TOKEN",)), "tokens only from files (no env literal)"
    assert not find(objs, "Secret"), "Secrets are created out of band, never committed"


@pytest.mark.parametrize("variant", ["base", "overlays/dev"])
def test_base_and_dev_have_no_secrets_wired(variant):
    env = env_of(render(variant), server_container(render(variant)))
    assert not {k for k in env if k.startswith(("SEQLENS_TLS", "SEQLENS_AUTH"))}


def test_service_monitor_scrapes_metrics_port():
    """Structural check of the CRD: kubernetes-validate has no schema for monitoring.coreos.com."""
    objs = render("overlays/prod")
    sm = one(objs, "ServiceMonitor", "seqlens")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(sm) <= {"apiVersion", "kind", "metadata", "spec"}
    spec = sm["spec"]
    assert set(spec) <= {
        "selector",
        "endpoints",
        "namespaceSelector",
        "jobLabel",
        "targetLabels",
        "podTargetLabels",
        "sampleLimit",
        "targetLimit",
        "attachMetadata",
    }, set(spec)
    assert set(spec["selector"]) <= {"matchLabels", "matchExpressions"}
    ns = sm["metadata"]["namespace"]
    if "namespaceSelector" in spec:
        assert ns in spec["namespaceSelector"].get("matchNames", [])
    services = [
        s
        for s in find(objs, "Service")
        if s["metadata"].get("namespace") == ns
        and selects(spec["selector"]["matchLabels"], s["metadata"].get("labels", {}))
    ]
    assert [s["metadata"]["name"] for s in services] == ["seqlens"], (
        "exactly one Service, else double scrapes"
    )
    svc_ports = {p["name"]: p for p in services[0]["spec"]["ports"]}
    c = server_container(objs)
    env = env_of(objs, c)
    assert spec["endpoints"], "no endpoints"
    for ep in spec["endpoints"]:
        assert set(ep) <= {
            "port",
            "path",
            "scheme",
            "interval",
            "scrapeTimeout",
            "honorLabels",
            "relabelings",
            "metricRelabelings",
            "tlsConfig",
            "bearerTokenSecret",
            "authorization",
        }, set(ep)
        assert ep["port"] in svc_ports, (
            f"ServiceMonitor port {ep['port']!r} is not a port name of the Service"
        )
        target = container_port(c, svc_ports[ep["port"]]["targetPort"])
        assert target == METRICS_PORT == int(env.get("SEQLENS_METRICS_PORT") or METRICS_PORT)
        assert ep.get("path", "/metrics") == "/metrics" and ep.get("scheme", "http") == "http"
        assert re.fullmatch(r"\d+s", ep.get("interval", "30s")) and re.fullmatch(
            r"\d+s", ep.get("scrapeTimeout", "10s")
        )
    np = one(objs, "NetworkPolicy", "seqlens")
    assert any(
        METRICS_PORT in {p["port"] for p in rule["ports"]} and rule.get("from")
        for rule in np["spec"]["ingress"]
    )


# --------------------------------------------------------------------------- against the server


def _deploy_env_names() -> set[str]:
    names: set[str] = set()
    for variant in VARIANTS:
        objs = render(variant)
        for _, spec in pod_specs(objs):
            for c in spec["containers"]:
                names |= set(env_of(objs, c))
    names |= set(re.findall(r"\b(SEQLENS_[A-Z0-9_]+)=", DOCKERFILE.read_text()))
    return {n for n in names if n.startswith("SEQLENS_")}


def _settings_class():
    try:
        from seqlens.config import Settings
    except ImportError as exc:  # the server package is not installed in this environment
        pytest.skip(f"seqlens server not importable ({exc}); install it to check the deployment against it")
    return Settings


def test_server_reads_every_deployed_setting():
    """Every SEQLENS_* variable the image or manifests set is a server setting, or read by name."""
    settings = _settings_class()
    prefix = settings.model_config.get("env_prefix", "")
    fields = {f"{prefix}{name}".upper() for name in settings.model_fields}
    source = "\n".join(p.read_text() for p in (ROOT / "service" / "seqlens").rglob("*.py"))
    unknown = sorted(n for n in _deploy_env_names() if n not in fields and n not in source)
    assert not unknown, f"set by Dockerfile/deploy but not read by the server: {unknown}"


def test_serve_cli_accepts_the_flags_and_commands_used():
    _settings_class()
    code = "import sys; from seqlens.cli import main; sys.argv = ['seqlens', *sys.argv[1:]]; sys.exit(main())"
    help_texts = {}
    for cmd in ("serve", "build-demo", "check"):
        proc = subprocess.run(
            [sys.executable, "-c", code, cmd, "--help"],
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
            env={
                **os.environ,
                "PYTHONPATH": os.pathsep.join([str(ROOT / "service"), str(ROOT / "clients" / "python")]),
            },
        )
        assert proc.returncode == 0, f"seqlens {cmd} --help failed:\n{proc.stderr[-2000:]}"
        help_texts[cmd] = proc.stdout
    for flag in (
        "--model-repository",
        "--host",
        "--port",
        "--metrics-port",
        "--tls-cert",
        "--tls-key",
        "--tls-client-ca",
        "--auth-token-file",
    ):
        assert flag in help_texts["serve"], flag
    assert "--output" in help_texts["build-demo"]


def test_probe_health_names_match_the_server(tmp_path):
    """Start the real server on an empty repository (a fresh volume before the seed Job ran): the
    startup/liveness health name must be SERVING, or the kubelet restarts a healthy server in a
    loop; the readiness name must be NOT_SERVING, as no model is READY to take traffic."""
    settings_cls = _settings_class()
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from seqlens.grpc.server import SeqlensServer

    c = server_container(render("overlays/dev"))
    live_name = c["livenessProbe"]["grpc"].get("service", "")
    ready_name = c["readinessProbe"]["grpc"].get("service", "")
    assert c["startupProbe"]["grpc"].get("service", "") == live_name

    async def scenario() -> dict[str, int]:
        settings = settings_cls(host="127.0.0.1", port=0, metrics_port=-1, poll_interval_s=0)
        srv = SeqlensServer(settings, tmp_path)
        await srv.start()
        seen = {}
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}") as channel:
                stub = health_pb2_grpc.HealthStub(channel)

                async def status(name: str) -> int:
                    try:
                        return (
                            await stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
                        ).status
                    except grpc.aio.AioRpcError as exc:
                        return -exc.code().value[0]

                seen["live"] = await status(live_name)
                seen["ready"] = await status(ready_name)
        finally:
            await srv.drain(0)
        return seen

    seen = asyncio.run(scenario())
    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    assert seen["live"] == serving, (
        f"health name {live_name!r} (startup and liveness probes) must be SERVING while the server runs, "
        f"even with no model READY; got {seen['live']} (negative = gRPC status code)"
    )
    assert seen["ready"] == not_serving, (
        f"readiness name {ready_name!r} must be NOT_SERVING with no model READY"
    )


def test_tls_deployments_get_a_plaintext_health_port():
    settings = _settings_class()
    env = env_of(render("overlays/prod"), server_container(render("overlays/prod")))
    assert "SEQLENS_HEALTH_PORT" in env
    assert "health_port" in settings.model_fields, (
        "prod probes need SEQLENS_HEALTH_PORT: a plaintext listener serving only grpc.health.v1 "
        "(the kubelet's gRPC probes cannot speak TLS)"
    )


# --------------------------------------------------------------------------- docs


def test_readme_section_matches_the_files():
    readme = README.read_text()
    assert "\n## Deploy\n" in readme, "the README has no Deploy section"
    text = readme.split("\n## Deploy\n", 1)[1].split("\n## ", 1)[0]
    for path in set(re.findall(r"\b(deploy/k8s/[\w./-]+[\w])", text)):
        assert (ROOT / path).exists(), f"README section mentions {path}, which does not exist"
    for needle in (
        "kubectl apply -k deploy/k8s/overlays/prod",
        "docker build",
        "SEQLENS_MODEL_REPOSITORY=/models",
        "dns:///seqlens-headless.",
        "seqlens-auth-tokens",
        "seqlens-tls",
    ):
        assert needle in text, needle
