"""How fast two unsupervised runs of one layer drift apart: a device against float, or float against float.

    python -m experiments.divergence --preset cifar10 --images 6000 --against linear65536 perturbed

All runs start from the same initial weights and see the same batches; ``perturbed`` is the float
layer with its initial weights moved by ``--epsilon`` (1e-6) times a standard normal. Every 100 steps
it prints, for each run, the minimum and median cosine similarity of its neurons to the float run's.
A device that drifts away no faster than the perturbed float run differs from float only as much
as any perturbation does: the competition between neurons amplifies the smallest difference.
"""
from __future__ import annotations

import argparse

import torch

import hardware_models
from rate_decoder.data import load_dataset, to_float
from rate_decoder.config import load_preset
from rate_decoder.network import SoftHebbNet, configure_cpu
from rate_decoder.unsupervised import unsupervised_order


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="cifar10")
    ap.add_argument("--images", type=int, default=6000, help="the first N training images, in the epoch's order")
    ap.add_argument("--against", nargs="+", default=["linear65536", "perturbed"],
                    help="synapse specs (hardware_models.make_synapse) or 'perturbed'")
    ap.add_argument("--epsilon", type=float, default=1e-6)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    configure_cpu()
    preset = load_preset(args.preset, 1)
    images = load_dataset(preset.dataset, image_size=preset.image_size).x_train[:args.images]
    batch = preset.unsupervised.batch_size
    order = unsupervised_order(len(images), args.seed)
    nets = {}
    for name in ["float", *args.against]:
        torch.manual_seed(args.seed)
        net = SoftHebbNet(preset)
        if name == "perturbed":
            gen = torch.Generator().manual_seed(args.seed + 1)
            with torch.no_grad():
                w = net.blocks[0].conv.weight
                w.add_(args.epsilon * torch.randn(w.shape, generator=gen, dtype=w.dtype))
        elif name != "float":
            net.blocks[0].conv.attach_synapse(hardware_models.make_synapse(name, seed=args.seed))
        net.set_learning_block(0)
        nets[name] = net
    reference = nets["float"].blocks[0].conv.weight
    with torch.no_grad():
        for step, start in enumerate(range(0, len(order), batch), 1):
            x = to_float(images[torch.from_numpy(order[start:start + batch])], None, preset.normalize)
            for net in nets.values():
                net.blocks[0].learn(x)
            if step % 100 == 0:
                cells = []
                for name in args.against:
                    w = nets[name].blocks[0].conv.weight
                    cos = torch.nn.functional.cosine_similarity(w.flatten(1), reference.flatten(1), dim=1)
                    cells.append(f"{name}: min {cos.min():.4f} median {cos.median():.4f}")
                norm = float(reference.flatten(1).norm(dim=1).median())
                print(f"step {step}: float median norm {norm:.2f} | " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
