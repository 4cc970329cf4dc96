"""Train the benchmark's base model and judge (seeded; about 15 minutes on 2 CPU cores).

Writes base_model.safetensors (the UNet's EMA weights, float16), classifier.safetensors, the prompt
cache prompts.safetensors (every prompt the benchmark uses, so it runs without MiniLM) and
base_model.json: the classifier's test accuracy and the base model's own numbers (per-class accuracy
of its samples, Frechet distance of their classifier features to real test images).

    python benchmarks/fashion/train.py
"""
import copy
import json
import math
import time

import torch
from torch.nn import functional as F

import task

STEPS, BATCH, LEARNING_RATE, EMA = 3000, 32, 1e-3, 0.995
UNCONDITIONAL = 0.1          # the empty prompt's share of training, for guidance and ESD
EVAL_SAMPLES = 64            # per class, for the base model's numbers


def all_prompts():
    names = [name for names in task.CLASSES for name in names]
    return [t.format(n) for t in task.TRAIN_TEMPLATES + [task.HELD_OUT_TEMPLATE] for n in names] + [""]


def fit(model, batch_loss, images, labels, encoder, steps=STEPS):
    """(the EMA of `model`, seconds) after `steps` steps of AdamW with warm-up and cosine decay, on batches of images
    each with a prompt of its class (one of its names in one of the training templates, the empty prompt a tenth of
    the time); batch_loss(model, x0, states, mask, generator) is one batch's loss (it draws the noise)."""
    generator = torch.Generator().manual_seed(0)
    ema = copy.deepcopy(model).requires_grad_(False)
    train_prompts = [[t.format(n) for n in names for t in task.TRAIN_TEMPLATES] for names in task.CLASSES]
    empty_states, empty_mask = encoder([""])
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=0.01)
    schedule_lr = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / 100) * 0.5 * (1 + math.cos(math.pi * s / steps)))
    started = time.time()
    for step in range(steps):
        pick = torch.randint(len(images), (BATCH,), generator=generator)
        x0 = images[pick]
        texts = [train_prompts[int(c)][int(i)] for c, i in
                 zip(labels[pick], torch.randint(len(train_prompts[0]), (BATCH,), generator=generator))]
        states, mask = encoder(texts)
        drop = torch.rand(BATCH, generator=generator) < UNCONDITIONAL
        states[drop], mask[drop] = empty_states, empty_mask
        loss = batch_loss(model, x0, states, mask, generator)
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


def train_unet(images, labels, encoder):
    """The UNet's EMA: epsilon prediction on SD's schedule."""
    torch.manual_seed(0)
    unet, schedule = task.build_unet(), task.DiscreteVPSchedule()

    def epsilon_loss(unet, x0, states, mask, generator):
        sigma = schedule.sigma_at(torch.rand(BATCH, generator=generator, dtype=torch.float64)).float()
        noise = torch.randn(x0.shape, generator=generator)
        x_t = x0 + noise * sigma.view(-1, 1, 1, 1)
        eps = unet(x_t * (1 + sigma.square()).rsqrt().view(-1, 1, 1, 1), schedule.timestep(sigma).float(),
                   encoder_hidden_states=states, encoder_attention_mask=mask).sample
        return F.mse_loss(eps, noise)

    return fit(unet, epsilon_loss, images, labels, encoder)[0]


def train_classifier(images, labels, test_images, test_labels):
    torch.manual_seed(1)
    classifier = task.Classifier()
    optimizer = torch.optim.Adam(classifier.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(1)
    for epoch in range(4):
        for batch in torch.randperm(len(images), generator=generator).split(128):
            flip = torch.rand(len(batch), generator=generator) < 0.5   # mirror images: a mild augmentation
            x = torch.where(flip.view(-1, 1, 1, 1), images[batch].flip(-1), images[batch])
            loss = F.cross_entropy(classifier(x), labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    classifier.eval().requires_grad_(False)
    accuracy = (classifier(test_images).argmax(1) == test_labels).float().mean().item()
    print(f"classifier test accuracy {accuracy:.3f}", flush=True)
    return classifier, accuracy


def frechet_distance(a, b):
    """Frechet distance between Gaussians fitted to two feature sets (float64)."""
    a, b = a.double(), b.double()
    mean_a, mean_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    eigenvalues = torch.linalg.eigvals(cov_a @ cov_b)
    trace_sqrt = eigenvalues.sqrt().real.sum()
    return ((mean_a - mean_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * trace_sqrt).item()


def base_model_numbers(denoiser, classifier, encoder, test_images):
    """Per-class accuracy of a model's canonical-prompt samples (the engine Denoiser `denoiser`, the same seeds and
    sampler for every model), and the Frechet distance of their features to real test images."""
    per_class, samples = [], []
    for c in range(10):
        text = task.prompt(c)
        images = task.sample(denoiser, encoder.cond(text), EVAL_SAMPLES, task.stable_seed(text))
        per_class.append((classifier(images).argmax(1) == c).float().mean().item())
        samples.append(images)
    real = test_images[torch.randperm(len(test_images), generator=torch.Generator().manual_seed(2))[:10 * EVAL_SAMPLES]]
    distance = frechet_distance(classifier.features(torch.cat(samples)), classifier.features(real))
    return per_class, distance


def main():
    torch.set_num_threads(2)
    images, labels = task.load_split("train")
    test_images, test_labels = task.load_split("t10k")
    encoder = task.PromptEncoder()
    encoder(all_prompts())
    encoder.save()
    unet = train_unet(images, labels, encoder)
    from safetensors.torch import save_file

    save_file({k: v.half().contiguous() for k, v in unet.state_dict().items()}, str(task.BASE_MODEL))
    classifier, accuracy = train_classifier(images, labels, test_images, test_labels)
    save_file({k: v.half().contiguous() for k, v in classifier.state_dict().items()}, str(task.CLASSIFIER))
    unet = task.load(task.build_unet(), task.BASE_MODEL)          # what the benchmark will load: float16 weights
    classifier = task.load(task.Classifier(), task.CLASSIFIER)
    per_class, distance = base_model_numbers(task.denoiser(unet), classifier, encoder, test_images)
    report = {"classifier_test_accuracy": accuracy,
              "sample_accuracy_per_class": dict(zip([n[0] for n in task.CLASSES], per_class)),
              "sample_accuracy_mean": sum(per_class) / 10, "frechet_distance_to_test_images": distance,
              "steps": STEPS, "batch": BATCH, "parameters": sum(p.numel() for p in unet.parameters())}
    (task.HERE / "base_model.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
