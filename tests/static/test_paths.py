"""What the Dockerfile, compose file and docs name exists: files, extras, scripts, modules, targets."""

from __future__ import annotations

import fnmatch
import importlib.util
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from tests.static.dockerfile import read_dockerfile

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
SCRIPTS: dict[str, str] = PYPROJECT["project"]["scripts"]
EXTRAS: dict[str, list[str]] = PYPROJECT["project"]["optional-dependencies"]
DOCKERFILE = read_dockerfile(ROOT / "Dockerfile")
DOCS = [path for path in (ROOT / "README.md", ROOT / "docs" / "deploy.md") if path.exists()]


def module_exists(dotted: str) -> bool:
    """True if `dotted` names a module or package of this repository (found without importing it)."""
    parts = dotted.split(".")
    base = ROOT.joinpath(*parts)
    if base.with_suffix(".py").is_file() or (base / "__init__.py").is_file():
        return True
    return importlib.util.find_spec(parts[0]) is not None and not (ROOT / parts[0]).exists()


def dockerignore_allows(path: str) -> bool:
    """Whether .dockerignore (an allow-list: `*` then `!path` lines) lets `path` into the context."""
    allowed = False
    for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.removeprefix("!").rstrip("/")
        if fnmatch.fnmatch(path.rstrip("/"), pattern) or path.startswith(pattern + "/"):
            allowed = negate
    return allowed


def doc_text() -> str:
    return "\n".join(path.read_text(encoding="utf-8") for path in DOCS)


def test_every_copy_source_exists_and_reaches_the_build_context() -> None:
    copies = [i for i in DOCKERFILE.instructions if i.keyword == "COPY" and "from" not in i.options()]
    assert copies
    for copy in copies:
        for source in copy.positional()[:-1]:
            assert (ROOT / source).exists(), f"Dockerfile line {copy.line}: {source} does not exist"
            assert dockerignore_allows(source), f"Dockerfile line {copy.line}: .dockerignore drops {source}"


def test_every_copy_from_names_an_earlier_stage() -> None:
    for copy in DOCKERFILE.instructions:
        stage = copy.options().get("from")
        if copy.keyword in {"COPY", "RUN"} and stage:
            assert stage in DOCKERFILE.bases, f"line {copy.line}: no stage {stage}"
    for instruction in DOCKERFILE.instructions:
        for option in instruction.words():
            match = re.match(r"--mount=.*\bfrom=([\w.-]+)", option)
            if match:
                assert match.group(1) in DOCKERFILE.bases, (
                    f"line {instruction.line}: no stage {match.group(1)}"
                )


def test_every_extra_the_dockerfile_installs_is_in_pyproject() -> None:
    installed = []
    for run in DOCKERFILE.instructions:
        words = run.words() if run.keyword == "RUN" else []
        extras = [words[i + 1] for i, word in enumerate(words[:-1]) if word == "--extra"]
        assert set(extras) <= set(EXTRAS), f"line {run.line}: {extras}"
        installed += extras
    assert {"cpu", "gpu"} <= set(installed)


def test_every_python_module_the_dockerfile_runs_exists() -> None:
    for run in DOCKERFILE.instructions:
        for module in re.findall(r"python -m ([\w.]+)", run.arguments):
            assert module_exists(module), f"Dockerfile line {run.line}: no module {module}"


def test_entrypoint_is_a_project_script_with_a_real_target() -> None:
    (entrypoint,) = [i for i in DOCKERFILE.instructions if i.keyword == "ENTRYPOINT"]
    program = entrypoint.words()[0]
    assert program in SCRIPTS, f"ENTRYPOINT {program} is not in [project.scripts]"
    module, _, function = SCRIPTS[program].partition(":")
    assert module_exists(module), f"{program} -> {module}: no such module"
    source = ROOT.joinpath(*module.split(".")).with_suffix(".py").read_text(encoding="utf-8")
    assert re.search(rf"^def {function}\(", source, flags=re.MULTILINE), f"{module} has no {function}()"


def test_compose_settings_are_service_settings() -> None:
    settings = pytest.importorskip("service.settings")
    compose = YAML(typ="safe").load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    fields = {name.upper() for name in settings.Settings.model_fields}
    for name, service in compose["services"].items():
        for variable in service["environment"]:
            assert variable.startswith("GAN_SERVE_"), f"{name}: {variable}"
            assert variable.removeprefix("GAN_SERVE_") in fields, f"{name}: {variable} is no setting"


@pytest.mark.skipif(not DOCS, reason="no README or docs/deploy.md yet")
def test_commands_in_the_docs_exist() -> None:
    text = doc_text()
    for script in set(re.findall(r"(?<![\w/.-])(gan-[a-z]+)(?= |$)", text, flags=re.MULTILINE)):
        if script not in {"gan-serve-cpu"}:  # a compose service name, not a command
            assert script in SCRIPTS or script in {"gan-serve"}, f"docs run {script}: not a project script"
    for module in set(re.findall(r"python -m ([a-z_][\w.]*)", text)):
        assert module_exists(module), f"docs run python -m {module}: no such module"
    for extras in re.findall(r"\.\[([\w,-]+)\]", text):
        assert set(extras.split(",")) <= set(EXTRAS), f"docs install .[{extras}]"
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(encoding="utf-8"), re.MULTILINE))
    for target in set(re.findall(r"\bmake ([a-z][\w-]*)", text)):
        assert target in targets, f"docs run make {target}: not a Makefile target"
    for stage in set(re.findall(r"--target[ =]([\w-]+)", text)):
        assert stage in DOCKERFILE.bases, f"docs build --target {stage}: not a Dockerfile stage"


@pytest.mark.skipif(not DOCS, reason="no README or docs/deploy.md yet")
def test_repository_paths_in_the_docs_exist() -> None:
    # A path in backticks whose first part is a top-level entry of the repository must exist.
    top_level = {path.name for path in ROOT.iterdir()} - {"models", "build", "dist"}
    for token in set(re.findall(r"`([\w.-]+/[\w./-]*|[\w-]+\.(?:py|md|yml|toml))`", doc_text())):
        if token.split("/")[0] in top_level:
            assert (ROOT / token).exists(), f"docs name {token}: no such file"
