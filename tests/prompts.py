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


def training_prompt(name, model=("GSTestTinyModel", {"model_type": "eps"}),
                    latent=("EmptyLatentImage", {"width": 64, "height": 64, "batch_size": 2}), **settings):
    """Annealing Guidance: Train Network on a tiny model: 10 ddim_uniform steps, 4 images in batches of 2, one
    optimizer step a batch; `settings` override the node's inputs."""
    inputs = {"model": ["1", 0], "latents": ["2", 0], "positive": ["1", 1], "negative": ["1", 2], "steps": 10,
              "scheduler": "auto", "training_images": 4, "batch_size": 2, "gradient_accumulation": 1,
              "learning_rate": 1e-3, "weight_decay": 0.01, "seed": 1, "delta_normalization": 5.0,
              "prompt_noise": False, "name": name, **settings}
    return {"1": {"class_type": model[0], "inputs": dict(model[1])},
            "2": {"class_type": latent[0], "inputs": dict(latent[1])},
            "3": {"class_type": "AnnealingGuidanceTrain", "inputs": inputs}}
