"""Where the tests find the public data files (prompt sets, the LAION aesthetic head) that the repository must
not hold: ``$RTDMD_TEST_SHARED``, default the folder ``shared`` beside the repository's clone. A test that
needs them fails (it does not skip) when they are missing, so that a CI without them is noticed."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

SHARED_ENV = "RTDMD_TEST_SHARED"
DEFAULT = Path(__file__).resolve().parents[1] / ".." / "shared"


def shared_dir() -> Path:
    folder = Path(os.environ.get(SHARED_ENV) or DEFAULT).resolve()
    if not (folder / "datasets" / "README.md").is_file():
        pytest.fail(f"the shared data folder {folder} is missing (expected datasets/README.md there): put it "
                    f"beside the clone or set {SHARED_ENV}", pytrace=False)
    return folder


def published_sha256() -> dict[str, str]:
    """``relative path -> sha256`` as the shared folder's README lists them (the list at its end)."""
    text = (shared_dir() / "datasets" / "README.md").read_text(encoding="utf-8")
    return {path: digest for digest, path in re.findall(r"^\s+([0-9a-f]{64})\s+(\S.*)$", text, re.M)}
