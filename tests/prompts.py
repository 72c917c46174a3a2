"""API-format prompts on the tiny test model, shared by the server tests and benchmarks/frontend_check.py."""


def calibration_prompt(name):
    """LinearAG Calibrate on the tiny EPS model: euler, 8 karras steps, 2 runs of a batch of 2."""
    return {
        "1": {"class_type": "GSTestTinyModel", "inputs": {"model_type": "eps"}},
        "3": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 2}},
        "7": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "8": {"class_type": "BasicScheduler", "inputs": {"model": ["1", 0], "scheduler": "karras", "steps": 8, "denoise": 1.0}},
        "12": {"class_type": "LinearAGCalibrate", "inputs": {
            "model": ["1", 0], "positive": ["1", 1], "negative": ["1", 2], "cfg": 5.0, "sampler": ["7", 0],
            "sigmas": ["8", 0], "latent_image": ["3", 0], "runs": 2, "seed": 0, "name": name}},
    }
