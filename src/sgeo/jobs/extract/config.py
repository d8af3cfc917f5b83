"""What `sgeo extract` is asked to do (`ExtractConfig`, checked in one place) and what it reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sgeo.cache import human_bytes
from sgeo.errors import SgeoError
from sgeo.precision import accepted, check_precision


@dataclass
class ExtractConfig:
    root: Path
    store: str
    dataset: str = "synthetic"
    model: str = "tiny"
    split: str | None = None
    dtype: str = "bf16"
    batch_size: int | str = 16  # or "auto" (GPUs only): the batch that fills the free device memory
    shard_size: int = 64
    num_cpus: int | None = None
    num_gpus: int = 0
    address: str | None = None
    limit: int | None = None
    image_aspect_ratio: str | None = None  # pad | crop; None: the dataset's default (see job.py)
    autocast: bool = True  # on GPU, encode under autocast to the store dtype; CPU encodes in fp32
    precision: str | None = None  # autocast to this on any device (fp32: none); None: as `autocast` says
    storage_options: dict | None = None  # fsspec options of an s3://... store (library use)
    progress: bool = True
    retry_failed: bool = False  # also redo the rows committed as failed (their files re-read), keep the rest
    towers: list[str] | None = None  # the towers whose stores to write (None: every tower of the model)
    compile: str | None = None  # torch.compile backend of the towers (--compile: "inductor"); None: eager


# what the towers autocast to, on any device (see shard_worker.autocast_dtype)
EXTRACT_PRECISIONS = accepted("bf16", "fp16", "fp32")


def batch_size_option(value: str) -> int | str:
    """--batch-size as given on the command line: a number, or `auto`."""
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise SgeoError(f"--batch-size must be a number or auto, got {value!r}") from None


def check_config(config: ExtractConfig) -> None:
    from sgeo.cache import ENCODINGS
    from sgeo.model.processing import ASPECT_MODES

    if config.dtype not in ENCODINGS:
        raise SgeoError(f"--dtype {config.dtype!r} is not one of {', '.join(ENCODINGS)}")
    check_precision(config.precision, EXTRACT_PRECISIONS)
    if config.precision not in (None, "fp32") and not config.autocast:
        raise SgeoError(
            f"--precision {config.precision} autocasts; drop --no-autocast (or use --precision fp32)"
        )
    if config.batch_size == "auto" and config.num_gpus == 0:
        raise SgeoError(
            "--batch-size auto sizes batches from GPU memory: give --num-gpus, or a number on CPU (e.g. 16)"
        )
    for name in ("batch_size", "shard_size") if config.batch_size != "auto" else ("shard_size",):
        if getattr(config, name) < 1:
            raise SgeoError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(config, name)}")
    if config.limit is not None and config.limit < 1:
        raise SgeoError(f"--limit must be at least 1, got {config.limit}")
    if config.num_cpus is not None and config.num_cpus < 1:
        raise SgeoError(f"--num-cpus must be at least 1, got {config.num_cpus}")
    if config.num_gpus < 0:
        raise SgeoError(f"--num-gpus must be 0 or more, got {config.num_gpus}")
    if config.image_aspect_ratio not in (None, *ASPECT_MODES):
        raise SgeoError(
            f"--image-aspect-ratio must be one of {', '.join(ASPECT_MODES)}, got {config.image_aspect_ratio}"
        )


@dataclass
class StageTimes:
    """Busy seconds per stage, summed over the shards this run wrote (threads and actors added up)."""

    decode: float = 0.0  # read + decode + preprocess, per image, on the decode threads
    wait: float = 0.0  # the towers idle, waiting for decoded pixels
    encode: float = 0.0  # the towers
    write: float = 0.0  # shard arrays, digests and the commit marker
    batch: int = 0  # the batch the workers encoded with (--batch-size, or what auto picked; the largest)

    def add(self, row: dict) -> None:
        for name in ("decode", "wait", "encode", "write"):
            setattr(self, name, getattr(self, name) + float(row[f"{name}_s"]))
        self.batch = max(self.batch, int(row.get("batch_size", 0)))

    @property
    def worker(self) -> float:
        """Seconds the workers spent on their shards (the towers busy, waiting for pixels, or writing)."""
        return self.encode + self.wait + self.write


@dataclass
class ExtractSummary:
    store: str
    images: int  # rows in the store
    ok: int  # images encoded by this run (retried ones included)
    failed: int  # images recorded as failed by this run (retried ones included)
    skipped: int  # images of shards an earlier run committed that this run left as they were
    shards_written: int
    shards_skipped: int
    seconds: float
    bytes_written: int  # feature bytes of the shards this run wrote
    startup_seconds: float = 0.0  # from the start until the first shard was encoded (Ray, workers, models)
    steady_images_per_s: float = 0.0  # throughput once warm (steady_rate; 0 with too few shards)
    busy: StageTimes = field(default_factory=StageTimes)
    retried: int = 0  # --retry-failed: rows recorded as failed that this run redid
    recovered: int = 0  # of those, the ones now ok
    failed_earlier: int = 0  # rows an earlier run recorded as failed, still failed and not redone by this run
    towers: dict[str, str] = field(
        default_factory=dict
    )  # tower -> "encoded" (this run wrote to its store) or "kept"

    @property
    def images_per_s(self) -> float:
        return (self.ok + self.failed) / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        done = self.ok + self.failed
        # the failures of earlier runs are in the store too: a rerun never says "0 failed" and stops there
        earlier = f" (and {self.failed_earlier} earlier)" if self.failed_earlier else ""
        out = [
            f"extracted {done} images ({self.shards_written} shards) in {self.seconds:.1f} s: {self.ok} ok, "
            f"{self.failed} failed{earlier}, {self.skipped} skipped (already committed); "
            f"{self.images_per_s:.2f} images/s; {human_bytes(self.bytes_written)} written to {self.store}"
        ]
        if self.towers:  # one store per tower: say which this run encoded and which it left as they were
            out.append("stores: " + ", ".join(f"{name} ({what})" for name, what in self.towers.items()))
        if self.steady_images_per_s:
            out.append(
                f"startup (cluster, workers, model load) {self.startup_seconds:.1f} s, then "
                f"{self.steady_images_per_s:.2f} images/s once warm"
            )
        if done:
            b = self.busy
            out.append(
                f"per image: decode {1e3 * b.decode / done:.0f} ms (on its threads), encode {1e3 * b.encode / done:.0f} ms, "
                f"waiting for pixels {1e3 * b.wait / done:.0f} ms, write {1e3 * b.write / done:.0f} ms"
            )
        if done and self.busy.worker > 0:
            # what bounds the rate: the towers busy nearly all of the workers' time means the device (or the
            # CPU's matrix units) is the limit; a large wait share means decoding cannot keep up
            b = self.busy
            batch = f"batch {b.batch}: " if b.batch else ""
            out.append(
                f"{batch}towers busy {100 * b.encode / b.worker:.0f}% of the workers' time, waiting for pixels "
                f"{100 * b.wait / b.worker:.0f}%, writing {100 * b.write / b.worker:.0f}%; decoding kept "
                f"{b.decode / b.worker:.2f} threads busy per worker"
            )
        if self.retried:
            out.append(
                f"retried {self.retried} images that had failed: {self.recovered} now ok, "
                f"{self.retried - self.recovered} still failed"
            )
        if self.failed:
            out.append(
                f"{self.failed} images failed; their errors are in the store's manifest "
                f"(sgeo cache info {self.store}); rerun with --retry-failed after fixing them"
            )
        if self.failed_earlier:
            rows = "1 row" if self.failed_earlier == 1 else f"{self.failed_earlier} rows"
            out.append(f"{rows} failed earlier; rerun with --retry-failed after fixing them")
        return out
