"""What the source distribution ships: everything README.md links to."""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_the_sdist_includes_every_file_the_readme_links_to():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    sdist = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["sdist"]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    linked = {target.split("#")[0] for target in re.findall(r"\]\(([^)\s]+)\)", readme)
              if not re.match(r"[a-z]+:|#", target)}
    assert "docs/jupyterlab-sidebar.png" in linked
    for path in linked:
        assert (ROOT / path).exists(), f"README.md links to {path}, which is not in the repository"
        assert any(path == top or path.startswith(top.rstrip("/") + "/") for top in sdist["include"]), (
            f"README.md links to {path}, which the sdist leaves out (pyproject.toml [tool.hatch.build.targets.sdist] include)")


def test_the_wheel_installs_the_config_that_enables_the_server_extension():
    """pip install puts jupyter-config/ into etc/jupyter/, where jupyter_server finds the extension on."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    from jupyter_server.extension.manager import ExtensionPackage

    build = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]
    source = "jupyter-config/jupyter_server_config.d/greenjupyter.json"
    assert build["wheel"]["shared-data"][source] == "etc/jupyter/jupyter_server_config.d/greenjupyter.json"
    assert "jupyter-config" in build["sdist"]["include"]
    config = json.loads((ROOT / source).read_text())
    assert config == {"ServerApp": {"jpserver_extensions": {"greenjupyter": True}}}
    package = ExtensionPackage(name="greenjupyter", enabled=True)  # what the server does with that name
    assert list(package.extension_points) == ["greenjupyter.server"] and package.validate()
