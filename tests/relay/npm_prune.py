"""Prune what npm packages carry for their authors, not for running them.

The SDKs the tests install (LaunchDarkly's browser SDK, the OpenFeature SDKs and providers)
are built in their authors' monorepos, and their source maps, build metafiles, READMEs and
bundlers' region comments ("//" and a relative path up and out of the package) point into
them. Nothing here reads any of those, and a clone of this project must not even seem to
need files outside it, so after every ``npm ci`` they go: the maps, metafiles and markdown
files (not a licence) are deleted, and the comment lines naming a path outside the package
are removed from the JavaScript (lines that are only a comment: the code is otherwise
byte-for-byte what npm installed).

Usage: ``python tests/relay/npm_prune.py NODE_MODULES_DIR`` (the Makefile, for
tests/browser), or ``prune(path)`` (the OFREP providers' fixture).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

__all__ = ["prune"]

_DELETE = re.compile(r".*\.map|metafile-.*\.json|(?!licen[cs]e).*\.md", re.IGNORECASE)
_SCRIPT = re.compile(r".*\.(c|m)?js")
_OUTSIDE_COMMENT = re.compile(rb"^[ \t]*//[ \t]*\.\./[^\n]*\n", re.MULTILINE)


def prune(node_modules: Path) -> None:
    """Apply the module's rules to every file under ``node_modules``."""
    for path in node_modules.rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        if _DELETE.fullmatch(path.name):
            path.unlink()
        elif _SCRIPT.fullmatch(path.name):
            text = path.read_bytes()
            if b"../" in text:
                pruned = _OUTSIDE_COMMENT.sub(b"", text)
                if pruned != text:
                    path.write_bytes(pruned)


if __name__ == "__main__":  # pragma: no cover
    prune(Path(sys.argv[1]))
