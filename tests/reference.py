"""The shared annealing reference data (../shared/reference/annealing/): test data only, never
copied into the pack. Tests that need it skip with this reason when it is absent."""
from pathlib import Path


REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "annealing"
CHECKPOINT = REFERENCE / "official_sdxl_checkpoint.pt"
PARITY = REFERENCE / "parity_vectors.safetensors"


def require_reference():
    if not (CHECKPOINT.is_file() and PARITY.is_file()):
        from host_support import skip_or_fail
        skip_or_fail(f"annealing reference data not found in {REFERENCE}")
    from safetensors.torch import load_file
    return load_file(str(PARITY))
