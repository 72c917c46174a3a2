"""The shared annealing reference data (../shared/reference/annealing/ and annealing_training/): test data
only, never copied into the pack. Tests that need it skip with this reason when it is absent. It sits beside the
pack's checkout in this project (../shared/reference); elsewhere GS_REFERENCE names the folder that holds
annealing/ and annealing_training/."""
import os
from pathlib import Path

REFERENCE_ROOT = Path(os.environ.get("GS_REFERENCE") or Path(__file__).resolve().parents[2] / "shared" / "reference")
REFERENCE = REFERENCE_ROOT / "annealing"
HOW = ("these parity tests compare with the authors' code's outputs, which are not part of the pack: set GS_REFERENCE "
       "to the folder holding annealing/ and annealing_training/ to run them")
CHECKPOINT = REFERENCE / "official_sdxl_checkpoint.pt"
PARITY = REFERENCE / "parity_vectors.safetensors"


def require_reference():
    if not (CHECKPOINT.is_file() and PARITY.is_file()):
        from host_support import skip_or_fail
        skip_or_fail(f"no annealing reference data in {REFERENCE}: {HOW}")
    from safetensors.torch import load_file
    return load_file(str(PARITY))


TRAINING = REFERENCE.parent / "annealing_training" / "parity_training.safetensors"


def require_training_reference():
    """The reference trainer's parity vectors: 4 training steps each for EPS and flow, two initialisations."""
    if not TRAINING.is_file():
        from host_support import skip_or_fail
        skip_or_fail(f"no annealing training reference data in {TRAINING.parent}: {HOW}")
    from safetensors.torch import load_file
    return load_file(str(TRAINING))
