"""The paper-figure driver: the R1 count, the configurations it builds, and a quick end-to-end table."""
import dataclasses
import json

import pytest
import torch

from experiments import paper_figures


def test_r1_share_counts_norms_within_tolerance_of_one_in_every_layer(tmp_path):
    w1 = torch.zeros(3, 1, 2, 2)
    w1[0, 0, 0, 0], w1[1, 0, 0, 0], w1[2, 0, 0, 0] = 1.0, 1.05, 2.0  # R1, R1, not
    w2 = torch.zeros(2, 3, 1, 1)
    w2[0, 0, 0, 0], w2[1, 1, 0, 0] = 0.8, -1.0  # not (0.2 away), R1 (the sign does not matter)
    torch.save({"net": {"blocks.0.conv.weight": w1, "blocks.1.conv.weight": w2, "blocks.0.bn.weight": torch.ones(3)}},
               tmp_path / "checkpoint.pt")
    assert paper_figures.r1_share(tmp_path / "checkpoint.pt") == pytest.approx(3 / 5)


def test_configurations_change_what_the_figure_names_and_nothing_else():
    base = paper_figures.load_preset("cifar10", 3)
    points = paper_figures.configurations("temperature", 3)
    assert [p.layers[1].inverse_temperature for _, p, _ in points] == list(paper_figures.INVERSE_TEMPERATURES)
    for _, preset, _ in points:
        assert all(layer.inverse_temperature == preset.layers[0].inverse_temperature for layer in preset.layers)
        assert [layer.lr for layer in preset.layers] == [layer.lr for layer in base.layers]
    acts = {label: p for label, p, _ in paper_figures.configurations("activations", 3)}
    assert acts["triangle"] == base and {layer.activation for layer in acts["tanh"].layers} == {"tanh"}
    assert {(layer.activation, layer.activation_power) for layer in acts["repu"].layers} == {("repu", 0.7)}
    assert {layer.inverse_temperature for layer in acts["softmax"].layers} == {4.0}


def test_width_configurations_scale_only_the_widths():
    points = {label: p for label, p, _ in paper_figures.configurations("width", 3)}
    assert sorted(points) == ["wf1_L2", "wf1_L3", "wf2_L2", "wf2_L3", "wf4_L1", "wf4_L2", "wf4_L3"]
    assert [layer.out_channels for layer in points["wf1_L3"].layers] == [96, 96, 96]
    assert [layer.out_channels for layer in points["wf2_L3"].layers] == [96, 192, 384]
    for depth in (2, 3):  # factor 4 is the preset itself; the others differ from it in the widths alone
        base = paper_figures.load_preset("cifar10", depth)
        assert [layer.out_channels for layer in points[f"wf4_L{depth}"].layers] == [layer.out_channels for layer in base.layers]
        strip = [dataclasses.replace(layer, out_channels=1) for layer in base.layers]
        assert [dataclasses.replace(layer, out_channels=1) for layer in points[f"wf1_L{depth}"].layers] == strip
    first = {label: p for label, p, _ in paper_figures.configurations("first-width", 2)}
    assert [layer.out_channels for layer in first["w48"].layers] == [48, 192]
    assert [layer.out_channels for layer in first["w384"].layers] == [384, 1536]


def test_search_candidates_change_their_layer_and_build_a_network():
    from experiments import preset_search
    from rate_decoder import SoftHebbNet

    base = paper_figures.load_preset("cifar10")
    assert preset_search.candidate(base, "preset") == base
    for label, changes in preset_search.CANDIDATES.items():
        preset = preset_search.candidate(base, label)
        for i, (layer, original) in enumerate(zip(preset.layers, base.layers)):
            assert layer == dataclasses.replace(original, **changes.get(i, {}))
        net = SoftHebbNet(preset)
        assert net(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    wide = SoftHebbNet(preset_search.candidate(base, "l3-w3072"))
    assert wide.head.in_features == 3072 * 4 * 4
    shipped = paper_figures.load_preset("cifar10-wide")  # the shipped preset is the candidate the search ran
    assert dataclasses.replace(shipped, name="x", description="") == dataclasses.replace(
        preset_search.candidate(base, "l3-w3072"), name="x", description="")
    with pytest.raises(ValueError, match="unknown candidate"):
        preset_search.candidate(base, "l9-w1")
    with pytest.raises(ValueError, match="does not have"):
        preset_search.candidate(paper_figures.load_preset("cifar10", 1), "l3-w3072")


def test_a_quick_temperature_table_on_digits(tmp_path):
    argv = ["--figure", "temperature", "--preset", "digits", "--points", "t1", "t0.25", "--seeds", "0",
            "--readout-epochs", "3", "--runs", str(tmp_path)]
    paper_figures.main(argv)
    out = tmp_path / "temperature_digits_L1"
    rows = json.loads((out / "table.json").read_text())
    assert [r["label"] for r in rows] == ["t1", "t0.25"]
    assert all(0 <= r["seeds"]["0"]["r1_share"] <= 1 and r["seeds"]["0"]["test_acc"] > 50 for r in rows)
    assert (out / "figure.png").stat().st_size > 0 and "| t0.25 |" in (out / "table.md").read_text()
    before = (out / "t1_s0" / "metrics.json").stat().st_mtime_ns
    paper_figures.main(argv)  # finished runs are read back, not run again
    assert (out / "t1_s0" / "metrics.json").stat().st_mtime_ns == before
    paper_figures.main(argv[:4] + ["--precision", "bf16"] + argv[4:])  # its own directory, not mixed with fp32
    bf16 = json.loads((tmp_path / "temperature_digits_L1_bf16" / "t1_s0" / "config.json").read_text())
    assert bf16["precision"] == "bf16" and (out / "t1_s0" / "metrics.json").stat().st_mtime_ns == before


def test_receptive_fields_have_the_paper_geometry_and_raise_their_neuron():
    """Unpadded geometry gives the paper's 5 / 12 / 26 px; the ascent's inputs drive their own channel's u
    above what uniform random inputs of the same size do (it would not if the gradient's sign or the
    channel index were wrong)."""
    from experiments import receptive_fields as rf
    from rate_decoder.network import SoftHebbNet

    torch.manual_seed(0)
    net = SoftHebbNet(paper_figures.load_preset("cifar10", 3, width_factor=1 / 16)).eval()
    assert [rf.receptive_field(net, layer) for layer in (1, 2, 3)] == [5, 12, 26]
    channels = rf.chosen_neurons(net, 2, 8, seed=0)
    assert len(set(channels.tolist())) == 8
    best = rf.maximise(net, 2, channels, steps=60)
    assert best.shape == (8, 3, 12, 12) and best.min() >= 0 and best.max() <= 1
    with torch.no_grad():
        u_best = rf.preactivation(net, 2, best)[torch.arange(8), torch.as_tensor(channels), 0, 0]
        noise = torch.rand(64, 3, 12, 12, generator=torch.Generator().manual_seed(1))
        u_noise = rf.preactivation(net, 2, noise)[:, torch.as_tensor(channels), 0, 0]
    assert (u_best > u_noise.max(dim=0).values).float().mean() >= 0.75
