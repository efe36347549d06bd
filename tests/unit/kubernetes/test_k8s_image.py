"""The Dockerfile stays in step with the project: multi-stage, every packaged directory copied, runtime
dependencies only, non-root, ``endpoint-picker serve`` as entrypoint. (Its install steps are run for real in
clean virtualenvs by ``make image-check`` — scripts/check_image_install.py — about a minute, so not here.)"""

from __future__ import annotations

import importlib.util
import re
import tomllib
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def _check_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_image_install", ROOT / "scripts" / "check_image_install.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_copies_everything_the_build_needs() -> None:
    copied = set(_check_script().copied_paths(DOCKERFILE))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages <= copied, f"not copied into the build stage: {sorted(packages - copied)}"
    assert {"pyproject.toml", project["project"]["readme"]} <= copied
    if (ROOT / "setup.py").exists():  # the build hook and what it reads
        assert {"setup.py", "protos"} <= copied


def test_stages_user_and_entrypoint() -> None:
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", DOCKERFILE, re.M)
    assert [alias for _, alias in stages] == ["build", ""]
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE, re.M)
    assert base and "slim" in base.group(1) and all(image == "${PYTHON_IMAGE}" for image, _ in stages)
    runtime = DOCKERFILE.split("\nFROM ")[-1]
    assert "pip install --no-cache-dir --no-index /wheels/*.whl" in runtime  # only the wheels built above
    assert "[" not in re.search(r"pip wheel --wheel-dir /wheels (\S+)", DOCKERFILE).group(1)  # no extras
    user = re.search(r"^USER (\d+):(\d+)$", runtime, re.M)
    assert user and int(user.group(1)) != 0
    assert _check_script().entrypoint(DOCKERFILE) == ["endpoint-picker", "serve"]
    exposed = {int(p) for line in re.findall(r"^EXPOSE (.+)$", runtime, re.M) for p in line.split()}
    assert exposed == {9002, 9003, 9090}
