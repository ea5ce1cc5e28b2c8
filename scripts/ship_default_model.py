"""Make the shipped default model from a training run: merge the SSB adapter of a checkpoint into its
base weights and store the result as float16 safetensors in endo_depth_model/weights/ (the node and
the demo load it by default; it is cast back to float32 on load).

    .venv/bin/python scripts/ship_default_model.py runs/pretrain/vitt_pretrained.safetensors \
        runs/synthetic_target/checkpoints/best

Without a checkpoint the base itself is shipped (``--stage`` says what it is); the pose network then
stays as shipped.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    import torch

    from endo_depth_model.checkpoint import quantize_int8, read_state_dict, save_safetensors
    from endo_depth_model.loading import (
        META_FILE,
        POSE_FILE,
        load_depth_model,
        shipped_weights,
        weights_fill_border,
    )

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("base", type=Path, help="base VDA weights (stage 1)")
    p.add_argument(
        "checkpoint", type=Path, nargs="?", help="training checkpoint folder with the SSB adapter (stage 2)"
    )
    p.add_argument(
        "--stage",
        default="supervised source pretraining + self-supervised SSB fine-tuning on the target domain",
        help="what the shipped weights are (stored in the file's metadata)",
    )
    p.add_argument(
        "--pose",
        type=Path,
        help="pose network weights to ship (e.g. from pretrain --pose-steps); default: the checkpoint's",
    )
    p.add_argument("--pose-stage", default="", help="what the --pose weights are (metadata)")
    p.add_argument("--encoder", default="vitt")
    p.add_argument("--out", type=Path, default=ROOT / "endo_depth_model" / "weights")
    args = p.parse_args()
    bundle = load_depth_model(args.encoder, args.base, checkpoint=args.checkpoint, device="cpu", merge=True)
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in bundle.model.state_dict().items()}
    if any(".lora_" in k or ".base_layer." in k for k in state):
        raise SystemExit("merge failed: adapter keys left in the state dict")
    meta = (
        json.loads((args.checkpoint / META_FILE).read_text())
        if args.checkpoint is not None and (args.checkpoint / META_FILE).is_file()
        else {}
    )
    args.out.mkdir(parents=True, exist_ok=True)
    path = save_safetensors(
        state,
        args.out / shipped_weights(args.encoder).name,
        metadata={
            "config": args.encoder,
            "stage": args.stage,
            "base": args.base.name,
            "checkpoint_step": str(meta.get("step", "")),
            "min_depth": "0.001",
            "max_depth": "0.3",
            "dtype": "float16 (cast to float32 on load)",
            # the engines fill the scope's border as training did (the bundle says so: marked base weights
            # without a stage-2 checkpoint, which trains without the fill)
            **({"fill_border": "1"} if bundle.fill_border else {}),
        },
    )
    if weights_fill_border(args.base) and not bundle.fill_border:
        print("note: base trained with the border filled, stage 2 without: the merged weights are unmarked")
    n_values = sum(v.numel() for v in state.values())
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB, {n_values:,} values)")
    pose_file = args.checkpoint / POSE_FILE if args.checkpoint is not None else None
    stage = "pose network of the same checkpoint"
    if args.pose is not None:
        pose_file, stage = args.pose, args.pose_stage or f"pose network from {args.pose.name}"
        if not pose_file.is_file():
            raise SystemExit(f"pose weights not found: {pose_file}")
    if pose_file is not None and pose_file.is_file():
        # the pose network (12.5M parameters) fits the repository budget only as int8 weights
        pose = save_safetensors(
            quantize_int8(read_state_dict(pose_file)),
            args.out / shipped_weights(args.encoder, pose=True).name,
            metadata={"stage": stage, "storage": "int8 per-channel weights"},
        )
        print(f"wrote {pose} ({pose.stat().st_size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
