"""The History tab's index: every saved picture, searchable by prompt words, model and day, newest first, per owner.

The index is a SQLite file beside the outputs (``<output_dir>/.index.sqlite``; an FTS5 table for the prompt words),
so a search over 100,000 pictures answers in milliseconds and opening the tab reads no folder. It is only a cache:
everything in it comes from the PNGs' own ``parameters`` chunk, and ``scan`` rebuilds it when it is lost, of an
older version, or stale. The scan is incremental: a folder whose mtime has not changed is not listed, and a file
whose path and mtime are indexed is not read, so pictures another tool drops in are picked up cheaply.

Who owns a picture (a login, or a page session) is not in the PNG: ``claim`` records it in the index and appends it
to ``<output_dir>/.owners.log`` (path, mtime, owner digest), which a rebuild reads back. Pictures nobody claimed
(written by another tool, or by the A1111 API on a server without logins) have the owner ``""``. Delete moves the
file to ``<output_dir>/.trash/`` (same relative path), never unlinks it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from backend.library.history_files import PICTURES, describe, folders, read_parameters

log = logging.getLogger(__name__)

SCHEMA_VERSION = "1"  # a different version in the file: the index is dropped and rebuilt from the PNGs
INDEX_NAME = ".index.sqlite"
OWNERS_NAME = ".owners.log"
TRASH_NAME = ".trash"
PAGE_SIZE = 24
MANY_MATCHES = 2000  # words matching more pictures than this: walk the date index instead of sorting the matches
UNOWNED = ""
_WORD = re.compile(r"\w+", re.UNICODE)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pictures (
    id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE, folder TEXT NOT NULL, mtime_ns INTEGER NOT NULL,
    day TEXT NOT NULL, model TEXT NOT NULL, prompt TEXT NOT NULL, infotext TEXT NOT NULL, owner TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS pictures_owner ON pictures (owner, mtime_ns DESC, path DESC);
CREATE INDEX IF NOT EXISTS pictures_newest ON pictures (mtime_ns DESC, path DESC);
CREATE INDEX IF NOT EXISTS pictures_model ON pictures (model, mtime_ns DESC);
CREATE INDEX IF NOT EXISTS pictures_day ON pictures (day, mtime_ns DESC);
CREATE INDEX IF NOT EXISTS pictures_folder ON pictures (folder);
CREATE TABLE IF NOT EXISTS folders (path TEXT PRIMARY KEY, mtime_ns INTEGER NOT NULL);
CREATE VIRTUAL TABLE IF NOT EXISTS words USING fts5 (prompt, tokenize = 'unicode61');
"""
_COLUMNS = "id, path, mtime_ns, day, model, prompt, infotext, owner"


@contextlib.contextmanager
def _logged(errors: type[BaseException], what: str) -> Iterator[None]:
    """The index is a convenience: its failure is logged, never raised into a run."""
    try:
        yield
    except errors as err:
        log.warning("History index: %s (%s)", what, err)


def login_owner(login: str) -> str:
    """The owner key of a login: the same from the page and from the A1111 API, so a user sees both's pictures."""
    return f"login\x00{login}"


