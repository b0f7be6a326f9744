"""The benchmark suite (``./dev bench``, ``python -m bench``); results in docs/benchmarks.md.

- ``__main__``: the command line. ``suite``: the three worlds and the order they run in.
- ``world``: fleets of VMs and GpuVms, and the processes serving them. ``procs``: starting,
  stopping and measuring those processes. ``clients``: the emulator's REST API, a watch,
  the simulator's admin endpoints. ``measure``: the measurements the suite and the smoke
  test share.
- ``script_baseline``: the queue-triggered script this project replaces, as a baseline.
- ``report`` and ``notes``: docs/benchmarks.md. ``reaction``: reaction and completion only.
- ``azuresim_cost``, ``kubeemu_cost``: per-request cost of the two servers in-process.
"""
