"""gpuvm-operator: switch Azure GPU VMs on and off from a Kubernetes ``GpuVm`` resource."""

__version__ = "0.1.0"
