"""The README's benchmark table is what bench/readme_table.py makes from the committed results file."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load_script():
    spec = importlib.util.spec_from_file_location("readme_table", ROOT / "bench" / "readme_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_table_is_made_from_latest_json():
    script = load_script()
    readme = (ROOT / "README.md").read_text()
    latest = json.loads((ROOT / "bench" / "results" / "latest.json").read_text())
    assert readme.count(script.START) == 1 and readme.count(script.END) == 1
    assert script.replaced(readme, script.render(latest)) == readme, (
        "README.md's benchmark table differs from bench/results/latest.json: run .venv/bin/python bench/readme_table.py")


def test_latest_json_says_where_and_what():
    latest = json.loads((ROOT / "bench" / "results" / "latest.json").read_text())
    assert {"cpu", "cores", "python"} <= set(latest["machine"])
    assert latest["greenjupyter_commit"] and latest["date"]
    figures = [f for bench in latest["benchmarks"].values() for f in bench["figures"]]
    assert figures
    for f in figures:
        assert {"figure", "value", "unit", "result", "target", "pass"} <= set(f)
        assert (f["target"] is None) == (f["pass"] is None), f
