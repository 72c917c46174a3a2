"""Convert the official annealing guidance checkpoint (checkpoint.pt) to this pack's safetensors format.

    python scripts/convert_annealing_checkpoint.py checkpoint.pt ../../models/guidance_schedulers/annealing_sdxl.safetensors

The checkpoint is read with torch.load(weights_only=True): no code in it runs. The output holds the
network and, in its metadata, its configuration and what it was trained for (SDXL, eps, 4 latent
channels, DDPM timesteps). An existing output file is never overwritten.
The same in Python: samplers.annealing.convert_official_checkpoint(src, dst).
"""
import argparse
import sys
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parents[1]


def main():
    parser = argparse.ArgumentParser(description="Convert the official annealing guidance checkpoint to safetensors.")
    parser.add_argument("checkpoint", help="the official checkpoint.pt")
    parser.add_argument("output", help="where to write the .safetensors file (must not exist)")
    args = parser.parse_args()
    if not args.output.endswith(".safetensors"):
        sys.exit("output: the file name must end in .safetensors")
    sys.path.insert(0, str(PACK_ROOT))
    import standalone
    standalone.import_pack()  # samplers/ without ComfyUI
    from guidance_schedules.samplers.annealing import convert_official_checkpoint
    from guidance_schedules.samplers.files import FileRefused
    try:
        scheduler = convert_official_checkpoint(args.checkpoint, args.output)
    except (FileRefused, FileExistsError) as e:
        sys.exit(f"error: {e}")
    print(f"wrote {args.output}: {scheduler.network.config}, trained for {scheduler.trained_for.model_family}")


if __name__ == "__main__":
    main()
