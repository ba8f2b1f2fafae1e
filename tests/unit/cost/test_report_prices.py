"""The report's price lines say what each figure prices: a per-core price shown per worker says for
how many cores (the provider's name may say "per vCPU", which is what the line before it prices)."""
from __future__ import annotations

from jupyter_gpu.cost import report

CPU = {"gpu": "cpu", "serverless_per_s": 0.0000262, "provider": "Modal", "as_of": "2026-10-04",
       "source": "https://modal.com/pricing", "dedicated_per_h": 0.0816,
       "dedicated_provider": "AWS us-east-1 on-demand, per vCPU", "dedicated_as_of": "2026-06-17",
       "dedicated_source": "https://example.org/aws", "per_core_s": 0.0000131, "per_core_h": 0.0408, "cores": 2,
       "basis": "cpu (2 cores) at Modal CPU list price 2026-10-04"}
H100 = {"gpu": "H100", "serverless_per_s": 0.001097, "provider": "Modal", "as_of": "2026-10-04",
        "source": "https://modal.com/pricing", "dedicated_per_h": 6.88, "dedicated_provider": "AWS, per GPU",
        "dedicated_as_of": "2026-01-21", "dedicated_source": "https://example.org/p5"}


def test_a_per_core_price_shown_per_worker_says_for_how_many_cores():
    per_core, per_worker = report._price_lines({"prices": [CPU]})
    assert "priced per core x 2 cores" in per_core and "$0.0408/core-h" in per_core
    assert "serverless $0.000026/s for 2 cores (Modal" in per_worker
    assert "dedicated $0.082/h for 2 cores (AWS us-east-1 on-demand, per vCPU" in per_worker


def test_a_gpu_price_is_per_gpu_as_it_was():
    (line,) = report._price_lines({"prices": [H100]})
    assert "for " not in line.split("(")[0] and "dedicated $6.880/h (AWS, per GPU" in line
