"""The API's build: ``buf lint`` passes on protos/, and the installed stubs are what grpcio-tools generates.

buf comes from the npm registry (``@bufbuild/buf``, version pinned in the Makefile). ``make test`` installs it
into ``.tools/``; when it is not there this test installs it the same way, and skips only without npm.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[3]
LOCAL_BUF = ROOT / ".tools" / "node_modules" / ".bin" / "buf"


def buf_version() -> str:
    match = re.search(r"^BUF_VERSION\s*:?=\s*(\S+)", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert match, "the Makefile pins BUF_VERSION"
    return match.group(1)


def buf_binary() -> Path:
    if LOCAL_BUF.exists():
        return LOCAL_BUF
    npm = shutil.which("npm")
    if npm is None:
        found = shutil.which("buf")
        if found:
            return Path(found)
        pytest.skip("neither buf nor npm (to install @bufbuild/buf) is available")
    subprocess.run([npm, "install", "--prefix", str(ROOT / ".tools"), "--no-audit", "--no-fund",
                    "--loglevel=error", f"@bufbuild/buf@{buf_version()}"], check=True, timeout=300,
                   stdin=subprocess.DEVNULL)
    assert LOCAL_BUF.exists(), f"npm installed @bufbuild/buf but {LOCAL_BUF} is missing"
    return LOCAL_BUF


def test_buf_lint_passes() -> None:
    buf = buf_binary()
    done = subprocess.run([str(buf), "lint"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, f"buf lint failed:\n{done.stdout}{done.stderr}"


def _setup_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("endpoint_picker_setup", ROOT / "setup.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # defines the build hook; setup() runs only as __main__
    return module


def test_installed_stubs_are_exactly_what_grpcio_tools_generates(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    from picker_api.v1 import picker_pb2

    written = _setup_module().generate_stubs(tmp_path)
    installed = Path(picker_pb2.__file__).parent
    assert sorted(p.name for p in written) == ["picker_pb2.py", "picker_pb2.pyi", "picker_pb2_grpc.py"]
    for fresh in written:
        assert fresh.parent == tmp_path / "picker_api" / "v1"
        current = installed / fresh.name
        assert current.exists(), f"{current} was not generated at install"
        assert current.read_bytes() == fresh.read_bytes(), (
            f"{current} differs from what protos/ generates now: reinstall (`pip install -e .`), never edit it")


def test_generated_service_is_the_proto_package_service() -> None:
    from picker_api.stubs import SERVICE_NAME, picker_pb2

    assert SERVICE_NAME == "endpoint_picker.v1.EndpointPickerService"
    methods = {m.name: (m.input_type.name, m.output_type.name, m.server_streaming)
               for m in picker_pb2.DESCRIPTOR.services_by_name["EndpointPickerService"].methods}
    assert methods == {
        "Explain": ("ExplainRequest", "ExplainResponse", False),
        "StreamDecisions": ("StreamDecisionsRequest", "StreamDecisionsResponse", True),
        "GetState": ("GetStateRequest", "GetStateResponse", False),
    }
