"""Following the kernel (scheduling/follow.py): which of the kernel's versions a session pins, when a
cell must wait for them, and what a version the index lacks does.  The runtime here only says what
its workers have (this interpreter's environment, as the local and ray runtimes' do); the pins are
resolved and installed by the real uv from the package index."""
from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from jupyter_gpu_backend.scheduling.follow import FRAMEWORKS, Follow, host_facts
from jupyter_gpu_backend.scheduling.model import CellRun, Session


class HostRuntime:
    """Workers with this interpreter's environment (what the local and ray runtimes give)."""

    def __init__(self):
        self.asked = 0

    async def worker_facts(self) -> dict:
        self.asked += 1
        return host_facts()

    def facts_stale(self) -> bool:
        return False


class Cell:
    def __init__(self, session):
        self.run = CellRun("c1", session, "cpu", 0.0)

    def header(self, versions: dict, dists: dict | None = None) -> dict:
        return {"versions": versions, **({"dists": dists} if dists else {})}


@pytest.fixture
def follow(tmp_path, monkeypatch):
    said: list[str] = []
    import jupyter_gpu_backend.scheduling.follow as module

    monkeypatch.setattr(module, "sayer", lambda run: said.append)  # the cell's stderr, as a list
    f = Follow(HostRuntime(), root=tmp_path)
    f.said = said
    return f


def run_build(follow, run, header):
    asyncio.run(follow.build(run, header))
    return header


def test_versions_the_worker_has_are_not_pinned_and_cost_no_build(follow):
    session = Session("s", "u")
    cell = Cell(session)
    pytest_version = host_facts()["dists"]["pytest"]
    header = cell.header({"pytest": pytest_version, "torch": "0.0.1"})  # torch: a framework, never followed
    assert follow.plan(cell.run, header)  # the worker's environment is not known yet: asked once
    run_build(follow, cell.run, header)
    assert session.follow_pins == {} and "follow" not in header and follow.said == []
    again = cell.header({"pytest": pytest_version})
    assert not follow.plan(cell.run, again) and follow.runtime.asked == 1
    assert "torch" in FRAMEWORKS


def test_a_version_the_worker_lacks_is_made_once_and_goes_with_every_later_cell(follow, tmp_path):
    session = Session("s", "u")
    cell = Cell(session)
    header = run_build(follow, cell.run, cell.header({"toolz": "0.12.1"}))
    site = header["follow"]
    assert site.startswith(str(tmp_path)) and site.endswith("site-packages")
    sys.path.insert(0, site)
    try:
        import importlib.metadata

        assert importlib.metadata.distribution("toolz").version == "0.12.1"
    finally:
        sys.path.remove(site)
    assert any("giving the worker the kernel's toolz==0.12.1" in s for s in follow.said)
    # the next cell, using something else: the session's directory goes with it, nothing is made
    later = cell.header({})
    assert not follow.plan(cell.run, later) and later["follow"] == site
    # another session with the same versions: the directory is there already
    other = Cell(Session("t", "v"))
    follow.said.clear()
    assert run_build(follow, other.run, other.header({"toolz": "0.12.1"}))["follow"] == site
    assert follow.said == [] and other.run.build == 0


def test_a_version_the_index_lacks_is_said_once_and_the_others_still_follow(follow):
    session = Session("s", "u")
    cell = Cell(session)
    header = run_build(follow, cell.run, cell.header({"toolz": "0.12.1", "mylib": "0.0.0"},
                                                     {"mylib": "jupyter-gpu-no-such-dist"}))
    said = "".join(follow.said)
    assert "not on the package index, left as the worker has them: jupyter-gpu-no-such-dist==0.0.0" in said, said
    assert (Path(header["follow"]) / "toolz").is_dir()
    # alone, it cannot be had at all: said, and the cell runs with the worker's versions
    lone = Cell(Session("t", "v"))
    follow.said.clear()
    header = run_build(follow, lone.run, lone.header({"mylib": "0.0.0"}, {"mylib": "jupyter-gpu-no-such-dist"}))
    assert "follow" not in header and "the worker cannot have the kernel's versions" in "".join(follow.said)
    # the same cell again: not tried again, nothing said, no wait
    assert not follow.plan(lone.run, lone.header({"mylib": "0.0.0"}, {"mylib": "jupyter-gpu-no-such-dist"}))
