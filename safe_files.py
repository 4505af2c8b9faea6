"""The one way the harness touches a place that the agent or a candidate can write.

A run directory, an execution's directory and the profiles the sandbox writes all hold
whatever hostile code left there: links to the harness's secrets, FIFOs, devices,
trees thousands of levels deep.  The harness runs as root, so following any of it reads
or writes what the sandbox was built to hide.  Every function here takes a *root* the
harness trusts (its own path: the run directory it made, its cache) and a relative path
below it that it does not trust:

- each component is opened relative to its parent's handle with ``O_NOFOLLOW``, so a
  link at any position is refused rather than followed; ``..`` and absolute paths are
  refused outright;
- a file is checked with ``lstat`` and ``fstat`` to be a regular file before it is read
  (a FIFO or device is never opened) and is read only up to a limit;
- a write goes to a fresh temporary file in the same directory, renamed over the name:
  a link planted there is replaced, never written through, and nothing half-written or
  ``*.tmp`` is left behind;
- tree operations (walk, remove, chown, copy) are iterative and hold at most
  ``MAX_OPEN_DIRS`` directories open, so depth costs neither the stack nor paths longer
  than ``PATH_MAX``; they never raise for what is inside the tree and return a
  :class:`TreeReport` of what they did, skipped and could not do.

Single-file functions raise ``OSError`` (``FileNotFoundError``, ``IsADirectoryError``,
...) whose ``strerror`` says what was found, in words fit for the agent.  Deciding which
root a path belongs to, and what may be read or written at all, is the caller's
(``tools``); isolating the code that wrote the tree is ``sandbox``'s.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePath, PurePosixPath
from typing import Any

MAX_OPEN_DIRS = 64  # directories a tree operation holds open at once: its depth bound
MAX_NOTES = 50  # reasons a TreeReport keeps (its counts go on)
_CHUNK = 1 << 20
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

Rel = str | PurePath
# Errors of the file system itself (full, over quota, read-only, failing): never the
# fault of whoever asked for the write, so never reported to an agent as its mistake.
DISK_FAULTS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO})


@dataclass
class TreeReport:
    """What a tree operation did: entries handled, entries left alone on purpose (a
    link, a FIFO, too deep, too large), entries it could not handle, and why (the first
    ``MAX_NOTES`` reasons)."""

    done: int = 0
    skipped: int = 0
    failed: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failed == 0

    def skip(self, why: str) -> None:
        self.skipped += 1
        self._note(why)

    def fail(self, why: str) -> None:
        self.failed += 1
        self._note(why)

    def _note(self, text: str) -> None:
        if len(self.notes) < MAX_NOTES:  # a deep path is shown by its end
            self.notes.append(text if len(text) <= 300 else "…" + text[-299:])

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Entry:
    """One entry found by :func:`walk`, as ``lstat`` saw it (links are not followed)."""

    rel: PurePosixPath
    mode: int
    size: int
    mtime: float

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.mode)

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)


# ---- single files ---------------------------------------------------------------------
def read_bytes(root: Path, rel: Rel, limit: int) -> bytes:
    """The bytes of the regular file ``root/rel``; ``OSError`` (``EFBIG``) when it holds
    more than ``limit`` bytes, or when anything on the way is not what it should be."""
    parts = _parts(rel)
    fd, size = _open_regular(root, parts)
    try:
        if size > limit:
            raise _too_large(parts, limit)
        chunks, total = [], 0
        while chunk := os.read(fd, min(_CHUNK, limit + 1 - total)):
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:  # it grew while being read
                raise _too_large(parts, limit)
        return b"".join(chunks)
    finally:
        os.close(fd)


def write_bytes(root: Path, rel: Rel, data: bytes, *, make_parents: bool = True,
                mode: int = 0o644) -> None:
    """Replace ``root/rel`` with ``data`` atomically (a temporary file renamed over it):
    a link or FIFO at the name is replaced, never written through; a directory there
    is an ``IsADirectoryError``.  Missing parents are made unless ``make_parents`` is
    false; a link among them is refused."""
    parts = _parts(rel)
    if not parts:
        raise OSError(errno.EISDIR, "the directory itself cannot be written as a file")
    dir_fd = _open_dir(root, parts[:-1], create=make_parents)
    try:
        tmp, made = f".hp-{secrets.token_hex(8)}.tmp", False
        try:
            fd = os.open(tmp, _NEW, mode, dir_fd=dir_fd)
            made = True
            try:
                _write_all(fd, data)
                os.fchmod(fd, mode)  # not narrowed by the umask
            finally:
                os.close(fd)
            os.replace(tmp, parts[-1], src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException as exc:
            if made:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=dir_fd)
            if isinstance(exc, IsADirectoryError):
                raise OSError(errno.EISDIR, f"{_shown(parts)} is a directory") from None
            if isinstance(exc, OSError):  # a full disk...: named by the file, not by tmp
                raise OSError(exc.errno, f"{_shown(parts)}: {exc.strerror}") from None
            raise
    finally:
        os.close(dir_fd)


def append_bytes(root: Path, rel: Rel, data: bytes) -> None:
    """Append ``data`` to the regular file ``root/rel``, made if missing (its directory
    must exist); a link, FIFO or device at the name is refused, never opened."""
    parts = _parts(rel)
    if not parts:
        raise OSError(errno.EISDIR, "the directory itself cannot be appended to")
    dir_fd = _open_dir(root, parts[:-1])
    try:
        with contextlib.suppress(FileNotFoundError):
            found = os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False)
            if not stat.S_ISREG(found.st_mode):
                raise _not_regular(parts, found.st_mode)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
        try:
            fd = os.open(parts[-1], flags | os.O_NOCTTY | os.O_CLOEXEC, 0o644, dir_fd=dir_fd)
        except OSError as exc:
            raise _refusal(dir_fd, parts, exc) from None
    finally:
        os.close(dir_fd)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _not_regular(parts, mode)
        _write_all(fd, data)
    finally:
        os.close(fd)


def copy_file(src_root: Path, src_rel: Rel, dst_root: Path, dst_rel: Rel, limit: int,
              *, mode: int = 0o644) -> None:
    """:func:`read_bytes` of the source, then :func:`write_bytes` of the destination."""
    write_bytes(dst_root, dst_rel, read_bytes(src_root, src_rel, limit), mode=mode)


def make_dirs(root: Path, rel: Rel) -> None:
    """Make the directory ``root/rel`` and its missing parents; one that exists as
    anything but a directory (a link included) is refused."""
    os.close(_open_dir(root, _parts(rel), create=True))


def lstat(root: Path, rel: Rel) -> os.stat_result:
    """What is at ``root/rel``, not following a link at any component."""
    parts = _parts(rel)
    if not parts:
        return os.stat(root)
    dir_fd = _open_dir(root, parts[:-1])
    try:
        return os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False)
    except OSError as exc:
        raise OSError(exc.errno, f"{_shown(parts)}: {exc.strerror}") from None
    finally:
        os.close(dir_fd)


# ---- trees ------------------------------------------------------------------------------
def walk(root: Path, *, max_depth: int = MAX_OPEN_DIRS,
         max_entries: int = 100_000) -> tuple[list[Entry], TreeReport]:
    """Every entry below ``root`` (depth first, links listed but not followed), at most
    ``max_depth`` levels down and ``max_entries`` in all; the report counts what was left
    out."""
    entries: list[Entry] = []
    report = TreeReport()
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        report.fail(f"{root}: {exc.strerror}")
        return entries, report
    stack = [(fd, PurePosixPath(), os.scandir(fd))]
    try:
        while stack:
            fd, prefix, listing = stack[-1]
            found = next(listing, None)
            if found is None:
                _close_frame(stack.pop())
                continue
            if len(entries) >= max_entries:
                report.skip(f"stopped after {max_entries} entries; the rest is not listed")
                break
            rel = prefix / found.name
            try:
                st = found.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            except OSError as exc:
                report.fail(f"{rel}: {exc.strerror}")
                continue
            entries.append(Entry(rel, st.st_mode, st.st_size, st.st_mtime))
            report.done += 1
            if stat.S_ISDIR(st.st_mode):
                if len(stack) >= max_depth:
                    report.skip(f"{rel}: deeper than {max_depth} levels, not listed")
                    continue
                try:
                    child = os.open(found.name, _DIR, dir_fd=fd)
                except OSError as exc:
                    report.fail(f"{rel}: {exc.strerror}")
                    continue
                stack.append((child, rel, os.scandir(child)))
    finally:
        for frame in stack:
            _close_frame(frame)
    return entries, report


def remove_tree(root: Path, rel: Rel | None = None) -> TreeReport:
    """Remove ``root/rel`` (``root`` itself when ``rel`` is None: its parent is trusted,
    its own name is not followed) whatever it is: a file, a link (the link, not its
    target), a FIFO, or a directory and everything in it however deep.  Directories
    deeper than ``MAX_OPEN_DIRS`` below the top are moved up to the top and removed from
    there.  Another file system mounted inside is left in place.  A missing target is no
    error."""
    report = TreeReport()
    try:
        if rel is None:
            if root.name in ("", ".", ".."):
                raise OSError(errno.EINVAL, f"{root}: not a name that can be removed")
            parent_fd, name = os.open(root.parent, os.O_RDONLY | os.O_DIRECTORY
                                      | os.O_CLOEXEC), root.name
        else:
            parts = _parts(rel)
            if not parts:
                raise OSError(errno.EINVAL, "the root itself: remove it with rel=None")
            parent_fd, name = _open_dir(root, parts[:-1]), parts[-1]
    except FileNotFoundError:
        return report
    except OSError as exc:
        report.fail(exc.strerror or str(exc))
        return report
    try:
        _remove_at(parent_fd, name, report)
    finally:
        os.close(parent_fd)
    return report


def chown_tree(path: Path, uid: int, gid: int, *,
               max_depth: int = MAX_OPEN_DIRS) -> TreeReport:
    """Give the directory ``path`` and everything in it to ``uid:gid``, changing links
    themselves, never their targets.  Directories more than ``max_depth`` levels down
    are left as they are, with what is inside them (each counted once as skipped): the
    code that made a tree that deep owns it already.  A file with more than one hard
    link that ``uid`` does not own yet is skipped: it may be the harness's own file,
    linked into the tree."""
    report = TreeReport()
    try:
        fd = os.open(path, _DIR)
    except OSError as exc:
        report.fail(f"{path}: {exc.strerror}")
        return report
    try:
        os.fchown(fd, uid, gid)
    except OSError as exc:
        os.close(fd)
        report.fail(f"{path}: {exc.strerror}")
        return report
    report.done += 1
    stack = [(fd, PurePosixPath(), os.scandir(fd))]
    try:
        while stack:
            fd, prefix, listing = stack[-1]
            found = next(listing, None)
            if found is None:
                _close_frame(stack.pop())
                continue
            rel = prefix / found.name
            try:
                st = found.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    if len(stack) >= max_depth:
                        report.skip(f"{rel}: deeper than {max_depth} levels, left as it is")
                        continue
                    child = os.open(found.name, _DIR, dir_fd=fd)
                    stack.append((child, rel, os.scandir(child)))
                    os.fchown(child, uid, gid)
                elif not stat.S_ISLNK(st.st_mode) and st.st_nlink > 1 and st.st_uid != uid:
                    report.skip(f"{rel}: a file with {st.st_nlink} hard links, left as it is")
                    continue
                else:
                    os.chown(found.name, uid, gid, dir_fd=fd, follow_symlinks=False)
                report.done += 1
            except FileNotFoundError:
                continue
            except OSError as exc:
                report.fail(f"{rel}: {exc.strerror}")
    finally:
        for frame in stack:
            _close_frame(frame)
    return report


def copy_tree(src: Path, dst: Path, *, max_depth: int = MAX_OPEN_DIRS,
              max_entries: int = 100_000, max_file_bytes: int = 256 * 1024**2,
              max_total_bytes: int = 4 * 1024**3, exclude: Collection[str] = (),
              exist_ok: bool = False) -> TreeReport:
    """Copy the regular files and directories below ``src`` into the new directory
    ``dst`` (``FileExistsError`` if it exists, unless ``exist_ok``), never following a
    link.  Links, FIFOs, sockets, devices, directories deeper than ``max_depth``, files
    over ``max_file_bytes`` and whatever would pass ``max_total_bytes`` or
    ``max_entries`` are skipped and named in the report.  Names in ``exclude`` at the top
    of ``src`` are passed over, neither copied nor counted.  Copies get plain modes
    (0644, 0755)."""
    report = TreeReport()
    try:
        os.mkdir(dst, 0o755)
    except FileExistsError:
        if not exist_ok:
            raise
    src_fd = os.open(src, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        dst_fd = os.open(dst, _DIR)
    except BaseException:
        os.close(src_fd)
        raise
    stack = [(src_fd, PurePosixPath(), os.scandir(src_fd), dst_fd)]
    seen = total = 0
    try:
        while stack:
            sfd, prefix, listing, dfd = stack[-1]
            found = next(listing, None)
            if found is None:
                _close_frame(stack.pop())
                continue
            if len(stack) == 1 and found.name in exclude:
                continue
            if seen >= max_entries:
                report.skip(f"stopped after {max_entries} entries; the rest is not copied")
                break
            seen += 1
            rel = prefix / found.name
            try:
                st = found.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    if len(stack) >= max_depth:
                        report.skip(f"{rel}: deeper than {max_depth} levels, not copied")
                        continue
                    os.mkdir(found.name, 0o755, dir_fd=dfd)
                    child = os.open(found.name, _DIR, dir_fd=sfd)
                    try:
                        copy = os.open(found.name, _DIR, dir_fd=dfd)
                    except BaseException:
                        os.close(child)
                        raise
                    stack.append((child, rel, os.scandir(child), copy))
                elif not stat.S_ISREG(st.st_mode):
                    report.skip(f"{rel}: {_kind(st.st_mode)}, not copied")
                    continue
                elif st.st_size > min(max_file_bytes, max_total_bytes - total):
                    report.skip(f"{rel}: {st.st_size} bytes, over the copy's limit")
                    continue
                else:
                    total += _copy_regular(sfd, dfd, found.name, st,
                                           min(max_file_bytes, max_total_bytes - total))
                report.done += 1
            except FileNotFoundError:
                continue
            except OSError as exc:
                report.fail(f"{rel}: {exc.strerror}")
    finally:
        for frame in stack:
            _close_frame(frame)
    return report


# ---- helpers ----------------------------------------------------------------------------
def _parts(rel: Rel) -> list[str]:
    text = os.fspath(rel)
    if "\x00" in text:
        raise OSError(errno.EINVAL, "a path with a NUL byte is refused")
    if text.startswith("/"):
        raise OSError(errno.EINVAL, f"{text}: an absolute path is refused here")
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise OSError(errno.EINVAL, f"{text}: a path through '..' is refused")
    return parts


def _shown(parts: list[str]) -> str:
    return "/".join(parts) or "."


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISLNK, "a symbolic link"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISREG, "a regular file")):
        if test(mode):
            return name
    return "of an unknown kind"


def _not_regular(parts: list[str], mode: int) -> OSError:
    shown = _shown(parts)
    if stat.S_ISDIR(mode):
        return OSError(errno.EISDIR, f"{shown} is a directory")
    if stat.S_ISLNK(mode):
        return OSError(errno.ELOOP, f"{shown} is a symbolic link (links are not followed)")
    return OSError(errno.EINVAL, f"{shown} is not a regular file (it is {_kind(mode)})")


def _too_large(parts: list[str], limit: int) -> OSError:
    return OSError(errno.EFBIG, f"{_shown(parts)} is larger than {limit} bytes")


def _refusal(dir_fd: int, parts: list[str], exc: OSError) -> OSError:
    """``exc``, raised opening the last of ``parts`` without following it, as an error
    that says what is there (a link, a file where a directory was expected...)."""
    shown = _shown(parts)
    if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EISDIR, errno.ENXIO):
        try:
            mode = os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False).st_mode
        except OSError:
            pass
        else:
            if stat.S_ISLNK(mode):
                return _not_regular(parts, mode)
            if exc.errno == errno.ENOTDIR:
                return OSError(errno.ENOTDIR, f"{shown} is not a directory (it is "
                                              f"{_kind(mode)})")
            return _not_regular(parts, mode)
    return OSError(exc.errno, f"{shown}: {exc.strerror}")


def _open_dir(root: Path, parts: list[str], *, create: bool = False) -> int:
    """A handle on the directory ``root/parts``, every component opened without
    following it (made first when ``create``)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for i, name in enumerate(parts):
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o755, dir_fd=fd)
            try:
                child = os.open(name, _DIR, dir_fd=fd)
            except OSError as exc:
                raise _refusal(fd, parts[:i + 1], exc) from None
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


