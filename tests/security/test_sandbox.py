"""Issue 24, findings 1, 2, 3 and 8: on the local runtime under --users, a cell is a hostile user's
code, and it tries what a hostile team member did against a real backend:

1. read the backend's secrets (its environment's PGPASSWORD, its token file, its command line in
   /proc and so the users file, the ledger), and leave a process behind that outlives its worker;
2. see another user's worker starting, and its one-time registration secret;
3. read or rewrite another user's shared memory;
8. reach another worker's lane socket, or bill its own cell less than it ran.

Each attack ran as written before the sandbox (jupyter_gpu_worker/sandbox.py) and succeeded; the
test asserts it now fails.  The sandbox needs root (namespaces, mounts, a uid per user): elsewhere
--users on local is refused without --insecure-shared-workers (asserted too)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from jupyter_gpu._wire import messages
from tests.e2e.helpers import wait_pid_exit
from tests.integration.backend_process import start_backend, stop_backend

from .cells import TOKENS, client, execute, until

pytestmark = [pytest.mark.timeout(180),
              pytest.mark.skipif(os.geteuid() != 0, reason="the local runtime's sandbox needs root (it is refused "
                                 "without it: test_without_root_users_on_local_is_refused_unless_insecure)")]
BACKEND_SECRET = "pg-password-of-the-backend"


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    d = tmp_path_factory.mktemp("sandbox")
    users = d / "users.json"
    users.write_text(json.dumps(TOKENS))
    users.chmod(0o600)
    proc, url = start_backend(d, "--users", str(users), env={"PGPASSWORD": BACKEND_SECRET})
    yield d, proc, url
    stop_backend(proc)


def run(c, cell: str, code: str) -> tuple[str, dict]:
    """(the cell's stdout, its done) for ``code`` run by client ``c``."""
    execute(c, cell, code)
    out = []
    while True:
        msg = c.recv(timeout=60)
        assert msg is not None, f"no end of {cell}"
        if msg.type == messages.STREAM and msg.header.get("name") == "stdout":
            out.append(msg.header["text"])
        elif msg.type == messages.ERROR:
            raise AssertionError(f"{cell}: {msg.header.get('ename')}: {msg.header.get('evalue')}")
        elif msg.type in (messages.DONE, messages.FAILURE):
            assert msg.type == messages.DONE, msg.header
            return "".join(out), msg.header


def attempt(expr: str) -> str:
    """Code that prints what ``expr`` gives, or the error it raises."""
    return (f"try:\n    print(repr({expr}))\nexcept Exception as e:\n    print(type(e).__name__)\n")


def test_a_cell_reaches_none_of_the_backends_secrets(team):
    d, proc, url = team
    alice = client(url, "alice", "s-sb-1")
    out, done = run(alice, "c1", "import os, glob\n"
                    + attempt("os.environ.get('PGPASSWORD')")
                    + attempt(f"open('/proc/{proc.pid}/cmdline').read()")
                    + attempt("sorted(p for p in os.listdir('/proc') if p.isdigit())")
                    + attempt(f"open({str(d / 'users.json')!r}).read()")
                    + attempt(f"open({str(d / 'backend.json')!r}).read()")
                    + attempt(f"open({str(d / 'ledger.sqlite3')!r}, 'rb').read(16)")
                    + attempt("(os.getuid(), os.getgid(), os.getgroups())")
                    + attempt("open('/work/x', 'w')") + "print(os.environ.get('HOME'))\n")
    lines = out.splitlines()
    assert lines[0] == "None"  # the backend's environment is not the cell's
    assert lines[1] == "FileNotFoundError"  # the backend is not among the processes it sees
    assert lines[2] == "['1']", lines[2]  # only itself: PID 1 of its own namespace
    assert lines[3] in ("''", "PermissionError", "FileNotFoundError")  # every user's token: not readable
    assert lines[4] in ("PermissionError", "FileNotFoundError")  # the backend's runtime file
    assert lines[5] in ("PermissionError", "FileNotFoundError")  # the ledger
    uid = eval(lines[6])
    # no account, and of groups only the workers' own (it may read the built environments)
    assert uid[0] >= 100000 and uid[1] == 199999 and uid[2] == [], uid
    assert lines[7] in ("PermissionError", "FileNotFoundError", "OSError")  # nothing of the host is writable
    assert lines[8].startswith("/tmp/home-")
    alice.close()


def _host_pids_with(marker: str) -> list[int]:
    found = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        found.append(int(p))
            except OSError:
                pass
    return found


def test_a_process_a_cell_starts_dies_with_its_worker_even_in_a_session_of_its_own(team):
    d, proc, url = team
    bob = client(url, "bob", "s-sb-2")
    marker = f"98765{os.getpid()}.5"  # a sleep of days, this run's own
    out, _ = run(bob, "c1", "import subprocess\n"
                 f"p = subprocess.Popen(['sleep', '{marker}'], start_new_session=True)\nprint(p.pid, p.poll())")
    found, deadline = [], time.monotonic() + 10
    while not found and time.monotonic() < deadline:  # (another namespace's process: nothing to wait on)
        found = _host_pids_with(marker)
        if not found:
            time.sleep(0.05)
    assert len(found) == 1, f"the cell's process (its pid, poll there: {out.strip()}) on the host: {found}"
    (pid,) = found
    bob.send({"type": messages.RELEASE})
    assert until(bob, messages.STATUS_REPLY)["released"] == 1
    assert wait_pid_exit(pid, 20), "the process the cell started outlived its worker"
    bob.close()


def test_another_users_worker_its_secret_and_its_shared_memory_are_out_of_sight(team):
    d, proc, url = team
    for name in ("alice", "bob"):  # (what a run without the sandbox left in the host's /dev/shm)
        if os.path.exists(f"/dev/shm/jupyter-gpu-{name}-mark"):
            os.unlink(f"/dev/shm/jupyter-gpu-{name}-mark")
    alice, bob = client(url, "alice", "s-sb-3a"), client(url, "bob", "s-sb-3b")
    # bob first: a process of his that would watch for a starting worker, then his /dev/shm
    run(bob, "b1", "import os\nopen('/dev/shm/jupyter-gpu-bob-mark', 'w').write('bob')\nprint('ok')")
    # alice's worker starts while bob's waits; she writes into her /dev/shm
    out, a = run(alice, "a1", "import os\nopen('/dev/shm/jupyter-gpu-alice-mark', 'w').write('alice')\n"
                 "print(sorted(os.listdir('/dev/shm')))")
    assert out.strip() == "['jupyter-gpu-alice-mark']", out  # bob's is not there
    out, _ = run(bob, "b2", "import os\nprint(sorted(os.listdir('/dev/shm')), sorted(p for p in os.listdir('/proc') "
                 "if p.isdigit()))\n"
                 "secrets = []\nfor p in filter(str.isdigit, os.listdir('/proc')):\n"
                 "    try:\n        secrets += [x for x in open(f'/proc/{p}/environ', 'rb').read().split(b'\\0') "
                 "if b'SECRET' in x]\n    except OSError:\n        pass\nprint(secrets)")
    shm_seen, procs_line = out.splitlines()[0].split("] [")
    assert shm_seen == "['jupyter-gpu-bob-mark'", out  # alice's segment is not in bob's /dev/shm
    assert out.splitlines()[1] == "[]"  # no process with a secret in its environment in his sight
    assert not os.path.exists("/dev/shm/jupyter-gpu-alice-mark")  # nor the host's: hers is private too
    # the kernel is told its values cannot go by shared memory to these workers
    assert alice.welcome.get("host_id") is None
    # no worker process on the host carries a registration secret in its environment
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                assert b"JUPYTER_GPU_WORKER_SECRET=" not in f.read(), pid
        except OSError:
            pass
    alice.close()
    bob.close()


def test_no_lane_under_users_and_a_cell_is_billed_what_the_backend_saw(team):
    d, proc, url = team
    carol = client(url, "carol", "s-sb-4")
    run(carol, "c1", "print(1)")
    # a cell that rewrites the worker's clock and meter as it likes: billed from the backend's clock
    out, done = run(carol, "c2", "import time, jupyter_gpu_worker.meter as m\n_sleep = time.sleep\n"
                    "time.monotonic = time.perf_counter = lambda: 0.0\n"
                    "m.LaneMeter.report = lambda self, *a, **k: None\n_sleep(2)\nprint('done')")
    assert "lane" not in done, done  # no direct lane: every cell passes the backend
    assert done["timings"]["run"] >= 2.0, done["timings"]  # what billing.cell charges: the backend's clock
    carol.close()


def test_a_runtime_without_a_sandbox_is_refused_under_users_unless_insecure(tmp_path):
    pytest.importorskip("ray", reason="ray is not installed")
    users = tmp_path / "users.json"
    users.write_text(json.dumps({"alice": "t-a"}))
    users.chmod(0o600)
    argv = [sys.executable, "-m", "jupyter_gpu_backend", "--users", str(users), "--runtime", "ray"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert out.returncode != 0
    assert "--users on the ray runtime: it runs every user's workers alike" in out.stderr, out.stderr[-2000:]
    assert "--insecure-shared-workers" in out.stderr


def test_without_root_the_local_runtime_says_it_cannot_sandbox(monkeypatch):
    from jupyter_gpu_backend.runtimes.local import LocalRuntime

    monkeypatch.setenv("JUPYTER_GPU_ZYGOTE", "0")
    runtime = LocalRuntime("ws://127.0.0.1:1/ws/worker")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    why = runtime.isolate_users(["alice"])
    assert why is not None and "root" in why and runtime.sandbox is None and runtime.uid_for("alice") is None
    monkeypatch.undo()
    assert runtime.isolate_users(["bob", "alice"]) is None
    assert runtime.uid_for("alice") != runtime.uid_for("bob") and not runtime.shares_host


def test_a_notebook_works_as_before_in_its_sandbox(team, tmp_path):
    """The sandbox takes nothing a user's notebook needs: values both ways (by the wire), a figure,
    its own files in its HOME, a subprocess, an Image built for it (readable by the workers' group)."""
    from jupyter_gpu.notebook.image import from_pip_line
    from tests.conftest import LiveKernel, make_kernel_env
    from tests.e2e.helpers import LOAD

    d, proc, url = team
    env = make_kernel_env(tmp_path)
    env.update(JUPYTER_GPU_URL=url, JUPYTER_GPU_TOKEN=TOKENS["alice"])
    made = from_pip_line('"toolz==0.12.1"').spec()["hashes"][1:]
    k = LiveKernel(env)
    try:
        k.run(LOAD)
        k.run("import numpy as np\nx = np.arange(1_000_000, dtype='float64')")
        cell = k.run("%%gpu\nimport os, subprocess\ny = x * 2\nopen(os.path.expanduser('~/mine.txt'), 'w').write('hi')\n"
                     "print(y.sum(), open(os.path.expanduser('~/mine.txt')).read(), "
                     "subprocess.run(['echo', 'ok'], capture_output=True, text=True).stdout.strip())")
        assert cell.stdout() == f"{2 * sum(range(1_000_000)):.1f} hi ok\n", cell.stderr()
        assert k.run("print(y[-1])").stdout() == "1999998.0\n"  # back in the kernel
        pip = k.run('%%gpu --pip "toolz==0.12.1"\nimport toolz, os\nprint(toolz.__version__, os.getuid() >= 200000)',
                    timeout=300)
        assert pip.stdout() == "0.12.1 True\n", pip.stderr()[-2000:]
    finally:
        k.shutdown()
        import shutil

        from jupyter_gpu_backend.runtimes.envs import default_root

        for h in made:
            shutil.rmtree(default_root() / h, ignore_errors=True)


def test_a_spawned_worker_is_sandboxed_too(tmp_path):
    """Without a zygote (starting up, or JUPYTER_GPU_ZYGOTE=0) a worker is spawned: it enters the
    same sandbox (one more fork, a keeper outside), with its secret from an inherited descriptor."""
    users = tmp_path / "users.json"
    users.write_text(json.dumps(TOKENS))
    users.chmod(0o600)
    proc, url = start_backend(tmp_path, "--users", str(users), env={"JUPYTER_GPU_ZYGOTE": "0"})
    try:
        alice = client(url, "alice", "s-sb-spawn")
        marker = f"98766{os.getpid()}.5"
        out, done = run(alice, "c1", "import os, subprocess\n"
                        f"p = subprocess.Popen(['sleep', '{marker}'], start_new_session=True)\n"
                        "print(os.getpid(), os.getuid() >= 200000, sorted(p for p in os.listdir('/proc') if p.isdigit()))")
        assert done["start_method"] == "spawn" and out.startswith("1 True ['1', "), (done, out)
        (pid,) = _host_pids_with(marker)
        alice.send({"type": messages.RELEASE})
        assert until(alice, messages.STATUS_REPLY)["released"] == 1
        assert wait_pid_exit(pid, 20), "the process the cell started outlived its spawned worker"
        alice.close()
    finally:
        stop_backend(proc)
