"""Every file the backend keeps is its user's alone: files 0600, directories 0700 (issue 24).

The ledger holds every user's cells, jobs/ their results, the environment cache what their images
installed, the workers' logs what their cells printed: none of it is for the host's other users.
The modes are set where each is made (not with a process umask, which the workers would inherit
and which would change the files a cell writes from what a local cell writes), and a file or
directory of ours left looser by an older version is tightened when it is opened again.
"""
from __future__ import annotations

import os

FILE, DIR = 0o600, 0o700


def private_dir(path) -> str:
    """``path`` made (with the levels above it that are missing, each 0700) and tightened to 0700
    when it is ours; directories above it that existed already are left as they are."""
    path = os.path.abspath(os.fspath(path))
    missing = []
    p = path
    while not os.path.isdir(p):
        missing.append(p)
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    for d in reversed(missing):
        try:
            os.mkdir(d, DIR)
        except FileExistsError:
            pass
    tighten(path, DIR)
    return path


def open_private(path, flags: int = os.O_WRONLY | os.O_CREAT | os.O_TRUNC) -> int:
    """An fd of ``path``, created 0600 (a file of ours found looser is tightened)."""
    fd = os.open(os.fspath(path), flags | getattr(os, "O_CLOEXEC", 0), FILE)
    try:
        st = os.fstat(fd)
        if st.st_uid == os.getuid() and st.st_mode & 0o077:
            os.fchmod(fd, FILE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def private_file(path, mode: str = "wb"):
    """``open(path, mode)`` for a file of the backend's ("w", "wb", "a", "ab"), created 0600."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if mode.startswith("a") else os.O_TRUNC)
    return os.fdopen(open_private(path, flags), mode)


def tighten(path, mode: int = FILE) -> None:
    """Take group and other bits off ``path`` if it exists and is ours."""
    try:
        st = os.stat(path)
    except OSError:
        return
    if st.st_uid == os.getuid() and st.st_mode & 0o077:
        os.chmod(path, mode)
