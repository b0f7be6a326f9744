"""The garbage collector: dependents go when their owners are gone, across kinds.

On a cluster, kube-controller-manager's garbage collector (``pkg/controller/garbagecollector``)
watches every resource, keeps a graph of ``metadata.ownerReferences``, and when an owner is gone
from storage deletes the dependents that have no other owner left ("background" cascading
deletion). It also serves the two other propagation policies that the registry asks for with
finalizers (``staging/src/k8s.io/apiserver/pkg/registry/generic/registry/store.go``,
``deletionFinalizersForGarbageCollection``): ``orphan`` (remove the owner's references from its
dependents, then the finalizer) and ``foregroundDeletion`` (delete the dependents, then remove the
finalizer once no dependent with ``blockOwnerDeletion`` is left).

Here the graph is an index kept up to date on every committed write (``observe``), and the work
runs after the write that caused it, on the emulator's loop (``run``), so a client sees the owner
gone first and its dependents a moment later, as on a cluster. The collector writes through the
store like a client whose field manager is ``kube-controller-manager``.

Owner references are resolved as the real collector does (``attemptToDeleteItem``,
``classifyReferences``): by uid, name and kind; an owner in another namespace than a namespaced
dependent counts as absent; a cluster-scoped dependent of a namespaced owner, or a reference to a
kind the server does not serve, is never resolved and the dependent is left alone.
"""

from __future__ import annotations

import asyncio
import copy
from collections import deque
from typing import TYPE_CHECKING, Any

from . import errors as E

if TYPE_CHECKING:
    from .store import Store

ORPHAN = "orphan"
FOREGROUND = "foregroundDeletion"
MANAGER = "kube-controller-manager"

Ref = tuple[str, str, str]  # (resource key, namespace, name)


