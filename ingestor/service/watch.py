"""``reload:`` settings and the configuration file watcher behind ``reload.watch: true``.

The watcher polls: every ``reload.interval`` it looks at the file's modification time and size (one ``stat``),
and only when either moved does it read the file and compare a hash of its content, so an editor that rewrites
the file unchanged (or ``touch``) does not cause a reload.  Polling was chosen over inotify on purpose: it needs
no dependency, works on every file system (bind mounts, NFS, the symlink swaps of a ConfigMap) and one ``stat``
a second costs nothing.  A file caught half-written is simply rejected by the reload's validation, and the
next poll picks up the finished file.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field

from ingestor.contract import Duration, StrictModel


class ReloadConfig(StrictModel):
    """``reload:`` how the daemon picks up an edited configuration file (SIGHUP always works)."""

    watch: bool = Field(default=False, description="reload when the file changes, without a SIGHUP")
    interval: Duration = Field(default=1.0, ge=0.1, le=60, description="how often the watcher looks at the file")


@dataclass(frozen=True)
class FileSignature:
    """What a file looked like: modification time and size (cheap) and a hash of its content."""

    mtime_ns: int
    size: int
    digest: str


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


def signature(path: Path) -> FileSignature | None:
    """The file's signature now, or None when it cannot be read (it is being replaced, or was removed)."""
    seen = _stat(path)
    if seen is None:
        return None
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None
    return FileSignature(*seen, digest)


class FileWatcher:
    """Tells whether a file's content changed since the last look (or since :meth:`remember`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.last = signature(path)

    def remember(self, seen: FileSignature | None) -> None:
        """The content a reload just read (a SIGHUP's reload): no reason to reload it again."""
        if seen is not None:
            self.last = seen

    def changed(self) -> bool:
        """True when the content differs from the last one seen; the new content becomes the last one."""
        stat = _stat(self.path)
        if stat is None:
            return False   # gone for a moment (an editor's rename): look again next time
        if self.last is not None and stat == (self.last.mtime_ns, self.last.size):
            return False
        now = signature(self.path)
        if now is None:
            return False
        before, self.last = self.last, now
        return before is None or now.digest != before.digest