def owner_digest(key: str) -> str:
    """What the index stores for an owner: a digest, so neither a login nor a session id is kept in the clear."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32] if key else UNOWNED


@dataclass(frozen=True)
class Entry:
    """One indexed picture (``path`` relative to the output folder)."""

    id: int
    path: str
    mtime_ns: int
    day: str
    model: str
    prompt: str
    infotext: str
    owner: str


@dataclass(frozen=True)
class Query:
    """A search: words that must all start words of the prompt, an exact model name, a day (``YYYY-MM-DD``)."""

    words: str = ""
    model: str = ""
    day: str = ""


@dataclass(frozen=True)
class Page:
    entries: list[Entry]
    total: int  # pictures matching the query
    page: int  # 1-based, clamped to the pages there are
    pages: int


def match_expression(words: str) -> str:
    """FTS5 syntax for "every word, as the start of a prompt word": ``"red"* "circ"*``."""
    return " ".join(f'"{w}"*' for w in _WORD.findall(words.lower()))


class History:
    """The index of one output folder. Thread-safe; several processes may share the file (SQLite locks)."""

    def __init__(self, root: Path, index_path: Path | None = None):
        self.root = Path(root)
        self.index_path = Path(index_path) if index_path else self.root / INDEX_NAME
        self.owners_path = self.root / OWNERS_NAME
        self._lock = threading.RLock()
        self._owners: dict[tuple[str, int], str] = {}
        self._owners_read = 0  # bytes of the owners log already read
        self.root.mkdir(parents=True, exist_ok=True)
        self._db = self._connect()

    def _connect(self) -> sqlite3.Connection:
        try:
            return self._open()
        except sqlite3.DatabaseError as err:  # a damaged file: it is only a cache, start again
            log.warning("History index %s unreadable (%s): rebuilding it", self.index_path, err)
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.index_path}{suffix}").unlink(missing_ok=True)
            return self._open()

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.index_path, check_same_thread=False, timeout=30, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # a lost last write is found again by the next scan
        if db.execute("SELECT name FROM sqlite_master WHERE name = 'meta'").fetchone():
            version = db.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
        else:
            version = (SCHEMA_VERSION,)  # a new file
        if version is None or version[0] != SCHEMA_VERSION:
            for table in ("meta", "pictures", "folders", "words"):
                db.execute(f"DROP TABLE IF EXISTS {table}")
        db.executescript(_SCHEMA)
        db.execute("INSERT OR REPLACE INTO meta VALUES ('version', ?)", (SCHEMA_VERSION,))
        return db

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # Writing ------------------------------------------------------------------------------------------------------

    def insert(self, rows: Iterable[tuple], owner: str = UNOWNED) -> None:
        """Index rows made by ``describe`` (replacing the same paths), owned by ``owner`` unless the owners log
        says otherwise."""
        with self._lock:
            self._read_owners()
            self._db.execute("BEGIN")
            try:
                for row in rows:
                    known = self._owners.get((row[0], row[2]), owner)
                    self._delete_path(row[0])
                    cursor = self._db.execute(
                        "INSERT INTO pictures (path, folder, mtime_ns, day, model, prompt, infotext, owner) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (*row, known),
                    )
                    self._db.execute("INSERT INTO words (rowid, prompt) VALUES (?, ?)", (cursor.lastrowid, row[5]))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def add(self, path: Path, infotext: str | None = None) -> None:
        """A picture was just written (the output writer's hook): index it without reading the folder."""
        path = Path(path)
        try:
            self.insert([describe(path, infotext, path.stat().st_mtime_ns, self.root)])
        except (OSError, ValueError, sqlite3.Error) as err:  # never fails a save: the next scan finds it
            log.warning("History index: %s not indexed (%s)", path, err)

    def claim(self, paths: Sequence[Path], owner_key: str) -> None:
        """``paths`` (just saved) belong to ``owner_key``: recorded in the index and in the owners log."""
        owner = owner_digest(owner_key)
        lines = []
        with self._lock, _logged(sqlite3.Error, "owners not recorded"):
            for path in map(Path, paths):
                try:
                    rel = path.resolve().relative_to(self.root.resolve()).as_posix()
                except ValueError:
                    continue  # written elsewhere (another replica's folder)
                path = self.root / rel
                row = self._db.execute("SELECT mtime_ns FROM pictures WHERE path = ?", (rel,)).fetchone()
                if row is None and path.is_file():  # saved by another process (a Ray replica): index it now
                    self.add(path, read_parameters(path))
                    row = self._db.execute("SELECT mtime_ns FROM pictures WHERE path = ?", (rel,)).fetchone()
                if row is None:
                    continue
                self._db.execute("UPDATE pictures SET owner = ? WHERE path = ?", (owner, rel))
                lines.append(f"{rel}\t{row[0]}\t{owner}\n")
            if lines:
                try:
                    with open(self.owners_path, "a", encoding="utf-8") as log_file:
                        log_file.write("".join(lines))
                except OSError as err:  # never fails a run: the index has it; only a rebuild would not
                    log.warning("History: owners not recorded in %s (%s)", self.owners_path, err)

    def _read_owners(self) -> None:
        """Owners appended to the log since it was last read (the log only grows)."""
        try:
            with open(self.owners_path, "rb") as log_file:
                log_file.seek(self._owners_read)
                chunk = log_file.read()
        except FileNotFoundError:
            return
        complete = chunk[: chunk.rfind(b"\n") + 1]  # a line another process is writing is read next time
        self._owners_read += len(complete)
        for line in complete.decode("utf-8", "replace").splitlines():
            parts = line.split("\t")
            if len(parts) == 3 and parts[1].isdigit():
                self._owners[(parts[0], int(parts[1]))] = parts[2]

    def _delete_path(self, rel: str) -> None:
        row = self._db.execute("SELECT id FROM pictures WHERE path = ?", (rel,)).fetchone()
        if row:
            self._db.execute("DELETE FROM pictures WHERE id = ?", row)
            self._db.execute("DELETE FROM words WHERE rowid = ?", row)

    # Reading ------------------------------------------------------------------------------------------------------

    def _where(self, owners: Sequence[str] | None, query: Query) -> tuple[str, list]:
        clauses, args = [], []
        if owners is not None:
            clauses.append(f"owner IN ({', '.join('?' * len(owners))})")
            args += owners
        if query.model:
            clauses.append("model = ?")
            args.append(query.model)
        if query.day:
            clauses.append("day = ?")
            args.append(query.day)
        if expression := match_expression(query.words):
            clauses.append("id IN (SELECT rowid FROM words WHERE words MATCH ?)")
            args.append(expression)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args

    def search(
        self, owners: Sequence[str] | None, query: Query = Query(), page: int = 1, page_size: int = PAGE_SIZE
    ) -> Page:
        """One page of the pictures ``owners`` (digests; None = everyone's) may see that match ``query``, newest
        first."""
        where, args = self._where(owners, query)
        expression = match_expression(query.words)
        only_words = owners is None and not query.model and not query.day
        with self._lock:
            # How many pictures the words match, from the word index alone (fast): with no other filter, that is
            # the total; when it is many, the page is found by walking the newest-first index rather than sorting
            # every match by date.
            count = "SELECT COUNT(*) FROM words WHERE words MATCH ?"
            matches = self._db.execute(count, (expression,)).fetchone()[0] if expression else 0
            if expression and only_words:
                total = matches
            else:
                total = self._db.execute(f"SELECT COUNT(*) FROM pictures{where}", args).fetchone()[0]
            pages = max(1, -(-total // page_size))
            page = min(max(1, int(page)), pages)
            walk = " INDEXED BY pictures_newest" if only_words and matches > MANY_MATCHES else ""
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM pictures{walk}{where} ORDER BY mtime_ns DESC, path DESC LIMIT ? OFFSET ?",
                [*args, page_size, (page - 1) * page_size],
            ).fetchall()
        return Page([Entry(*row) for row in rows], total, page, pages)

    def get(self, picture_id: int, owners: Sequence[str] | None) -> Entry | None:
        where, args = self._where(owners, Query())
        where = f"{where} AND id = ?" if where else " WHERE id = ?"
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM pictures{where}", [*args, int(picture_id)]).fetchone()
        return Entry(*row) if row else None

    def values(self, column: str, owners: Sequence[str] | None) -> list[str]:
        """The models (``column="model"``) or days (``"day"``) among the pictures ``owners`` may see."""
        if column not in ("model", "day"):
            raise ValueError(f"no filter on {column!r}")
        where, args = self._where(owners, Query())
        order = "DESC" if column == "day" else "ASC"
        with self._lock:
            rows = self._db.execute(f"SELECT DISTINCT {column} FROM pictures{where} ORDER BY 1 {order}", args)
            return [value for (value,) in rows.fetchall() if value]

    def file(self, entry: Entry) -> Path:
        return self.root / entry.path

    # Delete -------------------------------------------------------------------------------------------------------

    def trash(self, picture_id: int, owners: Sequence[str] | None) -> Path:
        """Move the picture to ``.trash/`` under the output folder (nothing is unlinked); returns where it went.
        KeyError when ``owners`` may not see it."""
        with self._lock:
            entry = self.get(picture_id, owners)
            if entry is None:
                raise KeyError(picture_id)
            target = self.root / TRASH_NAME / entry.path
            target.parent.mkdir(parents=True, exist_ok=True)
            stem, number = target, 1
            while target.exists():  # the same name trashed before (numbers are reused after a delete)
                target = stem.with_name(f"{stem.stem}.{number}{stem.suffix}")
                number += 1
            source = self.file(entry)
            if source.exists():
                shutil.move(source, target)
            self._db.execute("BEGIN")
            self._delete_path(entry.path)
            self._db.execute("COMMIT")
            return target

    # Scanning -----------------------------------------------------------------------------------------------------

    def scan(self) -> tuple[int, int]:
        """Bring the index up to date with the folder: (pictures indexed, entries dropped). Folders whose mtime
        is unchanged are not listed; files whose path and mtime are indexed are not read."""
        added = dropped = 0
        for folder in folders(self.root):
            try:
                mtime = folder.stat().st_mtime_ns
            except OSError:
                continue
            rel = folder.relative_to(self.root).as_posix()
            with self._lock:
                known = self._db.execute("SELECT mtime_ns FROM folders WHERE path = ?", (rel,)).fetchone()
            if known and known[0] == mtime:
                continue
            a, d = self._scan_folder(folder, rel)
            added, dropped = added + a, dropped + d
            with self._lock:
                self._db.execute("INSERT OR REPLACE INTO folders VALUES (?, ?)", (rel, mtime))
        dropped += self._drop_missing_folders()
        return added, dropped

    def _scan_folder(self, folder: Path, rel: str) -> tuple[int, int]:
        on_disk: dict[str, tuple[Path, int]] = {}
        with os.scandir(folder) as entries:
            for item in entries:
                if item.name[0] != "." and item.name.lower().endswith(PICTURES) and item.is_file():
                    path = Path(item.path)
                    on_disk[path.relative_to(self.root).as_posix()] = (path, item.stat().st_mtime_ns)
        with self._lock:
            indexed = dict(self._db.execute("SELECT path, mtime_ns FROM pictures WHERE folder = ?", (rel,)))
        new = [(p, m) for r, (p, m) in on_disk.items() if indexed.get(r) != m]
        gone = [r for r in indexed if r not in on_disk]
        self.insert([describe(p, read_parameters(p), m, self.root) for p, m in new])  # read before locking
        with self._lock:
            self._db.execute("BEGIN")
            for path in gone:
                self._delete_path(path)
            self._db.execute("COMMIT")
        return len(new), len(gone)

    def _drop_missing_folders(self) -> int:
        """Entries of folders that are gone altogether (a day folder someone deleted)."""
        dropped = 0
        with self._lock:
            folders = [f for (f,) in self._db.execute("SELECT DISTINCT folder FROM pictures").fetchall()]
            for folder in folders:
                if not (self.root / folder).is_dir():
                    ids = self._db.execute("SELECT id FROM pictures WHERE folder = ?", (folder,)).fetchall()
                    self._db.execute("BEGIN")
                    self._db.executemany("DELETE FROM words WHERE rowid = ?", ids)
                    self._db.execute("DELETE FROM pictures WHERE folder = ?", (folder,))
                    self._db.execute("DELETE FROM folders WHERE path = ?", (folder,))
                    self._db.execute("COMMIT")
                    dropped += len(ids)
        return dropped

    def scan_in_background(self) -> threading.Thread:
        """Catch up with the folder without holding up the caller (the app's start)."""

        def work() -> None:
            try:
                added, dropped = self.scan()
                if added or dropped:
                    log.info("History index: %d picture(s) indexed, %d dropped", added, dropped)
            except (OSError, sqlite3.Error) as err:
                log.warning("History index scan failed: %s", err)

        thread = threading.Thread(target=work, name="history-scan", daemon=True)
        thread.start()
        return thread
