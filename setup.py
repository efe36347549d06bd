"""Build hook: generate the Python gRPC stubs of ``protos/`` with grpcio-tools at build time.

Metadata lives in pyproject.toml; this file only adds the ``build_stubs`` command and makes it a sub-command
of ``build``, so it runs for every kind of build setuptools makes:

- wheels (``pip install .``, ``pip wheel .``, ``python -m build``): the stubs are written into the build
  directory (``build_lib``) and packaged with the rest of ``picker_api``; the source tree is not touched;
- editable installs (``pip install -e .``, what the Makefile does): the stubs are written into the source
  tree (``picker_api/v1/``), where the editable install imports them from, like ``build_ext --inplace``.
  Editing a ``.proto`` needs a re-install (the Makefile's install stamp depends on the protos).

The generated modules (``*_pb2.py``, ``*_pb2.pyi``, ``*_pb2_grpc.py``) are ignored by git and never edited by
hand. grpcio-tools is pinned in ``[build-system] requires`` and the runtime ``grpcio``/``protobuf`` floors in
``[project] dependencies`` match the versions its generated code checks for at import.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import Command, setup
from setuptools.command.build import build

ROOT = Path(__file__).resolve().parent
PROTO_ROOT = "protos"
# proto directory (under protos/, as buf sees it) -> Python package directory the stubs go to. protoc is
# given the proto directory under the package's path (``-Ipicker_api/v1=protos/endpoint_picker/v1``) so
# the generated modules import each other as ``picker_api.v1.*``; the proto package stays
# ``endpoint_picker.v1`` (service ``endpoint_picker.v1.EndpointPickerService``).
STUB_PACKAGES = {"endpoint_picker/v1": "picker_api/v1"}
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def _protos(proto_dir: str) -> list[Path]:
    return sorted((ROOT / PROTO_ROOT / proto_dir).glob("*.proto"))


def generate_stubs(out_root: Path) -> list[Path]:
    """Run grpc_tools.protoc for every proto directory into ``out_root``; return the files written."""
    import grpc_tools
    from grpc_tools import protoc

    well_known = Path(grpc_tools.__file__).parent / "_proto"  # google/protobuf/*.proto
    written: list[Path] = []
    for proto_dir, package_dir in STUB_PACKAGES.items():
        protos = _protos(proto_dir)
        if not protos:
            raise RuntimeError(f"no .proto files in {ROOT / PROTO_ROOT / proto_dir}")
        (out_root / package_dir).mkdir(parents=True, exist_ok=True)
        args = [
            "grpc_tools.protoc",
            f"--proto_path={package_dir}={ROOT / PROTO_ROOT / proto_dir}",
            f"--proto_path={well_known}",
            f"--python_out={out_root}",
            f"--pyi_out={out_root}",
            f"--grpc_python_out={out_root}",
            *(f"{package_dir}/{p.name}" for p in protos),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"grpc_tools.protoc failed for {proto_dir} (command: {' '.join(args)})")
        for p in protos:
            written.extend(out_root / package_dir / (p.stem + suffix) for suffix in GENERATED_SUFFIXES)
    return written


class build_stubs(Command):  # named after the command, as setuptools commands are
    """Generate the gRPC stubs (into build_lib, or into the source tree for an editable install)."""

    description = "generate Python gRPC stubs from protos/ with grpcio-tools"
    user_options = [("build-lib=", "d", "directory to write the stubs to")]

    def initialize_options(self) -> None:
        self.build_lib: str | None = None
        self.editable_mode = False
        self._outputs: list[Path] = []

    def finalize_options(self) -> None:
        self.set_undefined_options("build_py", ("build_lib", "build_lib"))

    def run(self) -> None:
        out_root = ROOT if self.editable_mode else Path(self.build_lib or "build/lib")
        self._outputs = generate_stubs(out_root)
        self.announce(f"generated {len(self._outputs)} stub files in {out_root}", level=2)

    # The sub-command protocol setuptools uses for sdists and editable wheels.
    def get_source_files(self) -> list[str]:
        return [str(p.relative_to(ROOT)) for d in STUB_PACKAGES for p in _protos(d)]

    def get_outputs(self) -> list[str]:
        return [] if self.editable_mode else [str(p) for p in self._outputs]

    def get_output_mapping(self) -> dict[str, str]:
        return {}


def _after_build_py(commands: list[tuple[str, object]]) -> list[tuple[str, object]]:
    # After build_py, so a wheel gets freshly generated stubs even when stale ones sit in the source tree.
    names = [name for name, _ in commands]
    at = names.index("build_py") + 1 if "build_py" in names else 0
    return [*commands[:at], ("build_stubs", None), *commands[at:]]


class build_with_stubs(build):
    sub_commands = _after_build_py(build.sub_commands)


if __name__ == "__main__":  # how setuptools (and `python setup.py`) runs this file; tests import it
    setup(cmdclass={"build": build_with_stubs, "build_stubs": build_stubs})
