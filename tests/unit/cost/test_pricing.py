"""The price catalog: shipped entries are sourced and dated, a team's file overrides and extends."""
from __future__ import annotations

import subprocess
import sys

import pytest

from jupyter_gpu.cost import pricing


@pytest.fixture(autouse=True)
def _shipped_only(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # never the developer's own override file
    monkeypatch.delenv("JUPYTER_GPU_PRICES", raising=False)
    pricing.reload()
    yield
    monkeypatch.delenv("JUPYTER_GPU_PRICES", raising=False)
    pricing.reload()


def test_every_shipped_entry_has_a_source_and_a_date_or_says_why_not():
    for e in pricing.catalog():
        assert e.origin == "shipped"
        assert e.source.startswith("https://"), e
        assert e.as_of or e.unsourced, f"{e.provider} {e.gpu}: undated and not marked unsourced"
        assert e.price > 0 and e.granularity_s >= 1 and e.minimum_s >= 0


def test_price_for_keeps_the_footer_fields():
    p = pricing.price_for("H100")
    d = p.as_dict()
    assert (p.serverless_per_s, p.dedicated_per_h) == (0.001097, 6.88)
    assert d["provider"] == "Modal" and d["as_of"] == "2026-10-04" and d["source"] == "https://modal.com/pricing"
    assert d["dedicated_provider"].startswith("AWS") and d["dedicated_as_of"] == "2026-01-21"
    assert d["profile"]["bills_cold_start"] is True and d["memory_gib"] == 80
    assert pricing.PRICES["H100"] == p
    assert "no price known for Z1" in pricing.price_for("Z1").note


def test_the_cpu_device_is_priced_per_core_as_cpu_never_as_a_gpu():
    two, eight = pricing.price_for("cpu", "cpu (2 cores)"), pricing.price_for("cpu", "cpu (8 cores)")
    # Modal's CPU list price per core-second, AWS's on-demand price per vCPU-hour: times the cores
    assert (two.per_core_s, two.per_core_h) == (0.0000131, 0.0408)
    assert two.serverless_per_s == 2 * 0.0000131 and two.dedicated_per_h == 2 * 0.0408 and two.cores == 2
    assert eight.serverless_per_s == 8 * 0.0000131 and eight.dedicated_per_h == 8 * 0.0408
    assert two.basis == "cpu (2 cores) at Modal CPU list price 2026-10-04"
    d = two.as_dict()
    assert d["source"] == "https://modal.com/pricing" and d["dedicated_as_of"] == "2026-06-17"
    assert d["dedicated_source"].startswith("https://") and d["dedicated_minimum_s"] == 60
    assert d["memory_gib"] is None  # never offered as a GPU that fits a model (right-sizing)
    assert "H100" not in two.note and "GPU" not in two.basis
    # without the worker's device string: this machine's cores (what a local worker reports)
    assert pricing.price_for("cpu").cores == pricing.local_cores()
    assert {e.per for e in pricing.catalog() if e.gpu == "cpu"} == {"core"}
    assert {e.per for e in pricing.catalog() if e.gpu != "cpu"} == {"device"}


def test_a_team_file_can_price_the_cpu_device_at_zero(tmp_path, monkeypatch):
    f = tmp_path / "team.toml"
    f.write_text('''
[[serverless]]
gpu = "cpu"
provider = "ours"
per_s = 0
source = "https://example.org/our-laptops"

[[dedicated]]
gpu = "cpu"
provider = "ours"
per_h = 0
source = "https://example.org/our-laptops"
''')
    monkeypatch.setenv("JUPYTER_GPU_PRICES", str(f))
    pricing.reload()
    p = pricing.price_for("cpu", "cpu (4 cores)")
    assert (p.serverless_per_s, p.dedicated_per_h, p.origin) == (0.0, 0.0, str(f))
    assert pricing.price_for("H100").serverless_per_s == 0.001097  # the shipped prices stay


def test_a_team_file_overrides_and_extends(tmp_path, monkeypatch):
    f = tmp_path / "team.toml"
    f.write_text('''
[defaults]
dedicated = "ours"

[profiles.ours-serverless]
bills_cold_start = false
bills_keep_warm = true
unit = "cell"

[[serverless]]
gpu = "H100"
provider = "modal"
provider_name = "Modal (negotiated)"
per_s = 0.0009
as_of = "2026-11-01"
source = "https://example.org/our-contract"
granularity_s = 5
minimum_s = 30
profile = "ours-serverless"

[[dedicated]]
gpu = "H100"
provider = "ours"
provider_name = "our own box"
per_h = 0
as_of = "2026-11-01"
source = "https://example.org/our-box"

[[dedicated]]
gpu = "RTX9"
provider = "ours"
per_h = 1.5
''')
    monkeypatch.setenv("JUPYTER_GPU_PRICES", str(f))
    pricing.reload()
    p = pricing.price_for("H100")
    assert p.serverless_per_s == 0.0009 and p.serverless_provider == "Modal (negotiated)"
    assert (p.granularity_s, p.minimum_s, p.profile.bills_cold_start, p.profile.unit) == (5, 30, False, "cell")
    assert p.dedicated_per_h == 0 and p.dedicated_provider == "our own box"
    entries = {(e.kind, e.gpu, e.provider): e for e in pricing.catalog()}
    assert entries[("serverless", "H100", "modal")].origin == str(f)
    assert entries[("serverless", "H100", "runpod")].origin == "shipped"  # untouched entries stay
    assert entries[("dedicated", "RTX9", "ours")].unsourced == "no source given"
    assert pricing.price_for("A100").serverless_per_s == 0.000583  # other GPUs: shipped defaults
    # the CLI prints where each number came from
    out = subprocess.run([sys.executable, "-c", "from jupyter_gpu.cli import main; main()", "prices", "--gpu", "H100"], capture_output=True,
                         text=True, env={**__import__("os").environ}, check=True).stdout
    line = next(l for l in out.splitlines() if "Modal" in l or "modal" in l)
    assert "$0.000900/s" in line and str(f) in line
    assert "ours *" in out and "$0.000/h" in out


def test_a_broken_team_file_is_an_error_naming_it(tmp_path, monkeypatch):
    f = tmp_path / "bad.toml"
    f.write_text("[[serverless]\n")
    monkeypatch.setenv("JUPYTER_GPU_PRICES", str(f))
    with pytest.raises(ValueError, match="bad.toml"):
        pricing.reload()
