"""safe_files: nothing below a trusted root is followed, blocked on or read unbounded.

Each table plants one hostile thing (a link at each position of the path, ``..``, an
absolute path, a FIFO, a device, a directory where a file belongs, a file over the
limit) and checks both the refusal and its goal failing: the secret outside the root is
never returned, the file outside is never written.  The tree tests build what an agent
built (a tree 1,100 levels deep, 2,000 entries) and check that nothing raises.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from pathlib import Path

import pytest

import safe_files

SECRET = b"the harness's secret"
IS_ROOT = os.geteuid() == 0


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    """A trusted root with every kind of hostile entry; the secret lies outside it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(SECRET)
    root = tmp_path / "root"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "file.txt").write_bytes(b"inside")
    (root / "big.txt").write_bytes(b"x" * 101)
    (root / "link_dir").symlink_to(root / "a")  # a link inside the root: refused too
    (root / "a" / "link_b").symlink_to("b")
    (root / "a" / "b" / "link_file").symlink_to("file.txt")
    (root / "out_dir").symlink_to(outside)
    (root / "a" / "out_file").symlink_to(outside / "secret.txt")
    (root / "loop").symlink_to("loop")
    os.mkfifo(root / "fifo")
    if IS_ROOT:
        os.mknod(root / "dev", stat.S_IFCHR | 0o600, os.makedev(1, 3))  # /dev/null's
    return root


def nothing_written_outside(root: Path) -> None:
    outside = root.parent / "outside"
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert (outside / "secret.txt").read_bytes() == SECRET


# (path below the root, errno of the refusal, words of its message)
REFUSED_READS = [
    ("link_dir/b/file.txt", errno.ELOOP, "link_dir is a symbolic link"),  # first component
    ("a/link_b/file.txt", errno.ELOOP, "a/link_b is a symbolic link"),  # middle component
    ("a/b/link_file", errno.ELOOP, "a/b/link_file is a symbolic link"),  # last component
    ("out_dir/secret.txt", errno.ELOOP, "out_dir is a symbolic link"),
    ("a/out_file", errno.ELOOP, "a/out_file is a symbolic link"),
    ("loop", errno.ELOOP, "loop is a symbolic link"),
    ("../outside/secret.txt", errno.EINVAL, "'..' is refused"),
    ("a/../out_dir/secret.txt", errno.EINVAL, "'..' is refused"),
    ("/etc/passwd", errno.EINVAL, "absolute path is refused"),
    ("a/b/file.txt\x00", errno.EINVAL, "NUL byte"),
    ("fifo", errno.EINVAL, "fifo is not a regular file (it is a FIFO)"),
    pytest.param("dev", errno.EINVAL, "dev is not a regular file (it is a character device)",
                 marks=pytest.mark.skipif(not IS_ROOT, reason="mknod needs root")),
    ("a", errno.EISDIR, "a is a directory"),
    ("", errno.EISDIR, "the directory itself"),
    ("big.txt", errno.EFBIG, "big.txt is larger than 100 bytes"),
    ("missing.txt", errno.ENOENT, "missing.txt"),
    ("a/b/file.txt/more", errno.ENOTDIR, "a/b/file.txt is not a directory"),
]


@pytest.mark.parametrize(("rel", "code", "words"), REFUSED_READS)
def test_read_refuses(layout, rel, code, words):
    started = time.monotonic()
    with pytest.raises(OSError) as caught:
        safe_files.read_bytes(layout, rel, 100)
    assert caught.value.errno == code, caught.value
    assert words in str(caught.value.strerror)
    assert time.monotonic() - started < 1  # a FIFO is never waited on


@pytest.mark.parametrize("rel", ["a/b/file.txt", "./a//b/file.txt"])
def test_read_a_regular_file(layout, rel):
    assert safe_files.read_bytes(layout, rel, 100) == b"inside"
    assert safe_files.read_bytes(layout, Path(rel), 6) == b"inside"  # exactly the limit


