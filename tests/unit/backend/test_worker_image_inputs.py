"""The docker worker image holds, and its tag hashes, only what the worker imports: a change to the
footer or the CI runner leaves the tag as it is; a change to the wire or the worker does not."""
from __future__ import annotations

import shutil
from pathlib import Path

import grimp
import pytest

from jupyter_gpu_backend.runtimes import docker_image

ROOT = Path(__file__).resolve().parents[3]


def tag_of_sources() -> str:
    sources = [(rel, f.read_bytes()) for rel, f in docker_image.source_files()]
    return docker_image.inputs_hash(b"FROM base", "base", "sha256:1", ["numpy.whl"], sources)


def test_the_image_holds_every_module_the_worker_imports_and_nothing_of_the_kernel_side():
    graph = grimp.build_graph("jupyter_gpu_worker", "jupyter_gpu", cache_dir=None)
    imported = graph.find_upstream_modules("jupyter_gpu_worker", as_package=True) | {"jupyter_gpu_worker"}
    shipped = {rel for rel, _ in docker_image.source_files()}
    for module in imported:
        rel = module.replace(".", "/")
        assert f"{rel}.py" in shipped or f"{rel}/__init__.py" in shipped, f"{module} is imported but not in the image"
    assert not [r for r in shipped if r.startswith(("jupyter_gpu/cost/", "jupyter_gpu/ci/", "jupyter_gpu/notebook/",
                                                    "jupyter_gpu/_client/", "jupyter_gpu/cli/"))]


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """A copy of the two packages, where the image's sources are read from."""
    copies = {"jupyter_gpu": tmp_path / "jupyter_gpu", "jupyter_gpu_worker": tmp_path / "jupyter_gpu_worker"}
    shutil.copytree(ROOT / "jupyter_gpu", copies["jupyter_gpu"], ignore=shutil.ignore_patterns("__pycache__", "labextension"))
    shutil.copytree(ROOT / "worker_image" / "jupyter_gpu_worker", copies["jupyter_gpu_worker"],
                    ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(docker_image, "package_dir", lambda name: copies[name])
    return tmp_path


@pytest.mark.parametrize("path, changes_tag", [
    ("jupyter_gpu/cost/footer.py", False),
    ("jupyter_gpu/ci/runner.py", False),
    ("jupyter_gpu/notebook/magics.py", False),
    ("jupyter_gpu/_wire/framing.py", True),
    ("jupyter_gpu/errors.py", True),
    ("jupyter_gpu_worker/agent.py", True),
])
def test_the_tag_changes_only_with_what_the_worker_imports(tree, path, changes_tag):
    before = tag_of_sources()
    f = tree / path
    f.write_text(f.read_text() + "\n# changed\n")
    assert (tag_of_sources() != before) is changes_tag
