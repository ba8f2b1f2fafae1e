"""The layers of the code hold (import-linter contracts in pyproject.toml), and a new import across
a layer fails naming the contract it breaks."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"]
PACKAGES = {"jupyter_gpu": ROOT / "jupyter_gpu", "jupyter_gpu_backend": ROOT / "backend" / "jupyter_gpu_backend",
            "jupyter_gpu_worker": ROOT / "worker_image" / "jupyter_gpu_worker"}


def lint(cwd: Path, pythonpath: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": pythonpath} if pythonpath else dict(os.environ)
    return subprocess.run(LINT + ["--no-cache"], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_every_contract_is_kept():
    out = lint(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


@pytest.mark.parametrize("module, line, contract", [
    ("jupyter_gpu_worker/results.py", "from jupyter_gpu.cost import footer", "the worker imports only"),
    ("jupyter_gpu/_wire/framing.py", "from jupyter_gpu.notebook import names", "kernel-side layers"),
    ("jupyter_gpu/cost/footer.py", "from jupyter_gpu._client import embedded", "kernel-side layers"),
    ("jupyter_gpu_backend/scheduling/scheduler.py", "from jupyter_gpu.notebook import held", "the backend imports only"),
    ("jupyter_gpu/notebook/session.py", "import jupyter_gpu_backend.server", "the kernel side imports neither"),
])
def test_a_new_import_across_a_layer_fails_naming_its_contract(tmp_path, module, line, contract):
    for name, src in PACKAGES.items():
        shutil.copytree(src, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "labextension"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{line}  # added by the test\n")
    out = lint(tmp_path, str(tmp_path))
    assert out.returncode != 0, out.stdout
    assert contract in out.stdout.replace("\n", " ") and "BROKEN" in out.stdout
