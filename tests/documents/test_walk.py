"""File discovery: ignores, .gitignore, binary and oversize skips, symlink loops, confinement."""

from __future__ import annotations

import os

import pytest

from pirag.daemon.services.walk import OutsideRoots, match_glob, resolve_roots, walk


def tree(root, files):
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())


def names(result, root):
    return sorted(os.path.relpath(f.path, root) for f in result.files)


def test_default_ignores_and_gitignore(tmp_path):
    tree(tmp_path, {
        "a.py": "x", "docs/b.md": "y", ".git/config": "z", "node_modules/m/index.js": "z", ".venv/lib/x.py": "z",
        "build/out.txt": "z", "__pycache__/a.pyc": b"\x00", ".gitignore": "*.log\n/secret/\ndocs/**/draft*\n!keep.log\n",
        "app.log": "z", "keep.log": "k", "secret/s.txt": "z", "sub/secret/t.txt": "ok", "docs/x/draft1.md": "z",
        "sub/.gitignore": "local.txt\n", "sub/local.txt": "z", "local.txt": "top",
    })
    result = walk([str(tmp_path)], None, 1 << 20)
    assert names(result, tmp_path) == [".gitignore", "a.py", "docs/b.md", "keep.log", "local.txt",
                                       "sub/.gitignore", "sub/secret/t.txt"]


def test_binary_and_oversize_are_skipped_with_reasons(tmp_path):
    tree(tmp_path, {"img.png": b"\x89PNG", "big.txt": "x" * 5000, "ok.txt": "fine"})
    result = walk([str(tmp_path)], None, 1000)
    assert names(result, tmp_path) == ["ok.txt"]
    reasons = dict((os.path.basename(p), r) for p, r in result.skipped)
    assert "binary" in reasons["img.png"] and "max_file_bytes" in reasons["big.txt"]


def test_symlink_loop_is_survived(tmp_path):
    tree(tmp_path, {"d/a.txt": "a"})
    os.symlink(tmp_path / "d", tmp_path / "d" / "loop")
    os.symlink(tmp_path, tmp_path / "d" / "up")
    result = walk([str(tmp_path / "d")], [tmp_path.resolve()], 1 << 20)
    assert [os.path.basename(f.path) for f in result.files].count("a.txt") >= 1
    assert any("visited" in reason for _, reason in result.skipped)


def test_confinement_after_resolving_symlinks(tmp_path):
    inside, outside = tmp_path / "inside", tmp_path / "outside"
    tree(inside, {"ok.txt": "ok"})
    tree(outside, {"secret.txt": "secret"})
    os.symlink(outside / "secret.txt", inside / "link.txt")
    os.symlink(outside, inside / "linkdir")
    roots = resolve_roots([str(inside)])
    result = walk([str(inside)], roots, 1 << 20)
    assert names(result, inside) == ["ok.txt"]
    assert sum("outside the allowed roots" in reason for _, reason in result.skipped) == 2
    with pytest.raises(OutsideRoots):
        walk([str(outside)], roots, 1 << 20)
    with pytest.raises(OutsideRoots):
        walk([str(inside / "link.txt")], roots, 1 << 20)
    with pytest.raises(OutsideRoots):
        walk([str(inside / ".." / "outside")], roots, 1 << 20)


def test_match_glob():
    assert match_glob("/a/b/c.md", "*.md")
    assert match_glob("/a/docs/c.md", "docs/*.md")
    assert match_glob("/a/docs/x/y/c.md", "docs/**/*.md")
    assert not match_glob("/a/docs/c.py", "docs/*.md")
