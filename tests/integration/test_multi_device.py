"""gpu=TYPE:N against a real backend: more devices than a worker can get is refused with the reason,
before anything starts, and the session keeps working.  On a machine without a GPU that is `cpu:2`
(a cpu worker has no devices at all); with GPUs, one more than each type has."""
import json
import urllib.request

import pytest

from jupyter_gpu._wire import messages
from jupyter_gpu._client.connection import BackendClient

from .backend_process import start_backend, stop_backend
from .test_backend_robustness import run_cell

pytestmark = pytest.mark.timeout(120)
TOKEN = "multi-device-token"


def test_more_devices_than_exist_is_refused_with_the_reason(tmp_path):
    proc, url = start_backend(tmp_path, "--token", TOKEN)
    try:
        req = urllib.request.Request(f"{url}/api/runtime", headers={"Authorization": f"token {TOKEN}"})
        with urllib.request.urlopen(req, timeout=30) as r:
            gpus = json.load(r).get("gpus", {})
        c = BackendClient(url, TOKEN, "s-multi")
        assert c.welcome["devices"] == {t: len(ix) for t, ix in gpus.items()}  # what the kernel chooses by
        asks = [("cpu:2", "cpu:2: a cpu worker has no GPU devices")]
        asks += [(f"{t}:{len(ix) + 1}", f"at most {len(ix)} device(s) of type {t}") for t, ix in gpus.items()]
        for i, (spec, reason) in enumerate(asks):
            ev = run_cell(c, "# %%gpu\nx = 1", f"too-many-{i}", gpu=spec)
            assert ev[-1]["type"] == messages.FAILURE and reason in ev[-1]["message"], ev[-1]
            assert not any(e.get("phase") == "cold_start" for e in ev)  # refused before any start
        done = run_cell(c, "# %%gpu\nx = 1", "after")[-1]  # the session is unharmed
        assert done["status"] == "ok" and done["gpu"] == "cpu"
        c.close()
    finally:
        stop_backend(proc)