# (destination below the root, errno, or None when the write succeeds)
WRITES = [
    ("a/b/new.txt", None),
    ("fresh/dirs/new.txt", None),  # parents made
    ("a/out_file", None),  # a link at the name: replaced, its target untouched
    ("a/b/link_file", None),
    ("fifo", None),  # replaced without blocking
    ("out_dir/planted.txt", errno.ELOOP),  # a link among the parents: refused
    ("link_dir/b/planted.txt", errno.ELOOP),
    ("a/link_b/planted.txt", errno.ELOOP),
    ("../outside/planted.txt", errno.EINVAL),
    ("/tmp/planted.txt", errno.EINVAL),
    ("a", errno.EISDIR),
    ("", errno.EISDIR),
    ("a/b/file.txt/x", errno.ENOTDIR),
]


@pytest.mark.parametrize(("rel", "code"), WRITES)
def test_write(layout, rel, code):
    started = time.monotonic()
    if code is None:
        safe_files.write_bytes(layout, rel, b"new")
        target = layout / rel
        assert not target.is_symlink() and target.read_bytes() == b"new"
        assert stat.S_IMODE(target.stat().st_mode) == 0o644
    else:
        with pytest.raises(OSError) as caught:
            safe_files.write_bytes(layout, rel, b"new")
        assert caught.value.errno == code, caught.value
    assert time.monotonic() - started < 1
    nothing_written_outside(layout)
    assert not [p for p in layout.rglob("*.tmp")], "a temporary file was left behind"


def _full(real, when):
    def full(*args, **kwargs):
        if when(*args):  # named as the system names it: by the first path, if any
            named = [args[0]] if isinstance(args[0], str) else []
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), *named)
        return real(*args, **kwargs)
    return full


DISK_FULL_AT = [  # each step of a write where a full disk can say so
    ("open", os, "open", lambda name, *_: str(name).startswith(".hp-")),
    ("write", safe_files, "_write_all", lambda *_: True),
    ("rename", os, "replace", lambda *_: True),
]


@pytest.mark.parametrize(("owner", "name", "when"), [c[1:] for c in DISK_FULL_AT],
                         ids=[c[0] for c in DISK_FULL_AT])
def test_a_write_on_a_full_disk_names_the_file_and_leaves_it_whole(tmp_path, monkeypatch,
                                                                    owner, name, when):
    (tmp_path / "results.json").write_text("before")
    monkeypatch.setattr(owner, name, _full(getattr(owner, name), when))
    with pytest.raises(OSError) as caught:
        safe_files.write_bytes(tmp_path, "results.json", b"after")
    monkeypatch.undo()
    assert caught.value.errno == errno.ENOSPC
    assert ".tmp" not in str(caught.value)  # the operator is told of results.json
    assert os.listdir(tmp_path) == ["results.json"]  # no temporary file left behind
    assert (tmp_path / "results.json").read_text() == "before"


def test_write_without_making_parents(layout):
    with pytest.raises(FileNotFoundError):
        safe_files.write_bytes(layout, "nowhere/x.txt", b"x", make_parents=False)
    assert not (layout / "nowhere").exists()


@pytest.mark.parametrize(("rel", "code"), [
    ("a/out_file", errno.ELOOP), ("out_dir/secret.txt", errno.ELOOP),
    ("fifo", errno.EINVAL), ("a", errno.EISDIR), ("../x", errno.EINVAL)])
def test_append_refuses(layout, rel, code):
    with pytest.raises(OSError) as caught:
        safe_files.append_bytes(layout, rel, b"appended")
    assert caught.value.errno == code
    nothing_written_outside(layout)


def test_append_makes_and_extends_a_file(layout):
    safe_files.append_bytes(layout, "log.jsonl", b"one\n")
    safe_files.append_bytes(layout, "log.jsonl", b"two\n")
    assert (layout / "log.jsonl").read_bytes() == b"one\ntwo\n"