class GarbageCollector:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._live: dict[str, Ref] = {}  # uid -> where the object is
        self._dependents: dict[str, set[Ref]] = {}  # owner uid -> dependents
        self._queue: deque[tuple[str, Ref]] = deque()
        self._queued: set[tuple[str, Ref]] = set()
        self._wake: asyncio.Event | None = None
        self.deleted = 0  # dependents the collector deleted
        self.orphaned = 0  # references it removed

    # ------------------------------------------------------------ the graph
    def observe(self, key: str, type_: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        """Called for every committed write (the store's watch event)."""
        meta = obj["metadata"]
        where = (key, meta.get("namespace", ""), meta["name"])
        uid = meta.get("uid", "")
        refs = _owner_uids(obj)
        before = _owner_uids(old)
        if type_ == "DELETED":
            self._live.pop(uid, None)
            for dependent in self._dependents.get(uid, ()):
                self._enqueue("dependent", dependent)
            for owner in refs:
                self._unlink(owner, where)
                self._recheck_owner(owner)
            return
        self._live[uid] = where
        for owner in before - refs:
            self._unlink(owner, where)
            self._recheck_owner(owner)
        for owner in refs - before:
            self._dependents.setdefault(owner, set()).add(where)
        if refs and (type_ == "ADDED" or refs != before or any(r not in self._live for r in refs)):
            self._enqueue("dependent", where)
        finalizers = meta.get("finalizers") or []
        if meta.get("deletionTimestamp") and (ORPHAN in finalizers or FOREGROUND in finalizers):
            self._enqueue("owner", where)

    def _unlink(self, owner: str, dependent: Ref) -> None:
        deps = self._dependents.get(owner)
        if deps is not None:
            deps.discard(dependent)
            if not deps:
                del self._dependents[owner]

    def _recheck_owner(self, owner: str) -> None:
        where = self._live.get(owner)
        if where is not None:
            obj = self.store.objects.get(where[0], {}).get(where[1:])
            if obj is not None and FOREGROUND in (obj["metadata"].get("finalizers") or []):
                self._enqueue("owner", where)

    def _enqueue(self, kind: str, where: Ref) -> None:
        item = (kind, where)
        if item not in self._queued:
            self._queued.add(item)
            self._queue.append(item)
            if self._wake is not None:
                self._wake.set()

    def dependents_of(self, uid: str) -> frozenset[Ref]:
        return frozenset(self._dependents.get(uid, ()))

    # ------------------------------------------------------------ the work
    async def run(self) -> None:
        """Process the queue forever (cancelled when the emulator stops)."""
        self._wake = asyncio.Event()
        while True:
            await self._wake.wait()
            self._wake.clear()
            done = 0
            while self._queue:
                item = self._queue.popleft()
                self._queued.discard(item)
                self.process(*item)
                done += 1
                if done % 100 == 0:
                    await asyncio.sleep(0)  # a long cascade never starves the requests

    def process(self, kind: str, where: Ref) -> None:
        obj = self.store.objects.get(where[0], {}).get(where[1:])
        if obj is None:
            return
        try:
            if kind == "owner":
                self._owner(obj, where)
            else:
                self._dependent(obj, where)
        except E.ApiError:
            pass  # raced with a client (conflict, gone): a later event brings the item back if needed

    def _resolve(self, ref: dict[str, Any], dependent_ns: str) -> str:
        """'solid', 'dangling', 'waiting' (owner deleting in the foreground) or 'unresolvable'."""
        api_version = str(ref.get("apiVersion", ""))
        group = api_version.split("/")[0] if "/" in api_version else ""
        info = self.store.info_for_kind(group, str(ref.get("kind", "")))
        if info is None:
            return "unresolvable"
        if info.namespaced and not dependent_ns:
            return "unresolvable"
        where = self._live.get(str(ref.get("uid", "")))
        if where is None or where[0] != info.key or where[2] != ref.get("name") or (info.namespaced and where[1] != dependent_ns):
            return "dangling"
        owner = self.store.objects[where[0]].get(where[1:])
        if owner is None:
            return "dangling"
        meta = owner["metadata"]
        if meta.get("deletionTimestamp") and FOREGROUND in (meta.get("finalizers") or []):
            return "waiting"
        return "solid"

    def _dependent(self, obj: dict[str, Any], where: Ref) -> None:
        meta = obj["metadata"]
        finalizers = meta.get("finalizers") or []
        if meta.get("deletionTimestamp") and FOREGROUND not in finalizers:
            return  # already being deleted
        refs = [r for r in meta.get("ownerReferences") or [] if isinstance(r, dict)]
        states = [(r, self._resolve(r, where[1])) for r in refs]
        if not refs or any(s == "unresolvable" for _, s in states):
            return
        if any(s == "solid" for _, s in states):
            gone = {r.get("uid") for r, s in states if s in ("dangling", "waiting")}
            if gone:
                self._remove_refs(obj, where, gone)
            return
        if any(s == "waiting" for _, s in states) and self.dependents_of(meta.get("uid", "")):
            policy = "Foreground"
        elif ORPHAN in finalizers:
            policy = "Orphan"
        elif FOREGROUND in finalizers:
            policy = "Foreground"
        else:
            policy = "Background"
        info = self.store.storage_info(where[0])
        if info is None:
            return
        self.store.delete(info, where[1], where[2], {"propagationPolicy": policy, "preconditions": {"uid": meta.get("uid")}})
        self.deleted += 1

    def _owner(self, obj: dict[str, Any], where: Ref) -> None:
        meta = obj["metadata"]
        finalizers = meta.get("finalizers") or []
        uid = meta.get("uid", "")
        if ORPHAN in finalizers:
            for dep in sorted(self.dependents_of(uid)):
                dep_obj = self.store.objects.get(dep[0], {}).get(dep[1:])
                if dep_obj is not None:
                    self._remove_refs(dep_obj, dep, {uid})
            self._remove_finalizer(obj, where, ORPHAN)
        elif FOREGROUND in finalizers:
            blocking = False
            for dep in sorted(self.dependents_of(uid)):
                dep_obj = self.store.objects.get(dep[0], {}).get(dep[1:])
                if dep_obj is None:
                    continue
                if any(r.get("uid") == uid and r.get("blockOwnerDeletion") for r in dep_obj["metadata"].get("ownerReferences") or []):
                    blocking = True
                self._dependent(dep_obj, dep)
            if not blocking:
                self._remove_finalizer(obj, where, FOREGROUND)

    def _write(self, obj: dict[str, Any], where: Ref, new: dict[str, Any]) -> None:
        from .store import Author

        info = self.store.storage_info(where[0])
        if info is not None:
            self.store.update(info, where[1], where[2], new, is_patch=True, author=Author(MANAGER))

    def _remove_refs(self, obj: dict[str, Any], where: Ref, uids: set[Any]) -> None:
        new = copy.deepcopy(obj)
        remaining = [r for r in new["metadata"].get("ownerReferences") or [] if r.get("uid") not in uids]
        if remaining:
            new["metadata"]["ownerReferences"] = remaining
        else:
            new["metadata"].pop("ownerReferences", None)
        self._write(obj, where, new)
        self.orphaned += 1

    def _remove_finalizer(self, obj: dict[str, Any], where: Ref, finalizer: str) -> None:
        new = copy.deepcopy(obj)
        new["metadata"]["finalizers"] = [f for f in new["metadata"].get("finalizers") or [] if f != finalizer]
        self._write(obj, where, new)


def _owner_uids(obj: dict[str, Any] | None) -> set[str]:
    refs = ((obj or {}).get("metadata") or {}).get("ownerReferences") or []
    return {str(r.get("uid", "")) for r in refs if isinstance(r, dict)}
