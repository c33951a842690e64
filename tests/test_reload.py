"""%reload_ext greenjupyter in a real IPython shell: values set with %carbon config stay in force."""

import sqlite3
import time


from greenjupyter import runtime



def previews(path):
    db = sqlite3.connect(path)
    try:
        return [preview for (preview,) in db.execute("SELECT source_preview FROM cells ORDER BY rowid")]
    finally:
        db.close()


def written(path, preview, within_s=5.0):
    """True once ``preview``'s row is in the file at ``path``: rows may be written on the sampler thread."""
    deadline = time.monotonic() + within_s
    while preview not in previews(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def in_force(*names):
    settings = runtime.get_settings()
    return {name: (getattr(settings, name), settings.origin[name]) for name in names}


def test_values_set_in_the_kernel_survive_a_reload(shell, tmp_path, monkeypatch):
    first, second = runtime.get_store().path, str(tmp_path / "moved" / "history.sqlite")
    assert shell.run_cell(f"%carbon config region=FR pue=1.1 db_path={second}").success
    shell.run_cell("x = 1", store_history=True)
    assert runtime.get_store().path == first  # db_path applies from the next %reload_ext
    # Files and environment are read again on reload, but what the kernel set wins, as before it.
    monkeypatch.setenv("GREENJUPYTER_PUE", "1.5")
    monkeypatch.setenv("GREENJUPYTER_UNITS", "imperial")
    assert shell.run_cell("%reload_ext greenjupyter").success
    assert in_force("region", "pue", "db_path", "units") == {
        "region": ("FR", "%carbon config"),
        "pue": (1.1, "%carbon config"),
        "db_path": (second, "%carbon config"),
        "units": ("imperial", "environment GREENJUPYTER_UNITS"),
    }
    assert runtime.get_store().path == second
    grid = runtime.current_grid()
    assert (grid.region, grid.pue) == ("FR", 1.1)
    shell.run_cell("y_after_reload = 2", store_history=True)
    assert written(second, "y_after_reload = 2") and "y_after_reload = 2" not in previews(first)
    assert "x = 1" in previews(first)  # written before the reload, where db_path then led


def test_a_second_reload_keeps_them_too_and_a_new_value_still_wins(shell):
    shell.run_cell("%carbon config region=DE")
    shell.run_cell("%reload_ext greenjupyter")
    shell.run_cell("%carbon config pue=1.2")
    shell.run_cell("%reload_ext greenjupyter")
    shell.run_cell("%reload_ext greenjupyter")
    assert in_force("region", "pue") == {"region": ("DE", "%carbon config"), "pue": (1.2, "%carbon config")}


def test_a_fresh_start_forgets_them(shell):
    # The kernel keeps its values; a full shutdown (a new process, or between tests) does not.
    shell.run_cell("%carbon config region=DE")
    runtime.shutdown()
    assert in_force("region") == {"region": ("", "default")}