@pytest.mark.parametrize(("src", "dst", "code"), [
    ("a/out_file", "copy.txt", errno.ELOOP),  # a link at the source
    ("out_dir/secret.txt", "copy.txt", errno.ELOOP),
    ("a/b/file.txt", "a/out_file", None),  # a link at the destination: replaced
    ("a/b/file.txt", "out_dir/secret.txt", errno.ELOOP),  # through a link: refused
])
def test_copy_file(layout, src, dst, code):
    if code is None:
        safe_files.copy_file(layout, src, layout, dst, 100)
        assert (layout / dst).read_bytes() == b"inside" and not (layout / dst).is_symlink()
    else:
        with pytest.raises(OSError) as caught:
            safe_files.copy_file(layout, src, layout, dst, 100)
        assert caught.value.errno == code
        assert not (layout / "copy.txt").exists()
    nothing_written_outside(layout)


@pytest.mark.parametrize(("rel", "code"), [
    ("out_dir/x", errno.ELOOP), ("a/b/file.txt", errno.ENOTDIR), ("..", errno.EINVAL)])
def test_make_dirs_refuses(layout, rel, code):
    with pytest.raises(OSError) as caught:
        safe_files.make_dirs(layout, rel)
    assert caught.value.errno == code
    nothing_written_outside(layout)


def test_lstat_does_not_follow(layout):
    assert stat.S_ISLNK(safe_files.lstat(layout, "a/out_file").st_mode)
    with pytest.raises(OSError) as caught:
        safe_files.lstat(layout, "out_dir/secret.txt")
    assert caught.value.errno == errno.ELOOP


