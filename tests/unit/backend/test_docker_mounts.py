"""What a docker worker container gets mounted, and as whom it runs (runtimes/docker_mounts.py), on
real directories: the cell's folder and `docker_mounts` at the same path, as the folder's owner;
never what would hand the container the host (the Docker socket's folder, /), the backend's own state,
or folders the container itself runs on; the config key that names the extra mounts."""
from __future__ import annotations

import os

import pytest

from jupyter_gpu_backend.config import BackendConfig, load_config_file
from jupyter_gpu_backend.runtimes.docker_mounts import plan


def test_the_cells_folder_and_the_extra_ones_are_mounted_at_their_paths_as_the_folders_owner(tmp_path):
    cell, data = tmp_path / "project", tmp_path / "data"
    cell.mkdir(), data.mkdir()
    m = plan(str(cell), [str(data)], protected=[], sockets=[])
    assert m.volumes == {str(cell): {"bind": str(cell), "mode": "rw"}, str(data): {"bind": str(data), "mode": "rw"}}
    st = cell.stat()
    assert m.create_options()["user"] == f"{st.st_uid}:{st.st_gid}"
    assert m.env["USER"] == m.env["LOGNAME"] and m.refused == {}


def test_a_folder_inside_another_mounted_one_is_seen_through_it(tmp_path):
    (tmp_path / "project").mkdir()
    m = plan(str(tmp_path / "project"), [str(tmp_path)], protected=[], sockets=[])
    assert list(m.volumes) == [str(tmp_path)]


def test_no_cell_and_no_extra_folders_keep_the_images_own_user(tmp_path):
    assert plan(None, [], protected=[], sockets=[]).create_options() == {}


@pytest.mark.parametrize("why, asked", [
    ("not an existing directory", "missing"),
    ("Docker socket", "run"),  # the folder holding the socket
    ("backend's own state", "state/inside"),
])
def test_what_would_give_away_the_host_or_the_backend_is_never_mounted(tmp_path, why, asked):
    for d in ("run", "state/inside"):
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / "run" / "docker.sock").touch()
    m = plan(str(tmp_path / asked), [], protected=[str(tmp_path / "state")], sockets=[str(tmp_path / "run/docker.sock")])
    assert m.volumes == {} and m.user is None
    assert why in m.refused[str(tmp_path / asked)]


@pytest.mark.parametrize("path", ["/", "/usr", "/etc", "/opt"])
def test_the_root_and_what_the_container_runs_on_are_never_mounted(path):
    m = plan(path, [], protected=[], sockets=[])
    assert m.volumes == {} and path in m.refused


def test_the_backends_state_inside_a_mounted_folder_is_hidden(tmp_path):
    state = tmp_path / ".local" / "jupyter-gpu"
    state.mkdir(parents=True)
    m = plan(str(tmp_path), [], protected=[str(state)], sockets=[])
    assert list(m.volumes) == [str(tmp_path)] and list(m.tmpfs) == [str(state)]


def test_docker_mounts_in_the_config_file(tmp_path):
    f = tmp_path / "serve.toml"
    f.write_text('docker_mounts = ["/data/sets", "/srv/shared/"]\n')
    config = BackendConfig()
    load_config_file(str(f), config)
    assert config.docker_mounts == ["/data/sets", "/srv/shared"]
    f.write_text('docker_mounts = ["relative/path"]\n')
    with pytest.raises(ValueError, match="absolute paths"):
        load_config_file(str(f), BackendConfig())
