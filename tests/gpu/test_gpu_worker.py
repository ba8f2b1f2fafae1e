"""GPU-only paths: run where NVML sees an NVIDIA GPU, skipped (with the reason shown) elsewhere."""
import re

import pytest

from tests.e2e.helpers import footers


def _nvml_gpu_names() -> list[str]:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return []
    try:
        names = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            n = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i))
            names.append(n.decode() if isinstance(n, bytes) else n)
        return names
    finally:
        pynvml.nvmlShutdown()


GPUS = _nvml_gpu_names()
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not GPUS, reason="no NVIDIA GPU visible to NVML here: GPU-only paths not exercised"),
    pytest.mark.timeout(300),
]


def test_local_runtime_offers_the_gpu_and_a_cell_runs_on_it(run_notebook):
    from jupyter_gpu_worker.device import gpu_type_of

    gpu = gpu_type_of(GPUS[0])
    nb = run_notebook(
        [
            "%load_ext jupyter_gpu",
            f"%%gpu --gpu {gpu}\nimport torch\nprint(torch.cuda.is_available(), torch.cuda.device_count())\n"
            "x = torch.ones(1024, device='cuda').sum().item()",
            "print(x)",
        ],
        timeout=300,
    )
    remote = nb.cells[1]
    text = "".join(o.get("text", "") for o in remote.outputs if o.output_type == "stream")
    assert text.startswith("True 1"), text  # exactly its own GPU is visible
    f = footers(remote)[-1]
    assert f["gpu"] == gpu and f["device"] == GPUS[0] and f["price"]["serverless_per_s"] > 0
    assert "".join(o.get("text", "") for o in nb.cells[2].outputs).strip() == "1024.0"


def test_cpu_worker_on_a_gpu_machine_sees_no_gpu(run_notebook):
    nb = run_notebook(
        ["%load_ext jupyter_gpu", "%%gpu --gpu cpu\nimport torch\nprint(torch.cuda.is_available())"], timeout=300
    )
    cell = nb.cells[1]
    assert "False" in "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
    assert footers(cell)[-1]["device"].startswith("cpu (")


def test_the_footer_reports_the_cells_peak_gpu_memory_and_utilisation(run_notebook):
    from jupyter_gpu_worker.device import gpu_type_of

    gpu = gpu_type_of(GPUS[0])
    nb = run_notebook(
        [
            "%load_ext jupyter_gpu",
            f"%%gpu --gpu {gpu} --no-out\nimport torch, time\n"
            "a = torch.empty(2 * 1024**3, dtype=torch.uint8, device='cuda')  # 2 GiB held\n"
            "b = torch.randn(4096, 4096, device='cuda')\n"
            "t0 = time.time()\nwhile time.time() - t0 < 1.0:\n    b = b @ b.T / 4096\n"
            "torch.cuda.synchronize()",
        ],
        timeout=300,
    )
    f = footers(nb.cells[1])[-1]
    tm = f["telemetry"]
    assert tm["samples"] >= 10  # sampled while it ran, not only at its ends
    assert tm["peak_memory_bytes"] >= 2 * 1024**3
    assert 0.2 <= tm["mean_utilisation"] <= 1.0, tm  # a second of matmuls keeps the GPU busy
    line = nb.cells[1].outputs[-1]["data"]["text/plain"]
    assert re.search(r"peak \d+\.\d GiB, \d+ % busy", line), line  # the footer line says it


def test_a_cuda_tensor_and_a_model_on_the_gpu_stay_there_as_references(run_notebook):
    """Device memory is never copied back to the kernel (jupyter_gpu/_wire/tensors.py): the names come
    back as references that say what they are, and a later cell uses them where they are."""
    from jupyter_gpu_worker.device import gpu_type_of

    gpu = gpu_type_of(GPUS[0])
    nb = run_notebook(
        [
            "%load_ext jupyter_gpu\nimport jupyter_gpu",
            f"%%gpu --gpu {gpu}\nimport torch\nx = torch.ones(1024, 1024, device='cuda')\n"
            "net = torch.nn.Linear(1024, 8).cuda()\nsmall = x.sum().item()",
            "print(repr(x))\nprint(type(net).__name__, small)\n"
            "print(jupyter_gpu.last_cell()['transfer']['received_bytes'])",
            f"%%gpu --gpu {gpu}\nprint(net(x).shape, x.device)",
        ],
        timeout=300,
    )
    rep, kinds, received = "".join(o.get("text", "") for o in nb.cells[2].outputs).splitlines()
    assert rep.startswith("<remote torch.Tensor [1024, 1024] cuda:0 on "), rep
    assert kinds == "RemoteValue 1048576.0"
    assert int(received) < 4096, "device memory was copied back"
    assert "".join(o.get("text", "") for o in nb.cells[3].outputs).startswith("torch.Size([1024, 8]) cuda:0")
