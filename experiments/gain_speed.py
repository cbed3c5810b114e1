"""How far a typical neuron steps under each update normalisation, layer by layer, at a run's weights.

    python -m experiments.gain_speed runs/cifar10_s0 --tau 100 1000

A normalisation sets each neuron's step as a fraction of its rate ``eta_k``: ``max_i |D_ki| / divisor_k``.
The paper's divisor, the layer's ``max |D|``, gives the neuron holding the layer's largest change the
full rate and a typical neuron a fraction of it; a per-neuron running maximum (``homeostatic``) gives
every neuron about its own recent peak. For each Hebbian layer, with the run's learnt weights held
fixed, this feeds ``--batches`` training batches (batch norms in train mode, as in the layer's own
epoch; the first ``--warmup`` batches only fill the running gains) and prints the mean over neurons and
batches of that fraction under the paper's rule and under ``homeostatic`` for each ``--tau``, and
their ratio: how much faster than the paper's a typical neuron learns there. A running maximum holds
only what it has seen: for a value of the steady state, give ``--batches`` several times ``tau``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from rate_decoder import configure_cpu, load_dataset, rules
from rate_decoder.activations import triangle
from rate_decoder.data import iter_batches, to_float
from rate_decoder.run import load_checkpoint


def raw_update(block, x: torch.Tensor) -> torch.Tensor:
    """``D`` of ``block``'s Hebbian layer on the batch-normalised input ``x`` (no step taken)."""
    conv = block.conv
    xp, w = conv.pad(x), conv.weight.detach()
    u = rules.conv_forward(xp, w)
    if conv.pre_triangle:
        u = triangle(u, 1.0)
    return rules.conv_update(xp, u, rules.signed_post(u, conv.inverse_temperature, conv.rule), w)


def step_fractions(net, images, taus, batches: int, warmup: int, batch_size: int) -> list[dict]:
    gains = [{tau: rules.HomeostaticGain(tau) for tau in taus} for _ in net.blocks]
    sums = [{"paper": 0.0, **{tau: 0.0 for tau in taus}} for _ in net.blocks]
    net.train()
    with torch.no_grad():
        order = torch.arange(batches * batch_size).view(batches, batch_size)
        for n, x in enumerate(iter_batches(images, iter(order))):
            h = to_float(x, None, net.preset.normalize)
            for layer, block in enumerate(net.blocks):
                xb = block.bn(h)
                delta = raw_update(block, xb)
                own = delta.flatten(1).abs().amax(dim=1).double()
                fractions = {"paper": own / rules.LayerMax().divisor(delta).double()}
                fractions.update({tau: own / g.divisor(delta).double() for tau, g in gains[layer].items()})
                if n >= warmup:
                    for key, f in fractions.items():
                        sums[layer][key] += float(f.mean())
                h = block.after_norm(xb)
    return [{key: value / (batches - warmup) for key, value in s.items()} for s in sums]


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="a run directory holding checkpoint.pt")
    ap.add_argument("--tau", type=float, nargs="+", default=[100.0], help="time constants of the homeostatic gain")
    ap.add_argument("--batches", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=100)
    args = ap.parse_args(argv)
    if not 0 <= args.warmup < args.batches:
        ap.error("need 0 <= --warmup < --batches")
    configure_cpu()
    torch.manual_seed(0)
    net, config, _, _ = load_checkpoint(Path(args.run) / "checkpoint.pt")
    images = load_dataset(config.preset.dataset).x_train
    if args.batches * config.preset.unsupervised.batch_size > len(images):
        ap.error("--batches times the preset's batch size exceeds the training images")
    result = step_fractions(net, images, args.tau, args.batches, args.warmup, config.preset.unsupervised.batch_size)
    for layer, r in enumerate(result, 1):
        cells = ", ".join(f"homeostatic tau {tau:g}: {r[tau]:.3f} ({r[tau] / r['paper']:.2f}x)" for tau in args.tau)
        print(f"layer {layer}: paper's {r['paper']:.3f}; {cells}")
    return result


if __name__ == "__main__":
    main()
