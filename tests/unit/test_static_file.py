"""The endpoints file: validation that names the bad field, and reload on change without restart."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from endpoint_picker.config_error import ConfigError
from endpoint_picker.datastore import Datastore
from endpoint_picker.datastore.static_file import StaticFileSource, parse_endpoints_file

GOOD = """
pool: {name: demo}
endpoints:
  - {name: a, address: 127.0.0.1, port: 8001, labels: {role: decode}}
  - {address: "::1", port: 8002}
"""


def test_a_good_file_parses() -> None:
    parsed = parse_endpoints_file(GOOD)
    assert parsed.pool.name == "demo"
    assert [ep.key for ep in parsed.endpoints] == ["127.0.0.1:8001", "[::1]:8002"]
    assert parsed.endpoints[0].labels == {"role": "decode"}
    assert parsed.endpoints[1].name == "::1:8002"


@pytest.mark.parametrize(("text", "field"), [
    ("endpoints: 3", "endpoints"),
    ("endpoints: [{port: 80}]", "endpoints[0].address"),
    ("endpoints: [{address: 1.2.3.4}]", "endpoints[0].port"),
    ("endpoints: [{address: 1.2.3.4, port: 70000}]", "endpoints[0].port"),
    ("endpoints: [{address: 1.2.3.4, port: '80'}]", "endpoints[0].port"),
    ("endpoints: [{address: my-host, port: 80}]", "endpoints[0].address"),
    ("endpoints: [{address: 1.2.3.4, port: 80, wieght: 1}]", "endpoints[0].wieght"),
    ("endpoints: [{address: 1.2.3.4, port: 80}, {address: 1.2.3.4, port: 80}]", "endpoints[1]"),
    ("endpoints: [{address: 1.2.3.4, port: 80, labels: [a]}]", "endpoints[0].labels"),
    ("pool: {nmae: x}", "pool.nmae"),
    ("endpoint: []", "endpoint"),
    ("- a", "(document)"),
    ("endpoints: [", "(document)"),
])
def test_bad_files_name_the_field(text: str, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_endpoints_file(text, "eps.yaml")
    assert info.value.field == field
    assert str(info.value).startswith(f"eps.yaml: {field}: ")


async def test_changes_are_picked_up_and_bad_edits_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "eps.yaml"
    path.write_text(GOOD)
    store = Datastore()
    source = StaticFileSource(path, store, poll_interval=0.01)
    source.load()
    assert len(store.endpoints()) == 2
    removed: list[frozenset[str]] = []
    store.on_removed(removed.append)
    task = asyncio.create_task(source.run())
    try:
        path.write_text("endpoints: [{address: 127.0.0.1, port: 8001}]\n")
        await _until(lambda: len(store.endpoints()) == 1)
        assert removed == [frozenset({"[::1]:8002"})]
        path.write_text("endpoints: [{address: nope, port: 1}]\n")
        os.utime(path, ns=(1, 1))  # a different identity even within one mtime tick
        await _until(lambda: "keeping the previous endpoints" in caplog.text)
        assert [ep.key for ep in store.endpoints()] == ["127.0.0.1:8001"]
    finally:
        task.cancel()


async def _until(predicate) -> None:
    async with asyncio.timeout(5):
        while not predicate():
            await asyncio.sleep(0.01)
