"""`sgeo extract` end to end: real image files, real Ray (local clusters and a `ray start` one), real Zarr.

Runs through the CLI where the CLI's behaviour is the point (exit codes, messages, a SIGKILL), and in
process on one module-scoped local Ray cluster for the dataset layouts and s3.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from PIL import Image

from conftest import open_extracted, run_sgeo

SHARD, BATCH = 3, 2  # 24 synthetic images: 8 shards, each encoded as batches of 2 + 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def kill_session(sid: int) -> None:
    """SIGKILL every process left in a session this test started (Ray's helpers outlive a killed driver)."""
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.pid != os.getpid() and os.getsid(proc.pid) == sid:
                proc.kill()
        except (psutil.Error, ProcessLookupError, PermissionError):
            pass


def store_files(store: Path) -> dict[str, bytes]:
    return {p.relative_to(store).as_posix(): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()}


def extract_args(root: Path, store: Path, *extra: str) -> list:
    fixed = f"extract --dataset synthetic --shard-size {SHARD} --batch-size {BATCH} --num-cpus 2".split()
    return [*fixed, "--root", root, "--store", store, *extra]


def manifest(store) -> list[dict]:
    return open_extracted(store).manifest().to_pylist()


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray cluster for the in-process runs of this module."""
    import ray

    ray.init(
        address="local",
        num_cpus=2,
        object_store_memory=256 << 20,
        include_dashboard=False,
        log_to_driver=False,
    )
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def reference_store(synthetic_root, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The synthetic dataset extracted by one uninterrupted CLI run."""
    store = tmp_path_factory.mktemp("ref") / "feats.zarr"
    result = run_sgeo(*extract_args(synthetic_root, store), check=True)
    return store, result


# ------------------------------------------------------------------------------------------ images


def jpeg(image: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90, **kw)
    return buf.getvalue()


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def scene(w: int = 48, h: int = 32) -> Image.Image:
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) % 256], axis=-1).astype(np.uint8)
    return Image.fromarray(rgb, "RGB")


def image_modes() -> dict[str, tuple[bytes, tuple[int, int]]]:
    """name -> (file bytes, (width, height) a viewer shows)."""
    base = scene()
    rgba = base.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(base.size))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    webp = io.BytesIO()
    base.save(webp, "WEBP", quality=80)
    deep = Image.fromarray((np.arange(48 * 32, dtype=np.uint16).reshape(32, 48) * 40), mode="I;16")
    return {
        "gray.png": (png(base.convert("L")), (48, 32)),
        "cmyk.jpg": (jpeg(base.convert("CMYK")), (48, 32)),
        "palette.png": (png(base.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)), (48, 32)),
        "rgba.png": (png(rgba), (48, 32)),
        "deep16.png": (png(deep), (48, 32)),
        "photo.webp": (webp.getvalue(), (48, 32)),
        "rotated.jpg": (jpeg(base, exif=exif.tobytes()), (32, 48)),
    }


def llava_sample(i: int, image: str | None) -> dict:
    sample = {
        "id": str(i),
        "conversations": [
            {"from": "human", "value": "<image>\nWhat is it?"},
            {"from": "gpt", "value": "A scene."},
        ],
    }
    if image is not None:
        sample["image"] = image
    return sample


def write_layouts(base: Path, sources: list[Path]) -> dict[str, tuple[Path, dict[str, Path]]]:
    """The same source images in every dataset layout: name -> (root, image_id -> source file)."""
    names = [f"im{i}{p.suffix}" for i, p in enumerate(sources)]
    layouts = {}

    root = base / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "train2017").mkdir()
    for name, src in zip(names, sources, strict=True):
        shutil.copy(src, root / "train2017" / name)
    images = [{"id": i, "file_name": n} for i, n in enumerate(names)]
    annotations = [{"id": 10 + i, "image_id": i, "caption": "a scene"} for i in range(len(names))]
    (root / "annotations" / "captions_train2017.json").write_text(
        json.dumps({"images": images, "annotations": annotations})
    )
    layouts["coco"] = (root, {f"train2017/{n}": s for n, s in zip(names, sources, strict=True)})

    root = base / "pretrain"
    ids = {f"0000{i}/{n}": s for i, (n, s) in enumerate(zip(names, sources, strict=True))}
    for image_id, src in ids.items():
        (root / "images" / image_id).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, root / "images" / image_id)
    (root / "blip_laion_cc_sbu_558k.json").write_text(
        json.dumps([llava_sample(i, k) for i, k in enumerate(ids)])
    )
    layouts["llava-pretrain"] = (root, ids)

    root = base / "mix"
    ids = dict(
        zip(
            ["coco/train2017/" + names[0], "gqa/images/" + names[1], "ocr_vqa/images/" + names[2]],
            sources,
            strict=True,
        )
    )
    for image_id, src in ids.items():
        (root / image_id).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, root / image_id)
    samples = [llava_sample(i, k) for i, k in enumerate(ids)] + [
        llava_sample(7, None),
        llava_sample(8, next(iter(ids))),
    ]
    (root / "llava_v1_5_mix665k.json").write_text(json.dumps(samples))
    layouts["llava-mix665k"] = (root, ids)

    root = base / "folder"
    ids = dict(zip(["a/b/" + names[0], names[1], "c/" + names[2]], sources, strict=True))
    for image_id, src in ids.items():
        (root / image_id).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, root / image_id)
    (root / ".hidden.png").write_bytes(sources[0].read_bytes())
    layouts["folder"] = (root, ids)
    return layouts


