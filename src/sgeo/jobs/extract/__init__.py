"""`sgeo extract`: every image of a dataset once through the frozen towers into a feature store (Ray Data).

config.py (options, summary) / resources.py (workers, threads) / ray_runtime.py (cluster) / shard_worker.py
(one shard: decode, encode, write) / job.py (the job).
"""

from .config import EXTRACT_PRECISIONS, ExtractConfig, ExtractSummary, check_config
from .job import run_extract, steady_rate
from .resources import Resources, plan_resources
from .shard_worker import ShardWorker, autocast_dtype, encode_shard, read_image

__all__ = [
    "EXTRACT_PRECISIONS",
    "ExtractConfig",
    "ExtractSummary",
    "Resources",
    "ShardWorker",
    "autocast_dtype",
    "check_config",
    "encode_shard",
    "plan_resources",
    "read_image",
    "run_extract",
    "steady_rate",
]
