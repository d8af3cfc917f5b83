"""The process a training run lives in: the CPU accelerator and a single-rank environment when nobody
launched it, torch threads on CPU, and DeepSpeed's chatter."""

from __future__ import annotations

import os
import re
import socket

LAUNCHER_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
# The interfaces gloo and NCCL listen on (their own sockets, beside the rendezvous store): a single process
# nobody launched keeps them on loopback. Set, like LAUNCHER_ENV, only for such a run and removed after it.
SOCKET_ENV = ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME")


def prepare_environment() -> tuple[str, bool]:
    """(device type, launched): the CPU accelerator and a single-rank environment when nobody launched us.

    Unlaunched, every socket the run opens listens on loopback: gloo's and NCCL's on the loopback interface
    (unless the user named one), and `setup` rendezvouses through an in-memory store instead of torch's
    TCPStore, which listens on every address. A launcher's (torchrun, deepspeed) settings are left as given."""
    import torch

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    cuda = torch.cuda.is_available()
    if not cuda:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    deepspeed_arch_list()
    launched = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    if not launched:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(_free_port()))  # fmt: skip
        for key in SOCKET_ENV:
            os.environ.setdefault(key, loopback_interface())
    os.environ.setdefault("LOCAL_RANK", os.environ["RANK"])
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    return ("cuda" if cuda else "cpu"), launched


def deepspeed_arch_list() -> str | None:
    """Make TORCH_CUDA_ARCH_LIST readable by DeepSpeed's op builder, which parses each entry with int(): an
    arch-specific target such as NGC images' "9.0a" fails its fused-Adam build ("invalid literal for int()",
    seen on an H200). Its ops use nothing arch-specific, so "9.0" builds them. Returns the value it set."""
    value = os.environ.get("TORCH_CUDA_ARCH_LIST")
    if not value:
        return None
    cleaned = re.sub(r"(\d+\.\d+)[a-z]\b", r"\1", value)
    os.environ["TORCH_CUDA_ARCH_LIST"] = cleaned
    return cleaned


def loopback_interface() -> str:
    """The name of the interface that holds 127.0.0.1 ("lo" on Linux, "lo0" on macOS)."""
    import psutil

    for name, addresses in psutil.net_if_addrs().items():
        if any(a.family == socket.AF_INET and a.address.startswith("127.") for a in addresses):
            return name
    return "lo"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_threads(num_workers: int) -> int | None:
    """On CPU, leave one core per loader worker (oversubscribed OpenMP threads spin and stall every op);
    an explicit OMP_NUM_THREADS wins. Returns the previous thread count, to restore at cleanup."""
    import torch

    if "OMP_NUM_THREADS" in os.environ:
        return None
    cores = len(os.sched_getaffinity(0)) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, cores - num_workers))
    return previous


def quiet_deepspeed() -> None:
    import logging

    from deepspeed.utils import logger

    logger.setLevel(logging.WARNING)
    # On a machine with a CUDA toolkit but no GPU, building DeepSpeed's CPU comm op warns about the runtime.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