# ------------------------------------------------------------------------------------------ tests


def test_synthetic_cli_equals_encode_images(reference_store, synthetic_root, tiny):
    """Store rows are `encode_images` of the same decoded, preprocessed images, bit for bit (bf16 words)."""
    import torch

    from sgeo.cache import FeatureStore, verify_store
    from sgeo.jobs.extract import plan_resources
    from sgeo.pipeline.features import encode
    from sgeo.pipeline.images import load_image

    store_path, result = reference_store
    assert "24 ok, 0 failed, 0 skipped" in result.stdout, result.stdout
    assert "stores: clip (encoded), moge (encoded)" in result.stdout, result.stdout
    assert sorted(p.name for p in store_path.iterdir()) == ["clip", "moge"]  # one store per tower
    assert all(verify_store(str(store_path / name)) == [] for name in ("clip", "moge"))
    assert FeatureStore.open(str(store_path / "moge")).array_names == ["moge"]
    store = open_extracted(store_path)
    rows = store.manifest().to_pylist()
    assert [r["status"] for r in rows] == ["ok"] * 24 and store.anchor.num_shards == 8
    model, processor = tiny
    threads = torch.get_num_threads()
    torch.set_num_threads(plan_resources(2, 0).torch_threads)  # the job's actors use the same count
    try:
        for k in range(store.anchor.num_shards):
            shard = store.anchor.shard_rows(k)
            images = [load_image(synthetic_root / rows[r]["image_id"])[0] for r in shard]
            pixels = processor.preprocess_images(images)
            want = [model.encode_images(pixels[i : i + BATCH]) for i in range(0, len(shard), BATCH)]
            clip, moge = store.read(list(shard)).values()
            want_clip = encode(torch.cat([w["clip"] for w in want]), "bf16")
            want_moge = encode(torch.cat([w["moge"] for w in want]), "bf16")
            assert clip.dtype == np.uint16 and np.array_equal(clip, want_clip), f"clip of shard {k}"
            assert np.array_equal(moge, want_moge), f"moge of shard {k}"
    finally:
        torch.set_num_threads(threads)


def test_every_layout_extracts(ray_cluster, synthetic_root, tmp_path):
    """coco, llava-pretrain, llava-mix665k and folder; the same image gives the same features in each."""
    from sgeo.jobs.extract import ExtractConfig, run_extract

    sources = sorted((synthetic_root / "images").glob("*.png"))[:3]
    features = {}
    for name, (root, ids) in write_layouts(tmp_path, sources).items():
        store = tmp_path / f"{name}.zarr"
        summary = run_extract(
            ExtractConfig(dataset=name, root=root, store=str(store), batch_size=1, progress=False)
        )
        assert (summary.ok, summary.failed, summary.skipped) == (3, 0, 0), name
        opened = open_extracted(store)
        rows = opened.manifest().to_pylist()
        assert [r["image_id"] for r in rows] == sorted(ids), name
        assert all(r["status"] == "ok" for r in rows), rows
        clip, moge = opened.read(list(range(3))).values()
        for r in rows:
            digest = hashlib.sha256(ids[r["image_id"]].read_bytes()).hexdigest()
            assert r["content_hash"] == digest
            got = (clip[r["row"]], moge[r["row"]])
            if digest in features:  # batch_size 1: the same file gives the same bits in every layout
                assert np.array_equal(got[0], features[digest][0]) and np.array_equal(
                    got[1], features[digest][1]
                )
            features[digest] = got
    assert len(features) == 3


