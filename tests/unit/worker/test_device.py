"""Mapping NVML product names to catalog GPU types, and never calling a CPU a GPU."""
import pytest

from jupyter_gpu_worker import device


@pytest.mark.parametrize(
    "name, gpu",
    [
        ("NVIDIA H100 80GB HBM3", "H100"),
        ("NVIDIA H100 PCIe", "H100"),
        ("NVIDIA H200", "H200"),
        ("NVIDIA A100-SXM4-80GB", "A100-80GB"),
        ("NVIDIA A100-SXM4-40GB", "A100"),
        ("NVIDIA A10G", "A10"),
        ("NVIDIA L40S", "L40S"),
        ("NVIDIA L4", "L4"),
        ("Tesla T4", "T4"),
        ("NVIDIA B200", "B200"),
    ],
)
def test_nvml_names_map_to_catalog_types(name, gpu):
    assert device.gpu_type_of(name) == gpu


def test_a_process_with_cuda_hidden_is_a_cpu_worker(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    info = device.describe()
    assert info["gpu"] == "cpu" and info["device"].startswith("cpu (")
