"""Helpers for the `jupyter-gpu run` tests: notebooks on disk, the real CLI as a subprocess, JUnit."""
from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import nbformat

CLI = os.path.join(os.path.dirname(sys.executable), "jupyter-gpu")
SCHEMA = Path(__file__).resolve().parents[1] / "junit.xsd"
EXIT_OK, EXIT_CELL, EXIT_BUDGET, EXIT_INFRA = 0, 1, 3, 4


def notebook(path: Path, *cells, metadata: dict | None = None) -> Path:
    """Write a notebook whose cells are sources, or (source, [tags]) pairs."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata.update(metadata or {})
    for c in cells:
        source, tags = (c, []) if isinstance(c, str) else c
        cell = nbformat.v4.new_code_cell(source)
        if tags:
            cell.metadata["tags"] = tags
        nb.cells.append(cell)
    nbformat.write(nb, path)
    return path


def run_cli(args, env: dict, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """The CLI to its end; past ``timeout`` its whole process group (its kernels too) is stopped and
    the test fails with what it printed and the embedded backend's log."""
    argv = [CLI, "run", *map(str, args)]
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        log = Path(env.get("JUPYTER_GPU_RUNTIME_DIR", "/nonexistent")) / "backend.log"
        tail = log.read_text()[-4000:] if log.exists() else "(no embedded backend log)"
        raise AssertionError(f"jupyter-gpu run still running after {timeout} s\n--- stdout\n{out}\n--- stderr\n{err}"
                             f"\n--- backend.log\n{tail}") from None
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


class LiveCli:
    """The CLI with its stdout read line by line as it comes (a thread feeds a queue)."""

    def __init__(self, args, env: dict, cwd: Path):
        self.proc = subprocess.Popen([CLI, "run", *map(str, args)], env=env, cwd=cwd, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=1, start_new_session=True)
        self.lines: queue.Queue = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for_line(self, text: str, timeout: float) -> bool:
        """True once a line containing ``text`` has been printed; False at the timeout or at EOF."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return False
            if line is None:
                return False
            self.seen.append(line)
            if text in line:
                return True

    def stop(self) -> None:
        """Stop the CLI and its kernels (its process group), if it still runs."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(60)

    def finish(self, timeout: float) -> tuple[int, str, str]:
        rc = self.proc.wait(timeout)
        while (line := self.lines.get(timeout=10)) is not None:
            self.seen.append(line)
        return rc, "".join(self.seen), self.proc.stderr.read()


def junit(path: Path):
    """Parse and validate a JUnit file against tests/junit.xsd; returns the ElementTree root."""
    import xml.etree.ElementTree as ET

    import xmlschema

    xmlschema.XMLSchema(str(SCHEMA)).validate(str(path))
    return ET.parse(path).getroot()


def cases(root) -> dict:
    return {c.get("name"): c for c in root.iter("testcase")}


def read(path: Path):
    return nbformat.read(path, as_version=4)
