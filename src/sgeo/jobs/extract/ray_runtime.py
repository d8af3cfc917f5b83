"""The Ray side of `sgeo extract`: start a local cluster (loopback only, sized for this machine) or join one,
quiet Ray Data's own output, and recover a user error that crossed Ray."""

from __future__ import annotations

import logging
import os

from sgeo.errors import SgeoError

# Stats rows are all that crosses the object store: a small store is plenty, and leaves memory to the workers.
OBJECT_STORE_BYTES = 256 << 20
# Only these variables reach workers of a cluster joined with --address (no credentials are forwarded).
FORWARDED_ENV = (
    "SGEO_HOME", "SGEO_CLIP_PATH", "SGEO_MOGE_PATH", "SGEO_LLAVA_PATH", "HF_HOME", "HF_HUB_CACHE", "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
)  # fmt: skip


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def start_ray(address: str | None, num_cpus: int, num_gpus: int) -> bool:
    """Join the cluster at `address` or start a local one; True if this call started or joined it (and so
    must shut it down), False when the caller already runs one."""
    import ray

    if ray.is_initialized():
        return False
    common = {"include_dashboard": False, "logging_level": logging.ERROR, "log_to_driver": False}
    if address:
        env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
        try:
            ray.init(address=address, runtime_env={"env_vars": env}, **common)
        except (ConnectionError, ValueError, RuntimeError) as e:
            raise SgeoError(f"cannot join the Ray cluster at {address}: {' '.join(str(e).split())}") from None
        return True
    loopback_only()
    # address="local": never attach to a cluster some earlier `ray start` left on this machine.
    # worker_niceness 0: Ray starts its workers at nice 15 (to favour its own servers), but here the workers
    # are the job; at 15 any other process on a shared machine takes their cores first (issue 31: encoding
    # ran ~40% slower per image in the workers than in a plain loop beside the same load).
    ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, object_store_memory=OBJECT_STORE_BYTES,
             dashboard_host="127.0.0.1", _system_config={"worker_niceness": 0}, **common)  # fmt: skip
    return True


def loopback_only() -> None:
    """Make a local cluster listen on 127.0.0.1 only (GCS, raylet, workers, agents).

    Ray turns `_node_ip_address="127.0.0.1"` into the machine's external address; its single-machine mode
    (what it uses on macOS and Windows) keeps every server on loopback. Workers inherit the variable."""
    import ray._private.ray_constants as ray_constants

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False  # read at call time by get_node_ip_address


def configure_data_context() -> None:
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # our own bar counts images, not blocks
    ctx.print_on_execution_start = False
    ctx.enable_auto_log_stats = False
    ctx.execution_options.preserve_order = False  # writes are order-free: each shard goes to its own rows
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    progress_logger = logging.getLogger("ray.data._internal.progress")
    if not any(isinstance(f, _QuietProgressNotice) for f in progress_logger.filters):
        progress_logger.addFilter(_QuietProgressNotice())


class _QuietProgressNotice(logging.Filter):
    """Drops Ray Data's notice that its progress bars are off (they are off on purpose)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Progress bars disabled" not in record.getMessage()


def unwrap(error: BaseException) -> SgeoError | None:
    """The user error (SgeoError) behind an exception that crossed Ray, if any."""
    seen = set()
    stack = [error]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, SgeoError):
            return e
        stack += [e.__cause__, e.__context__, getattr(e, "cause", None)]
    return None