def _open_regular(root: Path, parts: list[str]) -> tuple[int, int]:
    """A read handle on the regular file ``root/parts`` and its size.  Anything else at
    the name is refused before it is opened (opening a device can have effects)."""
    if not parts:
        raise OSError(errno.EISDIR, "the directory itself is not a file")
    dir_fd = _open_dir(root, parts[:-1])
    try:
        try:
            before = os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False)
        except OSError as exc:
            raise OSError(exc.errno, f"{_shown(parts)}: {exc.strerror}") from None
        if not stat.S_ISREG(before.st_mode):
            raise _not_regular(parts, before.st_mode)
        try:
            fd = os.open(parts[-1], _FILE, dir_fd=dir_fd)
        except OSError as exc:
            raise _refusal(dir_fd, parts, exc) from None
    finally:
        os.close(dir_fd)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (before.st_dev,
                                                                   before.st_ino):
        os.close(fd)
        raise OSError(errno.EAGAIN, f"{_shown(parts)} changed while it was opened")
    return fd, st.st_size


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _copy_regular(src_fd: int, dst_fd: int, name: str, before: os.stat_result,
                  limit: int) -> int:
    fd = os.open(name, _FILE, dir_fd=src_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_ino != before.st_ino:
            raise OSError(errno.EAGAIN, "changed while it was copied")
        out = os.open(name, _NEW, 0o644, dir_fd=dst_fd)
        try:
            copied = 0
            while copied < limit and (chunk := os.read(fd, min(_CHUNK, limit - copied))):
                _write_all(out, chunk)
                copied += len(chunk)
            os.fchmod(out, 0o644)
        finally:
            os.close(out)
        return copied
    finally:
        os.close(fd)


@dataclass
class _Dir:
    """A directory being emptied by :func:`_remove_at`."""

    fd: int
    parent_fd: int
    name: str
    pending: list[str] = field(default_factory=list)
    failed: set[str] = field(default_factory=set)


def _unlink(dir_fd: int, name: str, report: TreeReport) -> bool | None:
    """Remove a non-directory: True when gone, False when it is a directory, None when
    it could not be removed (noted)."""
    try:
        os.unlink(name, dir_fd=dir_fd)
        report.done += 1
        return True
    except FileNotFoundError:
        return True
    except IsADirectoryError:
        return False
    except OSError as exc:
        with contextlib.suppress(OSError):
            if stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
                return False
        report.fail(f"{name}: {exc.strerror}")
        return None


def _remove_at(parent_fd: int, name: str, report: TreeReport) -> None:
    gone = _unlink(parent_fd, name, report)
    if gone is not False:
        return
    try:
        fd = os.open(name, _DIR, dir_fd=parent_fd)
    except FileNotFoundError:
        return
    except OSError as exc:
        report.fail(f"{name}: {exc.strerror}")
        return
    device = os.fstat(fd).st_dev
    stack = [_Dir(fd, parent_fd, name)]
    try:
        while stack:
            top = stack[-1]
            if not top.pending:
                try:
                    top.pending = [n for n in os.listdir(top.fd) if n not in top.failed]
                except OSError as exc:
                    report.fail(f"{top.name}: {exc.strerror}")
                    top.failed.add("")
                if not top.pending:  # emptied, or as empty as it will get
                    stack.pop()
                    os.close(top.fd)
                    if top.failed:
                        if stack:
                            stack[-1].failed.add(top.name)
                        continue
                    try:
                        os.rmdir(top.name, dir_fd=top.parent_fd)
                        report.done += 1
                    except FileNotFoundError:
                        pass
                    except OSError as exc:
                        report.fail(f"{top.name}: {exc.strerror}")
                        if stack:
                            stack[-1].failed.add(top.name)
                    continue
            child = top.pending.pop()
            gone = _unlink(top.fd, child, report)
            if gone is None:
                top.failed.add(child)
            if gone is not False:
                continue
            if len(stack) >= MAX_OPEN_DIRS:  # too deep to hold open: move it to the top
                try:
                    os.rename(child, f".hp-flat-{secrets.token_hex(8)}", src_dir_fd=top.fd,
                              dst_dir_fd=stack[0].fd)
                except OSError as exc:
                    report.fail(f"{child}: {exc.strerror}")
                    top.failed.add(child)
                continue
            try:
                fd = os.open(child, _DIR, dir_fd=top.fd)
            except FileNotFoundError:
                continue
            except OSError as exc:
                report.fail(f"{child}: {exc.strerror}")
                top.failed.add(child)
                continue
            if os.fstat(fd).st_dev != device:
                os.close(fd)
                report.fail(f"{child}: another file system is mounted there; left in place")
                top.failed.add(child)
                continue
            stack.append(_Dir(fd, top.fd, child))
    finally:
        for frame in stack:
            os.close(frame.fd)


def _close_frame(frame: tuple[Any, ...]) -> None:
    """Close a walking frame: its directory handle and listing (and a copy's target)."""
    fd, _, listing, *rest = frame
    listing.close()
    for handle in (fd, *rest):
        os.close(handle)
