"""The shared annealing reference data (../shared/reference/annealing/ and annealing_training/): test data
only, never copied into the pack. Tests that need it skip with this reason when it is absent."""
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


TRAINING = REFERENCE.parent / "annealing_training" / "parity_training.safetensors"


def require_training_reference():
    """The reference trainer's parity vectors: 4 training steps each for EPS and flow, two initialisations."""
    if not TRAINING.is_file():
        from host_support import skip_or_fail
        skip_or_fail(f"annealing training reference data not found in {TRAINING.parent}")
    from safetensors.torch import load_file
    return load_file(str(TRAINING))
