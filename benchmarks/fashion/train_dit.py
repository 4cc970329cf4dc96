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
import copy
import json
import math
import time

import torch
from torch.nn import functional as F

import dit
import task
from train import BATCH, EMA, EVAL_SAMPLES, STEPS, UNCONDITIONAL, all_prompts, frechet_distance

LEARNING_RATE = 1e-3


def train_dit(images, labels, encoder, steps=STEPS):
    """The EMA of a DiT trained for `steps` steps (float32, eval)."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = dit.build_dit(seed=0).train().requires_grad_(True)
    from comfyui_unlearn.nodes.comfy_compat import training_mode   # after build_dit has imported ComfyUI

    ema = copy.deepcopy(model).requires_grad_(False)
    schedule = dit.FlowSchedule()
    train_prompts = [[t.format(n) for n in names for t in task.TRAIN_TEMPLATES] for names in task.CLASSES]
    empty_states, empty_mask = encoder([""])
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=0.01)
    schedule_lr = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / 100) * 0.5 * (1 + math.cos(math.pi * s / steps)))
    started = time.time()
    # ComfyUI's training mode (a differentiable RoPE on every release); Flux's blocks add to their residual
    # streams in place, after autograd saved them: copy such a tensor before it changes.
    with training_mode(), torch.autograd.graph.allow_mutation_on_saved_tensors():
        for step in range(steps):
            pick = torch.randint(len(images), (BATCH,), generator=generator)
            x0 = images[pick]
            texts = [train_prompts[int(c)][int(i)] for c, i in
                     zip(labels[pick], torch.randint(len(train_prompts[0]), (BATCH,), generator=generator))]
            states, mask = encoder(texts)
            drop = torch.rand(BATCH, generator=generator) < UNCONDITIONAL
            states[drop], mask[drop] = empty_states, empty_mask
            sigma = schedule.sigma_at(schedule.sample_percent(BATCH, generator)).float()
            noise = torch.randn(x0.shape, generator=generator)
            x_t = schedule.add_noise(x0, noise, sigma)
            velocity = model(x_t, schedule.timestep(sigma), states, dit.pooled(states, mask))
            loss = F.mse_loss(velocity, noise - x0)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule_lr.step()
            with torch.no_grad():
                for e, p in zip(ema.parameters(), model.parameters()):
                    e.lerp_(p, 1 - EMA)
            if step % 250 == 0 or step == steps - 1:
                print(f"step {step:5d}  loss {loss.item():.4f}  {time.time() - started:6.0f} s", flush=True)
    return ema.eval(), time.time() - started


def dit_numbers(model, classifier, encoder, test_images, samples_per_class=EVAL_SAMPLES):
    """train.base_model_numbers for the DiT: per-class accuracy of its canonical-prompt samples (the same seeds
    and sampler as the UNet's), the Frechet distance of their features to real test images."""
    denoiser = dit.denoiser(model)
    per_class, samples = [], []
    for c in range(10):
        text = task.prompt(c)
        images = task.sample(denoiser, tuple(t[:1] for t in encoder([text])), samples_per_class, task.stable_seed(text))
        per_class.append((classifier(images).argmax(1) == c).float().mean().item())
        samples.append(images)
    real = test_images[torch.randperm(len(test_images), generator=torch.Generator().manual_seed(2))[:10 * samples_per_class]]
    distance = frechet_distance(classifier.features(torch.cat(samples)), classifier.features(real))
    return per_class, distance


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
    per_class, distance = dit_numbers(model, classifier, encoder, test_images)
    report = {"classifier_test_accuracy": accuracy,
              "sample_accuracy_per_class": dict(zip([n[0] for n in task.CLASSES], per_class)),
              "sample_accuracy_mean": sum(per_class) / 10, "frechet_distance_to_test_images": distance,
              "steps": STEPS, "batch": BATCH, "parameters": sum(p.numel() for p in model.parameters()),
              "config": dit.DIT_CONFIG, "training_seconds": round(seconds), "torch_threads": 1}
    dit.DIT_NUMBERS.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