def sgeo_in_process(capsys, *args) -> tuple[int, str, str]:
    """The real CLI entry point, in this process (so it runs on the module's Ray cluster)."""
    from sgeo import cli

    capsys.readouterr()
    argv = sys.argv
    sys.argv = ["sgeo", *map(str, args)]
    try:
        cli.main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        sys.argv = argv
    out, err = capsys.readouterr()
    return code, out, err


def test_bad_files_recorded_and_every_mode_extracts(ray_cluster, tmp_path, capsys):
    """Broken, missing and escaping entries fail in the manifest; every image mode decodes; exit 0."""
    root = tmp_path / "mix"
    (root / "imgs").mkdir(parents=True)
    modes = image_modes()
    for name, (data, _) in modes.items():
        (root / "imgs" / name).write_bytes(data)
    good = jpeg(scene())
    bad = {  # sorted first, with the escaping path: shard 0 fails whole, shard 1 is mixed
        "imgs/bad_corrupt.jpg": good[: len(good) // 2],
        "imgs/bad_text.jpg": b"this is not an image, just some text\n",
        "imgs/bad_empty.png": b"",
    }
    for name, data in bad.items():
        (root / name).write_bytes(data)
    (tmp_path / "outside.png").write_bytes(png(scene()))  # exists, but lies outside the root
    entries = [f"imgs/{n}" for n in modes] + list(bad) + ["imgs/bad_missing.jpg", "../outside.png"]
    (root / "llava_v1_5_mix665k.json").write_text(
        json.dumps([llava_sample(i, e) for i, e in enumerate(entries)])
    )

    store = tmp_path / "feats.zarr"
    code, out, err = sgeo_in_process(
        capsys, "extract", "--dataset", "llava-mix665k", "--root", root, "--store", store, "--shard-size", "4"
    )
    assert code == 0, err[-3000:]
    assert "7 ok, 5 failed" in out and "5 images failed" in out, out

    opened = open_extracted(store)
    rows = {r["image_id"]: r for r in opened.manifest().to_pylist()}
    failed = {i for i, r in rows.items() if r["status"] == "failed"}
    assert failed == set(bad) | {"imgs/bad_missing.jpg", "../outside.png"}
    assert sorted(failed) == [r["image_id"] for r in sorted(rows.values(), key=lambda r: r["row"])][:5]
    for image_id in failed:
        assert rows[image_id]["error"], image_id
    assert "outside" in rows["../outside.png"]["error"] and rows["../outside.png"]["content_hash"] is None
    assert "no such file" in rows["imgs/bad_missing.jpg"]["error"]
    assert "empty" in rows["imgs/bad_empty.png"]["error"]
    clip, moge = opened.read(list(range(opened.num_rows))).values()
    for image_id, r in rows.items():
        if image_id in failed:
            assert not clip[r["row"]].any() and not moge[r["row"]].any()
        else:
            name = image_id.split("/")[-1]
            assert (r["width"], r["height"]) == modes[name][1], name
            assert r["content_hash"] == hashlib.sha256(modes[name][0]).hexdigest()
            assert clip[r["row"]].any() and moge[r["row"]].any()


def test_killed_run_resumes_byte_identical(reference_store, synthetic_root, tmp_path):
    """SIGKILL after the first commit; the rerun redoes only the rest and the store matches bit for bit."""
    ref, _ = reference_store
    store = tmp_path / "feats.zarr"
    args = [sys.executable, "-m", "sgeo.cli", *map(str, extract_args(synthetic_root, store))]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 300
    try:
        markers = store / "moge" / "commits"  # a shard's moge store is written after its clip store
        while not markers.is_dir() or not any(p.suffix == ".json" for p in markers.iterdir()):
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no shard committed in 300 s"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        kill_session(proc.pid)
        proc.stderr.close()
    time.sleep(0.5)
    committed = len([p for p in markers.iterdir() if p.suffix == ".json"])
    assert 1 <= committed < 8, f"{committed} of 8 shards committed at the kill: the run was not interrupted"

    result = run_sgeo(*extract_args(synthetic_root, store), check=True)
    done = 24 - SHARD * committed
    assert f"extracted {done} images ({8 - committed} shards)" in result.stdout, result.stdout
    assert f"{SHARD * committed} skipped (already committed)" in result.stdout, result.stdout
    got, want = store_files(store), store_files(ref)
    assert sorted(got) == sorted(want)
    differ = [name for name in want if got[name] != want[name]]
    assert differ == [], f"files differ from the uninterrupted run: {differ}"


def test_other_encoder_is_refused(reference_store, synthetic_root, tiny_dir, tmp_path, capsys):
    """Another clip_layer, or fp16 instead of bf16, into the same store: exit 2, one line, no traceback."""
    ref, _ = reference_store
    before = store_files(ref)
    copy = tmp_path / "tiny-copy"
    shutil.copytree(tiny_dir.parent, copy)
    config_path = copy / tiny_dir.name / "config.json"
    config = json.loads(config_path.read_text())
    config["vision_towers"][0]["layers"] = -1
    config_path.write_text(json.dumps(config, indent=2))

    result = run_sgeo(*extract_args(synthetic_root, ref, "--model", copy / tiny_dir.name))
    code, err = result.returncode, result.stderr
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (code, err[-3000:])
    assert err.startswith("error:") and "clip.layer" in err, err
    # the same through the entry point in process (no second interpreter start): fp16 into a bf16 store
    code, out, err = sgeo_in_process(capsys, *extract_args(synthetic_root, ref, "--dtype", "fp16"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (code, err[-3000:])
    assert err.startswith("error:") and "dtype" in err, err
    assert store_files(ref) == before


def test_address_joins_a_started_cluster(synthetic_root, tmp_path):
    """`--address` runs the job on a cluster that `ray start --head` started."""
    port = free_port()
    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    ray_bin = Path(sys.executable).with_name("ray")
    head = subprocess.Popen(
        [
            str(ray_bin),
            "start",
            "--head",
            "--port",
            str(port),
            "--num-cpus",
            "2",
            "--include-dashboard",
            "false",
            "--dashboard-host",
            "127.0.0.1",
            "--temp-dir",
            temp_dir,
            "--block",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert head.poll() is None, "ray start exited"
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline, "the head node did not come up"
            time.sleep(0.2)
        root = tmp_path / "folder"
        root.mkdir()
        for src in sorted((synthetic_root / "images").glob("*.png"))[:4]:
            shutil.copy(src, root / src.name)
        store = tmp_path / "feats.zarr"
        result = run_sgeo(
            "extract",
            "--dataset",
            "folder",
            "--root",
            root,
            "--store",
            store,
            "--shard-size",
            "2",
            "--address",
            f"127.0.0.1:{port}",
            check=True,
        )
        assert "4 ok, 0 failed" in result.stdout, result.stdout
        assert [r["status"] for r in manifest(store)] == ["ok"] * 4
    finally:
        kill_session(head.pid)  # every process of this head node, by pid (never `ray stop`: it kills by name)
        head.wait()
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_s3_store(ray_cluster, synthetic_root, s3_bucket):
    """An s3:// store on a local S3 server (moto) takes the same pipeline."""
    from sgeo.jobs.extract import ExtractConfig, run_extract

    config = ExtractConfig(
        dataset="synthetic",
        root=synthetic_root,
        store="s3://feats/synthetic.zarr",
        limit=5,
        shard_size=2,
        batch_size=1,
        storage_options=s3_bucket,
        progress=False,
    )
    summary = run_extract(config)
    assert (summary.ok, summary.failed, summary.shards_written) == (5, 0, 3)
    again = run_extract(config)
    assert (again.ok, again.skipped, again.shards_written) == (0, 5, 0)
    opened = open_extracted("s3://feats/synthetic.zarr", storage_options=s3_bucket)
    assert [r["status"] for r in opened.manifest().to_pylist()] == ["ok"] * 5
    clip, moge = opened.read([0, 4]).values()
    assert clip.any() and moge.any()


def test_cache_verify_and_info_take_a_directory_of_stores(reference_store, tmp_path):
    """`sgeo cache verify DIR` checks each tower's store of an extract's directory; a flipped byte in one is
    named, exit 1."""
    stores = tmp_path / "feats.zarr"
    shutil.copytree(reference_store[0], stores)
    result = run_sgeo("cache", "verify", stores)
    assert result.returncode == 0 and result.stdout.splitlines() == [
        f"{stores / 'clip'}: ok",
        f"{stores / 'moge'}: ok",
    ]
    info = json.loads(run_sgeo("cache", "info", stores, "--json", check=True).stdout)
    assert sorted(info) == [str(stores / "clip"), str(stores / "moge")]
    shard = stores / "moge" / "moge" / "c" / "0" / "0" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF
    shard.write_bytes(bytes(data))
    result = run_sgeo("cache", "verify", stores)
    assert result.returncode == 1 and f"{stores / 'clip'}: ok" in result.stdout
    assert "moge" in result.stderr and "problem:" in result.stderr
