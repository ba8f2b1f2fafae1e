"""Worker images: the [images.NAME] tables of serve's --config, checked at start; pool keys; footer."""
import subprocess
import sys

import pytest

from jupyter_gpu.cost import footer
from jupyter_gpu._wire.pools import pool_key, split_key
from jupyter_gpu_backend.config import BackendConfig, load_config_file
from jupyter_gpu_backend.runtimes.images import PRELOAD_ENV, check_for_runtime


def load(tmp_path, text: str) -> BackendConfig:
    p = tmp_path / "serve.toml"
    p.write_text(text)
    c = BackendConfig()
    load_config_file(str(p), c)
    return c


def test_images_are_read_with_default_always_there(tmp_path):
    assert list(BackendConfig().images) == ["default"]
    c = load(tmp_path, '[images.a]\nenv = { MODE = "a" }\npreload = ["json", "colorsys"]\n'
                       f'python = "{sys.executable}"\n[images.b]\n')
    assert sorted(c.images) == ["a", "b", "default"]
    a = c.images["a"]
    assert a.env == {"MODE": "a"} and a.preload == ("json", "colorsys") and a.python == sys.executable
    assert a.worker_env() == {"MODE": "a", PRELOAD_ENV: "json,colorsys"}
    assert c.images["b"].worker_env() == {}
    check_for_runtime(c.images, "local")  # all of it is the local runtime's


@pytest.mark.parametrize("text, message", [
    ('[images.a]\nenvs = { X = "1" }\n', r"\[images.a\] has unknown key 'envs'"),
    ('[images.a]\nenv = { X = 1 }\n', r"\[images.a\] key 'env' must be a table of strings"),
    ('[images.a]\npreload = "json"\n', r"\[images.a\] key 'preload' must be a list of module names"),
    ('[images.a]\nbase = 3\n', r"\[images.a\] key 'base' must be a string"),
    ('[images."a@b"]\n', r"bad image name 'a@b'"),
    ('images = 3\n', r"\[images\] must hold tables"),
])
def test_a_bad_image_table_is_refused_naming_the_key(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        load(tmp_path, text)


def test_a_key_the_runtime_cannot_build_is_refused_at_start(tmp_path):
    c = load(tmp_path, '[images.gpu]\nbase = "nvcr.io/x:1"\n[images.r]\nruntime_env = { pip = ["x"] }\n')
    with pytest.raises(ValueError, match=r"\[images.gpu\] key 'base' is for the docker runtime only; "
                                         "this backend runs the local runtime"):
        check_for_runtime(c.images, "local")
    with pytest.raises(ValueError, match=r"\[images.r\] key 'runtime_env' is for the ray runtime only"):
        check_for_runtime({"r": c.images["r"]}, "docker")
    c = load(tmp_path, '[images.v]\npython = "/nonexistent/python"\n')
    with pytest.raises(ValueError, match=r"\[images.v\] key 'python': /nonexistent/python is not an executable"):
        check_for_runtime(c.images, "local")


def test_serve_refuses_an_image_it_cannot_build_before_it_starts(tmp_path):
    p = tmp_path / "serve.toml"
    p.write_text('[images.a]\nbase = "x:1"\n')
    r = subprocess.run([sys.executable, "-m", "jupyter_gpu_backend", "--config", str(p), "--runtime", "local",
                        "--ledger", str(tmp_path / "l.sqlite3")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "[images.a] key 'base' is for the docker runtime only" in r.stderr, r.stderr


def test_pool_keys():
    assert pool_key("cpu", "default") == "cpu" and pool_key("A100:2", None) == "A100:2"
    assert pool_key("cpu", "a") == "cpu@a" and split_key("cpu@a") == ("cpu", "a")
    assert split_key("A100:2") == ("A100:2", "default")


def test_the_footer_names_a_named_image_only():
    done = {"status": "ok", "gpu": "cpu", "device": "cpu (2 cores)", "worker": "w-1", "timings": {"run": 0.01}}
    f = footer.build(done, 0.02, {})
    assert f["image"] == "default" and "image" not in footer.text(f)
    f = footer.build({**done, "image": "a"}, 0.02, {})
    assert f["image"] == "a" and " · image: a · " in footer.text(f)
