"""Device choice, CUDA math settings and the accelerator peak used for MFU."""

from __future__ import annotations

import logging

import torch

from trainer.config import OptionError, TrainerError

log = logging.getLogger(__name__)

# Dense (no sparsity) bf16 tensor-core peak per GPU, keyed by the exact name CUDA reports and
# the compute capability it must have: a substring match would read "L4" into "L40S" and an
# H100 PCIe (756 TFLOP/s) as an SXM (989). Figures are NVIDIA's datasheets.
PEAK_BF16: dict[tuple[str, tuple[int, int]], float] = {
    ("NVIDIA H100 80GB HBM3", (9, 0)): 989e12,  # SXM5
    ("NVIDIA H100 PCIe", (9, 0)): 756e12,
    ("NVIDIA H100 NVL", (9, 0)): 835e12,
    ("NVIDIA H200", (9, 0)): 989e12,  # SXM
    ("NVIDIA H200 NVL", (9, 0)): 835e12,
    ("NVIDIA GH200 480GB", (9, 0)): 989e12,
    ("NVIDIA B200", (10, 0)): 2250e12,
    ("NVIDIA A100-SXM4-80GB", (8, 0)): 312e12,
    ("NVIDIA A100-SXM4-40GB", (8, 0)): 312e12,
    ("NVIDIA A100-PCIE-40GB", (8, 0)): 312e12,
    ("NVIDIA A100 80GB PCIe", (8, 0)): 312e12,
    ("NVIDIA A10", (8, 6)): 125e12,
    ("NVIDIA A10G", (8, 6)): 70e12,
    ("NVIDIA L4", (8, 9)): 121e12,
    ("NVIDIA L40", (8, 9)): 181e12,
    ("NVIDIA L40S", (8, 9)): 362e12,
    ("NVIDIA GeForce RTX 4090", (8, 9)): 165e12,  # fp32 accumulate
    ("NVIDIA GeForce RTX 3090", (8, 6)): 71e12,  # fp32 accumulate
}


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """`auto` -> this rank's GPU when CUDA is there, else the CPU; a missing device is one line."""
    if name == "auto":
        name = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise OptionError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise TrainerError(f"device {name!r} requested but CUDA is not available here")
        count = torch.cuda.device_count()
        if device.index is None:  # torchrun ranks each take their own GPU
            device = torch.device("cuda", local_rank)
        if device.index >= count:
            raise TrainerError(
                f"device {str(device)!r} requested but this machine has {count} GPU(s)"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise TrainerError(f"device {name!r} requested but MPS is not available here")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise TrainerError(f"device {name!r} is not supported; use auto, cpu, cuda or cuda:N")
    return device


def prepare_cuda(device: torch.device) -> None:
    """TF32 for fp32 matmuls and convolutions (`--no-bf16` runs on tensor cores, not fp32 FMA);
    the peak-memory count started for this run, not an earlier one in the same process."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        # Unlike most torch.cuda calls, this one does not initialise CUDA: as a fresh process's
        # first CUDA call it failed with "Invalid device argument".
        torch.cuda.init()
        torch.cuda.reset_peak_memory_stats(device)


def peak_flops(device: torch.device, *, bf16: bool = True) -> float | None:
    """The device's dense peak for the run's matmul precision, or None when unknown."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    capability = torch.cuda.get_device_capability(device)
    peak = PEAK_BF16.get((name, tuple(capability)))
    if peak is None:
        log.warning(
            "mfu unknown device=%r capability=%s; pass peak_flops to report MFU", name, capability
        )
        return None
    # TF32 tensor cores run at half the bf16 rate on Ampere, Ada and Hopper.
    return peak if bf16 else peak / 2


def start_process_group(device: torch.device, rank: int, world: int) -> None:
    """Join torchrun's group once the data is ready; a peer that never comes is one line."""
    import datetime

    import torch.distributed as dist

    if device.type == "cuda":
        torch.cuda.set_device(device)
    try:
        dist.init_process_group(
            "nccl" if device.type == "cuda" else "gloo",
            timeout=datetime.timedelta(minutes=30),  # data is ready: only peers' starts remain
        )
    except Exception as exc:  # c10d raises several types for a peer that never came
        raise TrainerError(
            f"rank {rank} of {world} could not join the process group ({exc}); "
            "checkpoints are intact, rerun the same torchrun command to resume"
        ) from None
