"""npm_prune: what an installed package carries for its authors goes; code and licences stay."""

from __future__ import annotations

from pathlib import Path

from npm_prune import prune


def test_prune_deletes_maps_metafiles_docs_and_outside_comments(tmp_path: Path) -> None:
    pkg = tmp_path / "node_modules" / "@scope" / "sdk"
    (pkg / "dist").mkdir(parents=True)
    for name in ("index.js.map", "metafile-cjs.json", "README.md", "CHANGELOG.MD"):
        (pkg / name).write_text("x")
    (pkg / "LICENSE.md").write_text("licence")
    (pkg / "LICENSE").write_text("licence")
    (pkg / "dist" / "index.js").write_bytes(
        b"var a = 1;\n  // ../common/src/errors/index.ts\nvar b = '../x'; // ../kept: code\n"
        b"// local comment\n"
    )
    (pkg / "dist" / "plain.mjs").write_bytes(b"export const c = 2;\n")

    prune(tmp_path / "node_modules")

    left = sorted(p.relative_to(pkg).as_posix() for p in pkg.rglob("*") if p.is_file())
    assert left == ["LICENSE", "LICENSE.md", "dist/index.js", "dist/plain.mjs"]
    assert (pkg / "dist" / "index.js").read_bytes() == (
        b"var a = 1;\nvar b = '../x'; // ../kept: code\n// local comment\n"
    )
    assert (pkg / "dist" / "plain.mjs").read_bytes() == b"export const c = 2;\n"
