"""Getting official dataset files onto disk: download with MD5 check, safe tar extraction.

Nothing here parses data; loaders call :func:`download` only when files are missing and
``download=True``, and turn any failure into one line telling the user where to put the files.
"""
from __future__ import annotations

import hashlib
import shutil
import tarfile
import urllib.request
from pathlib import Path, PurePosixPath

#: Seconds to wait for the server; a blocked network fails fast instead of hanging.
TIMEOUT_S = 15


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    """Hex MD5 of a file (integrity check against the published checksums, not security)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, dest: Path, md5: str | None = None) -> Path:
    """Download ``url`` to ``dest`` (via ``dest.part``), verify ``md5`` if given, return ``dest``.

    Raises ``OSError`` (e.g. ``urllib.error.URLError``) when the network fails and ``ValueError``
    on a checksum mismatch; a partial file is never left at ``dest``.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp, open(part, "wb") as out:
            shutil.copyfileobj(resp, out)
        if md5 is not None and (got := md5sum(part)) != md5:
            raise ValueError(f"{url}: MD5 {got} does not match the published {md5}")
        part.replace(dest)
    finally:
        part.unlink(missing_ok=True)
    return dest


def fetch_or_explain(name: str, url: str, dest: Path, md5: str | None, allowed: bool,
                     hint: str) -> Path:
    """Download ``url`` to ``dest`` if ``allowed``; otherwise, or on failure, raise one line.

    ``hint`` says what to place where, e.g. ``"put cifar-10-python.tar.gz in /data"``.
    """
    if not allowed:
        raise FileNotFoundError(f"{name}: files not found and download=False; {hint}")
    try:
        return download(url, dest, md5)
    except OSError as err:
        reason = getattr(err, "reason", err)
        raise FileNotFoundError(f"{name}: could not download {url} ({type(err).__name__}: "
                                f"{reason}); {hint}") from err


def _check_member(archive: Path, member: tarfile.TarInfo, dest: Path) -> None:
    name = member.name
    parts = name.replace("\\", "/").split("/")
    absolute = PurePosixPath(name).is_absolute() or name.startswith("\\") or ":" in parts[0]
    if absolute or ".." in parts:
        raise ValueError(f"{archive}: refusing unsafe member path {name!r}")
    if not (member.isfile() or member.isdir()):
        raise ValueError(f"{archive}: refusing member {name!r} (links and devices not allowed)")
    target = (dest / name).resolve()
    if target != dest and dest not in target.parents:
        raise ValueError(f"{archive}: member {name!r} would land outside {dest}")


def safe_extract(archive: Path, dest: Path) -> None:
    """Extract a tar(.gz) into ``dest`` after checking every member.

    Rejects absolute paths, ``..`` components, drive letters, links and special files; nothing is
    extracted if any member is rejected. Uses tarfile's ``"data"`` filter too where available.
    """
    dest = Path(dest).resolve()
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        for member in members:
            _check_member(archive, member, dest)
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, members=members, filter="data")
        else:  # pragma: no cover - Python without extraction filters; members are checked above
            tar.extractall(dest, members=members)
