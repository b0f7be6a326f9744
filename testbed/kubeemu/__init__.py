"""An in-process Kubernetes API emulator for CI, the demo and benchmarks.

A real kube-apiserver cannot run here, so the operator is exercised against this emulator,
which answers kopf and the official ``kubernetes`` client the way kube-apiserver v1.36 does
for the subset they use: discovery, CRUD with resourceVersion/generation bookkeeping, status
subresources, finalizers, selectors, paging, resumable watches with bookmarks, CRD schema
pruning/defaulting/validation including CEL rules, metadata.managedFields, pods, garbage
collection by ownerReferences, and (optional) bearer-token RBAC with SelfSubjectAccessReviews and
SelfSubjectReviews; plus seeded fault injection for chaos runs. Divergences are listed in README.md here.
"""

from .authz import Identity, Rule
from .server import CrdLoadError, KubeEmulator

__all__ = ["KubeEmulator", "CrdLoadError", "Identity", "Rule"]
