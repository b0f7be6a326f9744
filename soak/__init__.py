"""The chaos soak: ``./dev soak`` (``python -m soak``).

The real ``gpuvm-operator run`` process(es) against ``gpuvm-operator kube-emulator`` and
``gpuvm-operator azure-sim`` over loopback (bench/procs.py starts them), driven by thousands of
seeded intents while both sides misbehave and the operator is killed, then checked: every GpuVm
where its last intent wants it, no overlapping power operations, no operation the intents did not
need, nothing leaked, no traceback, no secret anywhere. Modules:

- ``plan``: the seeded generator (pure): the world, the intents and the disruptions;
- ``model``: what the intents as applied want, at any moment (pure);
- ``invariants``: the checks over what was recorded (pure);
- ``driver``: the processes, the intents, the faults, the kills, the collection (the shell);
- ``report``: the section of docs/reliability.md and reports/soak.json.
"""
