"""Named worker images (`%%gpu --image NAME`) on the local runtime, through a real kernel.

Two images differ by an `env` variable and a `preload` module (a probe that records which process
imported it).  A real backend started with them in its --config; a real kernel (nbclient) pointed
at it.  Each image runs on its own worker, sees its own env, was forked from its own zygote that
had imported its preload module, keeps its own remote namespace, and reuses its warm worker; an
unknown image fails its cell naming the images there are, and the backend keeps serving.
"""
from __future__ import annotations

import json
import sqlite3
import urllib.request

import pytest

from tests.conftest import make_kernel_env
from tests.integration.backend_process import start_backend, stop_backend

from .helpers import LOAD, footers, last_footer, stream_text

pytestmark = pytest.mark.timeout(240)
TOKEN = "images-token"
PROBE = "import os\nLOADED_BY = os.getpid()  # the process that imported it: the zygote, when preloaded\n"


def api(url: str, path: str) -> dict:
    req = urllib.request.Request(f"{url}{path}", headers={"Authorization": f"token {TOKEN}"})
    with urllib.request.urlopen(req, timeout=130) as r:
        return json.load(r)


def probe_cell(image: str, probe: str, other: str, extra: str = "") -> str:
    return (f"%%gpu --image {image} --out mode,pre,forked,other_loaded\n"
            f"import os, sys\npre = '{probe}' in sys.modules  # before this cell imports anything\n"
            f"import {probe}\nmode = os.environ['JG_IMAGE_MODE']\nforked = {probe}.LOADED_BY != os.getpid()\n"
            f"other_loaded = '{other}' in sys.modules\nprint(mode, pre, forked, other_loaded)\n{extra}")


@pytest.fixture
def images_backend(tmp_path, monkeypatch):
    mods = tmp_path / "mods"
    mods.mkdir()
    for name in ("jg_probe_a", "jg_probe_b"):
        (mods / f"{name}.py").write_text(PROBE)
    cfg = tmp_path / "serve.toml"
    cfg.write_text(
        f'[images.a]\nenv = {{ JG_IMAGE_MODE = "alpha", PYTHONPATH = "{mods}" }}\npreload = ["jg_probe_a"]\n'
        f'[images.b]\nenv = {{ JG_IMAGE_MODE = "beta", PYTHONPATH = "{mods}" }}\npreload = ["jg_probe_b"]\n')
    # three zygotes on a small machine: the heavy default preload (torch) is not what this tests
    monkeypatch.setenv("JUPYTER_GPU_PRELOAD", "cloudpickle,IPython")
    proc, url = start_backend(tmp_path, "--token", TOKEN, "--config", str(cfg), "--keep-warm", "120")
    try:
        info = api(url, "/api/runtime?wait=120")  # waits on every image's zygote
        assert info["ready"], info
        assert info["images"]["a"]["zygote"]["ready"] and "jg_probe_a" in info["images"]["a"]["zygote"]["preloaded"]
        yield url, tmp_path
    finally:
        stop_backend(proc)


def test_cells_of_two_images_run_on_their_own_workers_env_and_namespace(images_backend, run_notebook):
    url, d = images_backend
    runtime_dir = d / "kernel-runtime"
    runtime_dir.mkdir()
    env = {**make_kernel_env(runtime_dir), "JUPYTER_GPU_URL": url, "JUPYTER_GPU_TOKEN": TOKEN}
    nb = run_notebook([
        LOAD,
        probe_cell("a", "jg_probe_a", "jg_probe_b", "%s" % "secret_a = 41"),  # 1: cold, image a
        "%gpu prewarm --image b",  # 2
        probe_cell("b", "jg_probe_b", "jg_probe_a", "print('secret_a' in globals())"),  # 3: warm, image b
        "%%gpu --image a --no-out\nprint(secret_a + 1)\nprint(os.environ['JG_IMAGE_MODE'])",  # 4: a's worker again
        "%%gpu --image nope\nx = 1",  # 5: unknown image
        "%%gpu\nimport os\nprint(os.environ.get('JG_IMAGE_MODE'))",  # 6: the default image, still served
        "%gpu config --image b",  # 7
        "%%gpu --no-out\nimport os\nprint(os.environ['JG_IMAGE_MODE'])",  # 8: b, by the kernel's default
        "%gpu status",  # 9
    ], env=env, allow_errors=True, timeout=180)
    c = nb.cells
    fa, fb, fa2, fd, fb2 = (last_footer(c[i]) for i in (1, 3, 4, 6, 8))

    # each image's env and preload module, imported by its zygote (not by the worker), not the other's
    assert stream_text(c[1]).strip() == "alpha True True False", stream_text(c[1])
    assert fa["cold"] and fa["start_method"] == "zygote" and fa["image"] == "a"
    assert "worker w-" in stream_text(c[2]) and "(image b)" in stream_text(c[2]), stream_text(c[2])
    assert stream_text(c[3]).splitlines() == ["beta True True False", "False"]  # a's namespace is not b's
    assert fb["image"] == "b" and not fb["cold"]

    # two images: two workers; the warm worker of a is reused by the next a cell, its namespace intact
    assert len({fa["worker"], fb["worker"], fd["worker"]}) == 3
    assert fa2["worker"] == fa["worker"] and not fa2["cold"] and fa2["image"] == "a"
    assert stream_text(c[4]).splitlines() == ["42", "alpha"]
    assert " · image: a · " in c[4].outputs[-1]["data"]["text/plain"]
    assert fb2["worker"] == fb["worker"] and stream_text(c[8]).strip() == "beta"

    # an unknown image: a clear error naming the images there are; the backend serves on
    err = next(o for o in c[5].outputs if o.output_type == "error")
    assert err.ename == "NoSuchImage" and "'nope'" in err.evalue and "a, b, default" in err.evalue, err.evalue
    assert not footers(c[5])
    assert stream_text(c[6]).strip() == "None" and fd["image"] == "default"
    assert " image" not in c[6].outputs[-1]["data"]["text/plain"]  # the default image goes unsaid

    status = stream_text(c[9])
    assert "images: a, b, default" in status, status
    lines = {ln.split()[1]: ln for ln in status.splitlines() if "keep-warm" in ln}
    assert set(lines) == {"a", "b", "default"} and fa["worker"] in lines["a"] and fb["worker"] in lines["b"], status

    # the ledger: every worker and cell with its image; /api/pools by image
    cells = {r["id"].split(".")[0]: r for r in api(url, "/api/cells")["cells"]}
    assert sorted(r["image"] for r in cells.values()) == ["a", "a", "b", "b", "default"], cells
    pools = api(url, "/api/pools")["pools"]["serverless"]["cpu"]["images"]
    assert {k: v["workers"] for k, v in pools.items()} == {"a": 1, "b": 1, "default": 1}, pools
    db = sqlite3.connect(d / "ledger.sqlite3")
    try:
        rows = dict(db.execute("SELECT id, image FROM workers").fetchall())
    finally:
        db.close()
    assert rows[fa["worker"]] == "a" and rows[fb["worker"]] == "b" and rows[fd["worker"]] == "default"
