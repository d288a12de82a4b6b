"""Train the bundled demo model: ``python -m cnnvis_core.demo.train``.

Seeded and reproducible: the training images are the samples of seeds ``0 … n-1`` of
:mod:`cnnvis_core.demo.shapes` (a fifth of them with two objects, learnt with the soft label
½/½ so that each class's evidence stays on its own object), augmented with flips and
quarter turns (every class is invariant to both). AdamW with a one-cycle learning-rate
schedule and label smoothing; the held-out accuracy (seeds from
:data:`~cnnvis_core.demo.shapes.HELD_OUT_SEED_START`, never used here) is printed after
every epoch and stored in the weights file's metadata.

On the 2-core CPU of the project's machines the default run takes about 27 minutes (53 when the machine is busy).
"""

from __future__ import annotations

import argparse
import json
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from .data import held_out_accuracy, to_batch
from .model import DemoNet
from .shapes import CLASSES, sample

WEIGHTS = Path(__file__).with_name("weights") / "demonet.safetensors"


def _one(args: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    seed, n_objects = args
    image, labels, _ = sample(seed, n_objects)
    target = np.zeros(len(CLASSES), np.float32)
    target[labels] = 1.0 / len(labels)
    return np.asarray(image, np.uint8), target


def make_training_set(n: int, two_object_fraction: float, workers: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` training samples as uint8 images (N, 128, 128, 3) and soft targets (N, classes)."""
    n_two = int(n * two_object_fraction)
    jobs = [(s, 1) for s in range(n - n_two)] + [(s, 2) for s in range(n_two)]
    with Pool(workers) as pool:
        pairs = pool.map(_one, jobs, chunksize=256)
    images = torch.from_numpy(np.stack([p[0] for p in pairs]))
    targets = torch.from_numpy(np.stack([p[1] for p in pairs]))
    return images, targets


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and quarter turn of each image (label-preserving for every class)."""
    flip = torch.rand(x.shape[0], generator=generator) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    k = int(torch.randint(4, (1,), generator=generator))
    return torch.rot90(x, k, dims=(2, 3))


def train(args: argparse.Namespace) -> tuple[dict, DemoNet]:
    """Run the whole training; returns the summary stored in the weights file and the model."""
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    images, targets = make_training_set(args.samples, args.two_objects, args.workers)
    print(f"generated {len(images)} samples in {time.time() - t0:.0f}s", flush=True)
    model = DemoNet().to(memory_format=torch.channels_last)
    steps_per_epoch = len(images) // args.batch
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=args.epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(args.seed)
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(images), generator=gen)
        for step in range(steps_per_epoch):
            idx = order[step * args.batch:(step + 1) * args.batch]
            x = _augment(to_batch(images[idx]), gen).contiguous(memory_format=torch.channels_last)
            loss = F.cross_entropy(model(x), targets[idx], label_smoothing=args.smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        acc = held_out_accuracy(model.eval(), n=args.eval_samples)
        print(f"epoch {epoch + 1}/{args.epochs} loss {loss.item():.3f} held-out acc {acc:.4f} "
              f"({time.time() - t0:.0f}s)", flush=True)
    summary = {"held_out_accuracy": acc, "epochs": args.epochs, "samples": args.samples,
               "seed": args.seed, "classes": list(CLASSES), "seconds": round(time.time() - t0)}
    return summary, model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=40_000)
    parser.add_argument("--two-objects", type=float, default=0.2)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--smoothing", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--eval-samples", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=WEIGHTS)
    args = parser.parse_args(argv)
    summary, model = train(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(args.out), metadata={"cnnvis": json.dumps(summary)})
    print(f"saved {args.out} ({args.out.stat().st_size / 1e6:.1f} MB): {summary}")


if __name__ == "__main__":
    main()
