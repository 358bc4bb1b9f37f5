"""Fetching the public data files rtdmd reads (benchmark prompt sets, GenEval's class list): the raw file of the
source repository at a pinned commit, checked against its sha256 and cached.

None of these files is shipped: their licences and sizes keep them out of the package. A file is looked for, in
order:

1. in the cache, ``$RTDMD_CACHE/data/<local path>`` (default ``~/.cache/rtdmd``), if its sha256 is right;
2. in the mirror, ``$RTDMD_DATA_MIRROR/<local path>``, when that variable is set: a local folder laid out like
   the registry's local paths (``geneval/evaluation_metadata.jsonl``, ...), which replaces the download (for
   machines without internet, and for the tests);
3. at its canonical location ``https://raw.githubusercontent.com/<repo>/<commit>/<path>`` (the host can be
   replaced by ``$RTDMD_DATA_URL``, e.g. a proxy of GitHub's raw files).

The bytes are checked (size, then sha256) before anything is written; a file that fails is refused and nothing
is cached. The cache file is written to a temporary file in the same folder and renamed into place
(``os.replace``), so an interrupted or concurrent fetch (several ranks of one launch) never leaves half a file.
Every failure is one :class:`~rtdmd.errors.UserError` line naming the file and the ways to provide it.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from rtdmd.errors import UserError

CACHE_ENV = "RTDMD_CACHE"
MIRROR_ENV = "RTDMD_DATA_MIRROR"
URL_ENV = "RTDMD_DATA_URL"
RAW_HOST = "https://raw.githubusercontent.com"
DEFAULT_CACHE = "~/.cache/rtdmd"
TIMEOUT_S = 60.0


@dataclass(frozen=True)
class RemoteFile:
    """One public file: where it is published (repository, pinned commit, path) and what its bytes must be."""

    local: str  # path in the mirror and cache layout, e.g. "geneval/evaluation_metadata.jsonl"
    repo: str  # GitHub "owner/name"
    commit: str  # 40 hex digits: the content never changes under a pinned commit
    path: str  # path inside the repository
    sha256: str
    size: int  # bytes; a shorter download is reported as truncated
    licence: str

    @property
    def url(self) -> str:
        """The canonical location (recorded in evaluation protocols whatever host served the bytes)."""
        return f"{RAW_HOST}/{self.repo}/{self.commit}/{self.path}"


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


def cache_path(file: RemoteFile) -> Path:
    return cache_root() / "data" / file.local


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch(file: RemoteFile) -> Path:
    """The path of a verified local copy of ``file``: the cached one, else fetched from the mirror or the
    network, checked, and cached atomically (module docstring)."""
    target = cache_path(file)
    if target.is_file() and sha256_bytes(target.read_bytes()) == file.sha256:
        return target
    mirror = os.environ.get(MIRROR_ENV)
    data, origin = (_read_mirror(file, Path(mirror).expanduser()) if mirror else _download(file))
    check_bytes(file, data, origin)
    write_atomic(target, data)
    return target


def how_to_provide(file: RemoteFile) -> str:
    """The two ways to provide a file by hand (for an offline machine)."""
    return (f"fetch {file.url} elsewhere and either set {MIRROR_ENV}=DIR with it at DIR/{file.local}, "
            f"or put it at {cache_path(file)}")


def _read_mirror(file: RemoteFile, mirror: Path) -> tuple[bytes, str]:
    source = mirror / file.local
    if not source.is_file():
        raise UserError(f"{MIRROR_ENV}={mirror} has no {file.local}: copy {file.url} there, or unset "
                        f"{MIRROR_ENV} to download it")
    try:
        return source.read_bytes(), str(source)
    except OSError as err:
        raise UserError(f"cannot read {source} ({err.strerror}): fix its permissions or unset {MIRROR_ENV}") from None


def _download(file: RemoteFile) -> tuple[bytes, str]:
    host = (os.environ.get(URL_ENV) or RAW_HOST).rstrip("/")
    url = f"{host}/{file.repo}/{file.commit}/{file.path}"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            # One byte more than expected, so that an over-long answer is caught without reading it all.
            return response.read(file.size + 1), url
    except http.client.IncompleteRead as err:  # the server closed before Content-Length bytes: truncated
        return err.partial, url
    except urllib.error.HTTPError as err:
        reason = f"HTTP {err.code} {err.reason}"
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        reason = str(getattr(err, "reason", None) or err) or type(err).__name__
    raise UserError(f"cannot download {file.local} from {url} ({reason}): {how_to_provide(file)}")


def check_bytes(file: RemoteFile, data: bytes, origin: str) -> None:
    """Refuse bytes that are not the registered file (a truncated download, another version, a corruption)."""
    if len(data) != file.size:
        what = "truncated" if len(data) < file.size else "too long"
        raise UserError(f"{file.local} from {origin} is {what} ({len(data)} bytes, expected {file.size}): "
                        f"refused, nothing cached; retry, or {how_to_provide(file)}")
    digest = sha256_bytes(data)
    if digest != file.sha256:
        raise UserError(f"{file.local} from {origin} has sha256 {digest}, expected {file.sha256}: refused, "
                        f"nothing cached; {how_to_provide(file)}")


def write_atomic(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` through a temporary file in the same folder and one rename."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    except OSError as err:
        raise UserError(f"cannot write the cache folder {target.parent} ({err.strerror}): set {CACHE_ENV} to a "
                        "writable folder") from None
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)
    except BaseException as err:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise UserError(f"cannot write {target} ({err.strerror}): free space there or set {CACHE_ENV} to "
                            "another folder") from None
        raise
