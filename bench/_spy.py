"""Count process launches and network use in this process (stdlib only: also runs in the CodeCarbon venv)."""

import os
import socket
import subprocess

counts = {"subprocess": 0, "fork": 0, "socket": 0, "connect": 0}


def _counting(kind, function):
    def wrapper(*args, **kwargs):
        counts[kind] += 1
        return function(*args, **kwargs)

    return wrapper


def install() -> dict:
    """Wrap the ways to start a process or open a socket; return the live counts."""
    subprocess.Popen.__init__ = _counting("subprocess", subprocess.Popen.__init__)
    os.system = _counting("subprocess", os.system)
    os.posix_spawn = _counting("subprocess", os.posix_spawn)
    os.posix_spawnp = _counting("subprocess", os.posix_spawnp)
    os.register_at_fork(before=lambda: counts.__setitem__("fork", counts["fork"] + 1))
    socket.socket.__init__ = _counting("socket", socket.socket.__init__)
    socket.socket.connect = _counting("connect", socket.socket.connect)
    return counts
