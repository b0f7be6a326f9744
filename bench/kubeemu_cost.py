"""Per-request cost of the Kubernetes emulator early vs. late in its life.

Proves that serving more requests does not make requests slower (no request-log scans, bounded
watch history): times GET/PATCH/LIST/CREATE over requests 0-100, 900-1000 and, with --long,
around 10,000, against one emulator in a ServerThread driven by the official client.

    python bench/kubeemu_cost.py [--long]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from kubernetes import client

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from testbed.kubeemu import KubeEmulator  # noqa: E402
from testbed.serving import ServerThread  # noqa: E402

G, V = "test.kubeemu.dev", "v1"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--long", action="store_true", help="also measure around request 10,000")
    args = parser.parse_args()
    emu = KubeEmulator([ROOT / "tests" / "testbed" / "data" / "kubeemu-widgets.yaml"])
    with ServerThread(emu, name="kube-emulator"):
        config = client.Configuration()
        config.host = emu.url
        api = client.CustomObjectsApi(client.ApiClient(config))
        counter = iter(range(10**9))

        def create() -> None:
            # Into another resource, so LIST below measures a constant 20 objects: list cost grows with
            # the objects of the listed resource (O(n log n)), which is not what this bench is about.
            api.create_cluster_custom_object(G, V, "gadgets", {
                "apiVersion": f"{G}/{V}", "kind": "Gadget", "metadata": {"generateName": "g-"}})

        for i in range(19):
            api.create_namespaced_custom_object(G, V, "default", "widgets", {
                "apiVersion": f"{G}/{V}", "kind": "Widget", "metadata": {"name": f"w{i}"}, "spec": {"size": 1}})

        api.create_namespaced_custom_object(G, V, "default", "widgets", {
            "apiVersion": f"{G}/{V}", "kind": "Widget", "metadata": {"name": "hot"}, "spec": {"size": 1}})
        ops: dict[str, Callable[[], object]] = {
            "GET": lambda: api.get_namespaced_custom_object(G, V, "default", "widgets", "hot"),
            "PATCH": lambda: api.patch_namespaced_custom_object(G, V, "default", "widgets", "hot",
                                                                {"spec": {"replicas": next(counter)}}),
            "LIST": lambda: api.list_namespaced_custom_object(G, V, "default", "widgets"),
            "CREATE": create,
        }
        windows = [(0, 100), (900, 1000)] + ([(9900, 10000)] if args.long else [])
        samples: dict[tuple[str, int], list[float]] = {}
        served = 0
        for start, end in windows:
            while served < start:  # filler traffic: a mix of all verbs
                list(ops.values())[served % 4]()
                served += 1
            for i in range(end - start):
                verb = list(ops)[i % 4]
                t0 = time.perf_counter()
                ops[verb]()
                samples.setdefault((verb, start), []).append((time.perf_counter() - t0) * 1000)
                served += 1
        print(f"{'verb':<8}" + "".join(f"{f'req {s}-{e} mean/p99 ms':>30}" for s, e in windows))
        for verb in ops:
            row = f"{verb:<8}"
            for start, _ in windows:
                xs = sorted(samples[(verb, start)])
                p99 = xs[min(len(xs) - 1, int(round(0.99 * (len(xs) - 1))))]
                row += f"{statistics.mean(xs):>20.2f} / {p99:>6.2f}"
            print(row)
        gadgets = len(api.list_cluster_custom_object(G, V, "gadgets")["items"])
        print(f"requests served: {emu.stats()['total']}, widgets listed: 20, gadgets created: {gadgets}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
