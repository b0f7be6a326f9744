"""Watch fan-out and bounded per-resource history.

Every committed write becomes one ``Change`` published to the resource's history (a deque of
``watch_history`` entries, so memory and per-request cost stay flat however long the emulator
runs) and to the resource's live watchers. A watcher that resumes from a resourceVersion older
than the history gets the apiserver's ``410 Expired``; one that cannot keep up is closed, as
the apiserver closes slow watchers, and the client re-lists.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Callable
from typing import Any

from .errors import expired
from .selectors import Matcher

MAX_QUEUE = 10_000


class Change:
    """One committed write. ``obj`` is the stored snapshot (never mutated afterwards)."""

    __slots__ = ("rv", "type", "namespace", "obj", "old", "_lines")

    def __init__(self, rv: int, type_: str, namespace: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        self.rv = rv
        self.type = type_
        self.namespace = namespace
        self.obj = obj
        self.old = old
        self._lines: dict[tuple[str, str], bytes] = {}

    def line(self, type_: str, api_version: str) -> bytes:
        """The encoded event, cached: N watchers of one version cost one serialisation."""
        key = (type_, api_version)
        data = self._lines.get(key)
        if data is None:
            obj = self.obj if self.obj.get("apiVersion") == api_version else {**self.obj, "apiVersion": api_version}
            data = json.dumps({"type": type_, "object": obj}, separators=(",", ":")).encode() + b"\n"
            self._lines[key] = data
        return data


class Watcher:
    """One open watch stream: a queue of encoded lines, ``None`` meaning end of stream."""

    def __init__(self, *, key: str, namespace: str | None, match: Matcher | None, api_version: str,
                 kind: str, bookmarks: bool) -> None:
        self.key = key
        self.namespace = namespace
        self.match = match
        self.api_version = api_version
        self.kind = kind
        self.bookmarks = bookmarks
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.closed = False

    def offer(self, change: Change) -> None:
        if self.closed or (self.namespace is not None and change.namespace != self.namespace):
            return
        type_ = change.type
        if self.match is not None:
            now = self.match(change.obj)
            if type_ == "MODIFIED" and change.old is not None:
                before = self.match(change.old)
                if now and not before:
                    type_ = "ADDED"
                elif before and not now:
                    type_ = "DELETED"
                elif not now:
                    return
            elif not now:
                return
        self.put(change.line(type_, self.api_version))

    def put(self, line: bytes | None) -> None:
        if self.closed:
            return
        if self.queue.qsize() >= MAX_QUEUE:
            self.close()
            return
        self.queue.put_nowait(line)

    def bookmark(self, rv: int) -> None:
        if self.bookmarks and not self.closed:
            obj = {"kind": self.kind, "apiVersion": self.api_version, "metadata": {"resourceVersion": str(rv)}}
            self.put(json.dumps({"type": "BOOKMARK", "object": obj}, separators=(",", ":")).encode() + b"\n")

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(None)


class WatchHub:
    def __init__(self, *, history: int, current_rv: Callable[[], int]) -> None:
        self._history_size = history
        self._current_rv = current_rv
        self._history: dict[str, deque[Change]] = {}
        self._floor: dict[str, int] = {}
        self._watchers: dict[str, set[Watcher]] = {}

    def publish(self, key: str, change: Change) -> None:
        hist = self._history.get(key)
        if hist is None:
            hist = self._history[key] = deque()
        hist.append(change)
        if len(hist) > self._history_size:
            self._floor[key] = hist.popleft().rv
        for w in tuple(self._watchers.get(key, ())):
            w.offer(change)

    def subscribe(self, watcher: Watcher, *, since: int | None) -> None:
        """Register ``watcher``; replay history after ``since`` (410 if it is gone)."""
        if since is not None:
            floor = self._floor.get(watcher.key, 0)
            if since < floor:
                raise expired(f"too old resource version: {since} ({floor + 1})")
            for change in self._history.get(watcher.key, ()):
                if change.rv > since:
                    watcher.offer(change)
        self._watchers.setdefault(watcher.key, set()).add(watcher)

    def unsubscribe(self, watcher: Watcher) -> None:
        watchers = self._watchers.get(watcher.key)
        if watchers is not None:
            watchers.discard(watcher)
        watcher.closed = True

    def bookmark_all(self) -> None:
        rv = self._current_rv()
        for watchers in self._watchers.values():
            for w in watchers:
                w.bookmark(rv)

    def close_all(self) -> None:
        for watchers in self._watchers.values():
            for w in tuple(watchers):
                w.close()
        self._watchers.clear()

    def watcher_count(self) -> int:
        return sum(len(w) for w in self._watchers.values())

    def forget(self, key: str) -> None:
        """A resource type went away (CRD deleted): end its watches, drop its history."""
        for w in tuple(self._watchers.pop(key, ())):
            w.close()
        self._history.pop(key, None)
        self._floor.pop(key, None)