# ---- trees ----------------------------------------------------------------------------
def deep_tree(top: Path, depth: int) -> None:
    """``depth`` nested directories, built by handle (the path passes PATH_MAX), with a
    file, a link out and a FIFO every hundred levels."""
    top.mkdir()
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for level in range(depth):
            if level % 100 == 0:
                os.close(os.open("f", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
                os.symlink("/etc", "link", dir_fd=fd)
                os.mkfifo("fifo", dir_fd=fd)
            os.mkdir("d", dir_fd=fd)
            child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
    finally:
        os.close(fd)


def wide_tree(top: Path, outside: Path) -> int:
    """2,000 entries: 40 directories of 49 files and a link out each."""
    count = 0
    for i in range(40):
        d = top / f"dir{i}"
        d.mkdir(parents=True)
        count += 1
        for j in range(48):
            (d / f"f{j}.txt").write_text(str(j))
            count += 1
        (d / "out").symlink_to(outside)
        count += 1
    return count


def test_a_tree_1100_levels_deep_is_removed(tmp_path):
    deep_tree(tmp_path / "deep", 1100)
    report = safe_files.remove_tree(tmp_path / "deep")
    assert report.ok, report.notes
    assert not (tmp_path / "deep").exists()
    assert report.done == 1100 + 1 + 11 * 3  # every directory, the top, the files


def test_a_deep_tree_below_a_root_is_removed_by_relative_path(tmp_path):
    (tmp_path / "run").mkdir()
    deep_tree(tmp_path / "run" / "deep", 1100)
    report = safe_files.remove_tree(tmp_path / "run", "deep")
    assert report.ok and list((tmp_path / "run").iterdir()) == []


def test_a_tree_1100_levels_deep_is_chowned_to_its_depth_bound(tmp_path):
    deep_tree(tmp_path / "deep", 1100)
    uid = 64998 if IS_ROOT else os.getuid()
    report = safe_files.chown_tree(tmp_path / "deep", uid, uid)
    assert report.failed == 0, report.notes
    assert report.skipped == 1 and "deeper than 64 levels" in report.notes[0]
    assert (tmp_path / "deep").stat().st_uid == uid
    assert os.stat("/etc").st_uid != uid or not IS_ROOT  # the links' target untouched
    assert safe_files.remove_tree(tmp_path / "deep").ok


@pytest.mark.skipif(not IS_ROOT, reason="giving files away needs root")
def test_chown_changes_links_not_their_targets_and_skips_foreign_hard_links(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_bytes(SECRET)
    top = tmp_path / "tree"
    top.mkdir()
    (top / "link").symlink_to(outside)
    os.link(outside, top / "hard")  # the harness's file, linked into the tree
    (top / "own").write_text("x")
    report = safe_files.chown_tree(top, 64998, 64998)
    assert outside.stat().st_uid == 0
    assert (top / "link").lstat().st_uid == 64998 and (top / "own").stat().st_uid == 64998
    assert report.skipped == 1 and "hard links" in report.notes[0]


def test_a_tree_of_2000_entries_is_walked_copied_and_removed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(SECRET)
    count = wide_tree(tmp_path / "wide", outside)
    assert count == 2000
    entries, report = safe_files.walk(tmp_path / "wide")
    assert len(entries) == 2000 and report.ok and report.skipped == 0
    assert sum(e.is_file for e in entries) == 40 * 48 and sum(e.is_dir for e in entries) == 40
    copied = safe_files.copy_tree(tmp_path / "wide", tmp_path / "copy")
    assert (copied.done, copied.skipped, copied.failed) == (40 * 49, 40, 0)
    assert not [p for p in (tmp_path / "copy").rglob("*") if p.is_symlink()]
    removed = safe_files.remove_tree(tmp_path / "wide")
    assert removed.ok and removed.done == 2001 and not (tmp_path / "wide").exists()
    assert (outside / "secret.txt").read_bytes() == SECRET


def test_walk_stops_at_its_bounds(tmp_path):
    deep_tree(tmp_path / "deep", 100)
    entries, report = safe_files.walk(tmp_path / "deep", max_depth=10)
    assert max(len(e.rel.parts) for e in entries) == 10 and report.skipped == 1
    entries, report = safe_files.walk(tmp_path / "deep", max_entries=5)
    assert len(entries) == 5 and report.skipped == 1
    assert safe_files.remove_tree(tmp_path / "deep").ok


def test_copy_tree_copies_only_regular_files_and_directories(layout, tmp_path):
    deep_tree(layout / "deep", 100)
    report = safe_files.copy_tree(layout, tmp_path / "saved", max_file_bytes=100)
    saved = tmp_path / "saved"
    assert (saved / "a" / "b" / "file.txt").read_bytes() == b"inside"
    assert not [p for p in saved.rglob("*") if p.is_symlink() or not (p.is_file() or
                                                                         p.is_dir())]
    assert SECRET not in b"".join(p.read_bytes() for p in saved.rglob("*") if p.is_file())
    notes = "\n".join(report.notes)
    for words in ("out_dir: a symbolic link", "fifo: a FIFO", "big.txt: 101 bytes",
                  "deeper than 64 levels"):
        assert words in notes, notes
    assert report.failed == 0
    with pytest.raises(FileExistsError):  # never into a directory that already exists
        safe_files.copy_tree(layout, saved)


def test_copy_tree_into_an_existing_directory_passes_over_excluded_names(tmp_path):
    # --save copies a run's records first, then the rest of the run around them.
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "sub").mkdir(parents=True)
    for rel in ("run.json", "answer.py", "sub/run.json"):
        (src / rel).write_text(rel)
    dst.mkdir()
    (dst / "run.json").write_text("the record")
    report = safe_files.copy_tree(src, dst, exclude={"run.json"}, exist_ok=True,
                                  max_entries=3)  # what is excluded is not counted
    assert (report.done, report.skipped, report.failed) == (3, 0, 0)
    assert (dst / "run.json").read_text() == "the record"
    assert (dst / "sub" / "run.json").read_text() == "sub/run.json"  # only at the top
    assert (dst / "answer.py").read_text() == "answer.py"


@pytest.mark.parametrize("target", ["a/out_file", "out_dir", "fifo", "a", "missing"])
def test_remove_removes_what_is_there_never_its_target(layout, target):
    report = safe_files.remove_tree(layout, target)
    assert report.ok, report.notes
    assert not os.path.lexists(layout / target)
    nothing_written_outside(layout)


def test_remove_below_a_link_removes_nothing(layout):
    report = safe_files.remove_tree(layout, "out_dir/secret.txt")
    assert not report.ok
    nothing_written_outside(layout)
