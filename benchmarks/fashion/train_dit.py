"""Train the fashion benchmark's DiT twin (dit.py: ComfyUI's own Flux class at a tiny size) by flow matching.

Seeded; about 17 minutes on one CPU thread (0.35 s a step). Same data, prompts and budget as train.py's UNet (3000 steps of 32
images; each image's prompt one of its class's four names in one of the five training templates, the empty
prompt a tenth of the time). Rectified flow: x_t = (1 - sigma) x_0 + sigma noise, the model predicts the
velocity noise - x_0 (mean squared error), sigma uniform in (0, 1) as ComfyUI's Train LoRA node draws it
(model_sampling.percent_to_sigma of a uniform percent: uniform at shift 1). AdamW with warm-up and cosine decay,
an EMA of the weights. Needs ComfyUI (COMFYUI_PATH or ~/ComfyUI; any release the pack supports).

Writes dit_model.safetensors (the EMA weights, float16, Flux.1's key names under "diffusion_model.") and
dit_model.json: the numbers train.py writes for the UNet, judged by the committed classifier (its test accuracy;
per-class accuracy of 64 samples per class, 12 Euler steps from the canonical prompt; their mean; the Frechet
distance of their classifier features to real test images), plus the training time.

    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/fashion/train_dit.py
"""
import json

import torch
from torch.nn import functional as F

import dit
import task
from train import BATCH, STEPS, all_prompts, base_model_numbers, fit

def train_dit(images, labels, encoder, steps=STEPS):
    """(the EMA of a DiT trained for `steps` steps, float32, eval; seconds)."""
    torch.manual_seed(0)
    model = dit.build_dit(seed=0).train().requires_grad_(True)
    schedule = dit.FlowSchedule()

    def velocity_loss(model, x0, states, mask, generator):
        sigma = schedule.sigma_at(schedule.sample_percent(BATCH, generator)).float()
        noise = torch.randn(x0.shape, generator=generator)
        velocity = model(schedule.add_noise(x0, noise, sigma), schedule.timestep(sigma), states, dit.pooled(states, mask))
        return F.mse_loss(velocity, noise - x0)

    with dit.training():
        return fit(model, velocity_loss, images, labels, encoder, steps)


def main():
    torch.set_num_threads(1)
    images, labels = task.load_split("train")
    test_images, test_labels = task.load_split("t10k")
    encoder = task.PromptEncoder()
    encoder(all_prompts())        # every prompt is in the committed cache: no MiniLM needed
    model, seconds = train_dit(images, labels, encoder)
    from safetensors.torch import save_file

    save_file(dit.file_state_dict(model), str(dit.DIT_MODEL))
    model = dit.load_dit()                                   # what the benchmark will load: float16 weights
    classifier = task.load(task.Classifier(), task.CLASSIFIER)
    with torch.no_grad():
        accuracy = (classifier(test_images).argmax(1) == test_labels).float().mean().item()
    per_class, distance = base_model_numbers(dit.denoiser(model), classifier, encoder, test_images)
    report = {"classifier_test_accuracy": accuracy,
              "sample_accuracy_per_class": dict(zip([n[0] for n in task.CLASSES], per_class)),
              "sample_accuracy_mean": sum(per_class) / 10, "frechet_distance_to_test_images": distance,
              "steps": STEPS, "batch": BATCH, "parameters": sum(p.numel() for p in model.parameters()),
              "config": dit.DIT_CONFIG, "training_seconds": round(seconds), "torch_threads": 1}
    dit.DIT_NUMBERS.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
