"""Every JUPYTER_GPU_* variable the code or the README names is in the one table of settings."""
from __future__ import annotations

import re
from pathlib import Path

from jupyter_gpu._wire import settings

ROOT = Path(__file__).resolve().parents[3]
NAME = re.compile(r"JUPYTER_GPU_[A-Z][A-Z0-9_]*[A-Z0-9]")


def test_every_variable_named_in_the_code_or_the_readme_is_in_the_table():
    places: dict[str, set] = {}
    files = [ROOT / "README.md", ROOT / "Makefile"]
    for folder in ("jupyter_gpu", "backend", "worker_image"):
        files += [p for p in (ROOT / folder).rglob("*") if p.suffix in (".py", ".toml", ".sh", "") and p.is_file()
                  and "node_modules" not in p.parts and "labextension" not in p.parts]
    for path in files:
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for name in NAME.findall(text):
            places.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    missing = {n: sorted(p) for n, p in places.items() if n not in settings.TABLE}
    assert not missing, f"JUPYTER_GPU_* variables missing from jupyter_gpu/_wire/settings.py: {missing}"


def test_each_setting_says_what_it_means_and_reads_its_default():
    for s in settings.TABLE.values():
        assert s.meaning and s.who, s.name
        assert s.get({}) == s.default
        assert s.get({s.name: "x"}) == "x"
