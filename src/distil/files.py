"""Files in run directories: atomic writes, the checks before a run writes anything, leftovers of kills.

Every file distil writes into a run directory or beside a model goes through `atomic_write_text` (or the
same write-then-rename pattern): the content goes to a temporary name in the same folder and is renamed
into place, which is atomic on POSIX filesystems. A process killed mid-write leaves such a temporary
behind; `remove_leftovers` clears them when the run starts again.
"""

from __future__ import annotations

import codecs
import errno
import os
import re
import shutil
from pathlib import Path

from distil.errors import ConfigError

__all__ = [
    "atomic_write_text",
    "check_writable",
    "default_cache_dir",
    "looks_local",
    "not_utf8",
    "remove_leftovers",
]


def default_cache_dir() -> Path:
    """Where derived data is kept without ``data.cache_dir``: ``$DISTIL_CACHE``, else ``~/.cache/distil``."""
    return Path(os.environ.get("DISTIL_CACHE", Path.home() / ".cache" / "distil"))


# Temporaries of atomic writes (".name.tmp<pid>", ".name.old<pid>") and of checkpoints (".tmp-step-<N>").
_LEFTOVER = re.compile(r"^\..+\.(tmp|old)\d+$|^\.tmp-step-\d+$")


def atomic_write_text(path: Path, text: str) -> None:
    """Write a UTF-8 text file so that readers see either the old or the new content, never a mix."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def not_utf8(path: Path) -> str | None:
    """Where a file stops being UTF-8 text (``"byte 1404 (0xe9)"``), or ``None`` when all of it is.

    Read in blocks through an incremental decoder, so a file of any size costs one pass and little memory.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(2**20), b""):
            # The decoder keeps up to 3 bytes of an unfinished character from the previous block; the
            # error's positions count from them.
            pending = len(decoder.getstate()[0])
            try:
                decoder.decode(block)
            except UnicodeDecodeError as err:
                return f"byte {offset - pending + err.start} (0x{err.object[err.start]:02x})"
            offset += len(block)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return f"byte {offset - len(decoder.getstate()[0])} (an unfinished character at the end)"
    return None


def _write_probe(folder: Path) -> None:
    """Create and remove a file in ``folder`` (the only sure test of writability: root ignores modes)."""
    probe = folder / f".distil-write-probe{os.getpid()}"
    probe.write_bytes(b"")
    probe.unlink()


def _free_bytes(folder: Path) -> int:
    return shutil.disk_usage(folder).free


def check_writable(folder: Path, *, needed_bytes: int, field: str = "run_dir") -> None:
    """Refuse a folder distil cannot write into, before anything is written there.

    ``folder`` need not exist: its nearest existing ancestor must be a folder that accepts a file and has
    ``needed_bytes`` free. Nothing is left behind.

    Raises:
        ConfigError: A regular file on the path, no write permission (or a read-only filesystem), or less
            free space than ``needed_bytes``; the message names the folder and ``field``.
    """
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(
            f"{field}={folder} lies below {existing}, which is a regular file, not a folder: choose "
            "another location."
        )
    try:
        _write_probe(existing)
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise ConfigError(f"{field}={folder}: no space left on the device of {existing}.") from err
        raise ConfigError(
            f"{field}={folder} is not writable ({existing}: {err.strerror}): choose a folder you can write "
            "to, or fix its permissions."
        ) from err
    free = _free_bytes(existing)
    if free < needed_bytes:
        raise ConfigError(
            f"{field}={folder}: no space left for this run on the device of {existing} ({free / 2**20:.0f} "
            f"MiB free, about {needed_bytes / 2**20:.0f} MiB needed for its checkpoints and student): free "
            "space or choose another location."
        )


def remove_leftovers(folder: Path) -> list[Path]:
    """Delete the temporaries killed writes left in ``folder``, down to a plan's stage checkpoints.

    Returns:
        What was removed.
    """
    if not folder.is_dir():
        return []
    patterns = ("*", "*/*", "*/*/*", "*/*/*/*")
    found = [p for pattern in patterns for p in folder.glob(pattern) if _LEFTOVER.match(p.name)]
    for path in found:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return found


def looks_local(path: str) -> bool:
    """Whether ``path`` names a local folder rather than a Hub id (``name`` or ``owner/name``).

    Local: absolute, starting with ``.`` or ``~``, existing, more than one ``/`` deep, or below an
    existing folder (``runs/x`` where ``runs/`` exists).
    """
    parts = path.replace(os.sep, "/").split("/")
    return (
        os.path.isabs(path)
        or path.startswith((".", "~"))
        or os.path.exists(path)
        or len(parts) > 2
        or (len(parts) == 2 and os.path.isdir(parts[0]))
    )
