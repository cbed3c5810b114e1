"""Synaptic device models: exactness of the control, grids and bounds, the statistics of every
noise source against its published parameters, drift, asymmetry, seeding, and learning on MNIST.

Tolerances on statistics are ``Z`` standard errors of the estimate for the sample size used, so a
test fails when a parameter is off by a few percent, not by chance (p < 1e-6 per check).
"""
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import hardware_models as hm
from rate_decoder.layers import SoftHebbConv2d

Z = 5.0  # standard errors allowed on a statistic


@pytest.fixture(autouse=True)
def one_thread():
    """The device updates are many small tensor operations: threads only add contention here."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _pcm(**kw):
    return hm.make_synapse("pcm", seed=kw.pop("seed", 0), w_max=1.0, **kw)


# --------------------------------------------------------------------------- the controls
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ideal_device_reproduces_float_learning_bit_for_bit(dtype):
    torch.manual_seed(0)
    xs = [torch.randn(6, 3, 10, 10, dtype=dtype) for _ in range(5)]
    gen = torch.Generator().manual_seed(7)
    plain = SoftHebbConv2d(3, 8, 3, lr=0.08, dtype=dtype)
    plain.reset_parameters(gen.manual_seed(7))
    device = SoftHebbConv2d(3, 8, 3, lr=0.08, dtype=dtype, synapse=hm.make_synapse("ideal"))
    device.reset_parameters(gen.manual_seed(7))
    w0 = plain.weight.detach().clone()
    assert torch.equal(device.weight, w0)
    for x in xs:
        assert torch.equal(plain.hebbian_step(x), device.hebbian_step(x))
    assert torch.equal(plain.weight, device.weight)
    assert (plain.weight - w0).abs().max() > 1e-2  # the path really moved


def test_linear_device_stays_on_grid_and_in_bounds():
    levels, w_max = 16, 2.0
    dev = hm.make_synapse(f"linear{levels}", seed=1, w_max=w_max)
    gen = torch.Generator().manual_seed(0)
    w = dev.attach(torch.randn(50, 40, generator=gen))
    step = 2 * w_max / (levels - 1)
    for i in range(200):
        scale = [0.05, 0.5, 3.0, 20.0][i % 4] * step  # below one step up to far beyond the range
        w = dev.program(scale * torch.randn(50, 40, generator=gen))
        k = (w + w_max) / step
        assert (k - k.round()).abs().max() < 1e-4
        assert w.abs().max() <= w_max * (1 + 1e-6)
    assert len(torch.unique(k.round())) == levels  # both ends reached, every level used


@pytest.mark.parametrize("spec", ["linear16", "pcm", "rram"])
def test_unit_range_is_sized_for_norm_one_neurons_and_saturates_larger_weights(spec):
    # a conv weight (K, C, k, k): fan-in C k k = 75; w_max_unit = 4 -> w_max = 4 / sqrt(75)
    dev = hm.make_synapse(f"{spec}:w_max_unit=4", seed=4, read_noise_scale=0) if spec == "pcm" else \
        hm.make_synapse(f"{spec}:w_max_unit=4", seed=4)
    gen = torch.Generator().manual_seed(2)
    w0 = torch.randn(32, 3, 5, 5, generator=gen) * 25 / math.sqrt(75)  # SoftHebb's initial radius 25
    w = dev.attach(w0)
    assert dev.w_max == pytest.approx(4 / math.sqrt(75), rel=1e-12)
    assert dev.clipped == int((w0.abs() > dev.w_max).sum())
    p = math.erfc(4 / 25 / math.sqrt(2))  # P(|N(0, 1)| > 4 / 25): 87 % of the initial weights saturate
    assert abs(dev.clipped / w0.numel() - p) < Z * math.sqrt(p * (1 - p) / w0.numel())
    # analog devices saturate at their own spread-out bounds (g_max device-to-device), around w_max
    assert w.abs().mean() < 1.2 * dev.w_max < w0.abs().mean() / 4
    if spec == "linear16":  # saturated weights sit exactly on the end states, with the sign they had
        assert w.abs().max() <= dev.w_max * (1 + 1e-6)
        saturated = w0.abs() > dev.w_max
        assert torch.equal(w[saturated].abs(), torch.full_like(w[saturated], dev.w_max))
        assert torch.equal(torch.sign(w[saturated]), torch.sign(w0[saturated]))
    with pytest.raises(ValueError, match="not both"):
        hm.make_synapse(f"{spec}:w_max_unit=4,w_max=1")
    with pytest.raises(ValueError, match="w_max_unit"):
        hm.make_synapse(f"{spec}:w_max_unit=-1")


def test_stochastic_rounding_is_unbiased_below_one_step():
    dev = hm.make_synapse("linear:N=64", seed=2, w_max=1.0)
    dev.attach(torch.zeros(100_000))
    frac = 0.3
    n = dev.pulse_counts(torch.full((100_000,), frac * dev.dw_step))
    assert set(n.unique().tolist()) <= {0.0, 1.0}
    assert abs(n.mean().item() - frac) < Z * math.sqrt(frac * (1 - frac) / n.numel())
    assert (dev.pulse_counts(torch.full((10,), -2.0 * dev.dw_step)) == -2).all()


def test_accumulated_rounding_tracks_the_summed_updates_within_one_step():
    # linear device, range never reached: the state must equal grid(w0) + sum(dw) to within one step,
    # deterministically, while stochastic rounding wanders off by ~sqrt(steps p (1 - p)) steps
    levels, w_max, steps = 256, 4.0, 400
    gen = torch.Generator().manual_seed(3)
    w0 = torch.rand(2000, generator=gen) - 0.5
    updates = [0.3 * torch.randn(2000, generator=gen) * (2 * w_max / (levels - 1)) / 10 for _ in range(steps)]
    final = {}
    for rounding, seed in [("accumulate", 1), ("accumulate", 2), ("stochastic", 1)]:
        dev = hm.make_synapse(f"linear{levels}", seed=seed, w_max=w_max, rounding=rounding)
        start = dev.attach(w0)
        for dw in updates:
            w = dev.program(dw)
        final[rounding, seed] = w
        error = (w - start - sum(updates)) / dev.dw_step
        if rounding == "accumulate":
            assert error.abs().max() <= 1.0 + 1e-4
            assert (error + dev.remainder).abs().max() < 1e-3  # the state plus the carried remainder is exact
        else:
            assert error.std() > 1.5  # sum of p (1 - p) over 400 steps: std ~ 2 steps
    assert torch.equal(final["accumulate", 1], final["accumulate", 2])  # no randomness involved
    with pytest.raises(ValueError, match="rounding"):
        hm.make_synapse("linear16:rounding=nearest")


@pytest.mark.parametrize("spec", ["pcm", "rram"])
def test_analog_devices_stay_inside_their_bounds(spec):
    dev = hm.make_synapse(spec, seed=3, w_max=1.0)
    gen = torch.Generator().manual_seed(1)
    dev.attach(torch.rand(30, 30, generator=gen) * 2 - 1)
    for i in range(60):
        w = dev.program(torch.randn(30, 30, generator=gen) * [0.01, 0.03, 0.1][i % 3])
        assert torch.isfinite(w).all()
        g = dev.g
        if spec == "pcm":
            assert (g >= 0).all() and (g <= dev.g_max_i).all()
        else:
            assert (g[0] >= dev.g_min_i).all() and (g[0] <= dev.g_max_i).all()
    assert dev.pulses > 0


# --------------------------------------------------------------------------- PCM statistics
def _prog_sigma(g):
    """PCMLikeNoiseModel programming noise (uS, G_max = 25 uS) in units of G_max."""
    return (0.26348 + 1.9650 * g - 1.1731 * g ** 2) / 25.0


def _zstats(z):
    z = z.double().flatten()
    n = z.numel()
    return z.mean().item(), z.std().item(), 1 / math.sqrt(n), 1 / math.sqrt(2 * n)


def test_pcm_programming_noise_at_attach():
    dev = _pcm(read_noise_scale=0.0)
    n = 40_000
    dev.attach(torch.full((n,), 0.5))
    g = dev.g.double()
    # g- sits at its RESET level; the verify loop aimed g+ at 0.5 above it
    z = (g[0] - g[1] - 0.5) / _prog_sigma(0.5 + g[1])
    mean, std, se_mean, se_std = _zstats(z)
    assert abs(mean) < Z * se_mean
    assert abs(std - 1) < Z * se_std


def test_pcm_set_pulse_mean_and_noise():
    dev = _pcm(read_noise_scale=0.0, dg_min_dtod=0.0, g_max_dtod=0.0)
    n = 40_000
    dev.attach(torch.full((n,), 0.5))
    g0 = dev.g[0].double().clone()
    dev.apply_pulses(torch.ones(n))
    step = dev.g[0].double() - g0
    mean = 0.005 * (1 + 27.235 * torch.exp(-5 * g0))  # aihwkit PCMPresetDevice on [0, 1]
    std = 0.6 * (mean + 0.021 + 0.108 * g0)
    m, s, se_m, se_s = _zstats((step - mean) / std)
    assert abs(m) < Z * se_m
    assert abs(s - 1) < Z * se_s
    # the nonlinearity: steps from the reset state are much larger than from mid-range
    assert 0.005 * (1 + 27.235) > 5 * mean.mean()


def test_pcm_read_noise_statistics():
    # RESET exactly to 0 so that only the written half is noisy, targets away from the clip at 0
    dev = _pcm(reset=0.0, reset_dtod=0.0, reset_std=0.0)
    n, reads = 4_000, 50
    gen = torch.Generator().manual_seed(0)
    sign = torch.randint(0, 2, (n,), generator=gen) * 2 - 1
    dev.attach(sign * torch.linspace(0.1, 0.9, n))
    dev.age(1000.0)
    truth = dev.conductances().double()
    w_true = truth[0] - truth[1]
    t = 1000.0 + 20.0
    q = (0.0088 / dev.g.double().abs().clamp(min=1e-12) ** 0.65).clamp(max=0.2)
    rel = q * math.sqrt(math.log((t + 250e-9) / (2 * 250e-9)))
    sd = ((truth * rel) ** 2).sum(0).sqrt()
    z = torch.stack([(dev.read().double() - w_true) / sd for _ in range(reads)])
    m, s, se_m, se_s = _zstats(z)
    assert abs(m) < Z * se_m
    assert abs(s - 1) < Z * se_s


def test_pcm_drift_follows_power_law():
    dev = _pcm(read_noise_scale=0.0)
    n = 20_000
    dev.attach(torch.full((n,), 0.6))
    times, logs = [], []
    for dt in [0.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6]:
        dev.age(dt - (dev.time))
        times.append(math.log(dev.time + dev.t0))
        logs.append(dev.conductances()[0].double().log())
    logs = torch.stack(logs)  # (times, devices)
    slope = np.polyfit(times, logs.mean(1).numpy(), 1)[0]
    # g+ ~ 0.6 > 0.33, so nu ~ |N(0.049, 0.008)| (PCMLikeNoiseModel)
    assert abs(-slope - 0.049) < Z * 0.008 / math.sqrt(n)
    # each device is an exact power law with its own exponent
    per_device = np.polyfit(times, logs.numpy(), 1)[0]
    np.testing.assert_allclose(-per_device, dev.nu[0].double().numpy(), rtol=1e-5)
    assert dev.nu[0].std().item() == pytest.approx(0.008, rel=Z / math.sqrt(2 * n))


def test_pcm_depression_goes_through_the_pair_and_refresh_keeps_the_weight():
    dev = _pcm(read_noise_scale=0.0, prog_noise_scale=0.0, refresh_upper=1.0)
    n = 1000
    dev.attach(torch.zeros(n))
    dev.apply_pulses(torch.full((n,), 3.0))
    up = dev.g.clone()
    w = dev.apply_pulses(torch.full((n,), -2.0))
    assert torch.equal(dev.g[0], up[0])  # depression never touches g+ ...
    assert (dev.g[1] > up[1]).float().mean() > 0.8  # ... it potentiates g-
    for _ in range(10):
        dev.apply_pulses(torch.full((n,), 4.0))
        w = dev.apply_pulses(torch.full((n,), -4.0))
    rel = dev.g / dev.g_max_i
    due = (rel.max(0).values > 0.75) & (rel.min(0).values > 0.25)  # aihwkit OneSidedUnitCell thresholds
    assert dev.refreshes == 0 and due.float().mean() > 0.5  # both halves have climbed
    dev.refresh_upper = 0.75
    before = dev.g.clone()
    dev.apply_pulses(torch.zeros(n))
    assert dev.refreshes == 0  # pulses check only the pairs they touch
    assert dev.refresh() == int(due.sum()) == dev.refreshes
    after = dev.read()
    torch.testing.assert_close(after, w, atol=1e-6, rtol=0)  # noise-free rewrite keeps every weight
    assert (dev.g.min(0).values[due] < 0.05).all()  # one half of each refreshed pair is back at RESET
    assert torch.equal(dev.g[:, ~due], before[:, ~due])  # the others are left alone


def test_global_drift_compensation():
    dev = _pcm()
    gen = torch.Generator().manual_seed(0)
    w0 = dev.attach(torch.randn(64, 75, generator=gen) * 0.3)
    comp = hm.GlobalDriftCompensation(dev)
    dev.age(86_400.0)
    raw = dev.read()
    fixed = comp.read()
    assert raw.abs().mean() < 0.8 * w0.abs().mean()  # a day of drift costs > 20 %
    assert abs(fixed.abs().mean() / w0.abs().mean() - 1) < 0.02
    assert (fixed - w0).norm() < 0.6 * (raw - w0).norm()


# --------------------------------------------------------------------------- RRAM
def test_rram_balanced_pulses_drift_to_the_symmetry_point():
    n, pairs = 10_000, 300
    results = {}
    for up_down in (0.259, 0.0):
        dev = hm.make_synapse("rram", seed=5, w_max=1.0, up_down=up_down, dg_dtod=0.0, up_down_dtod=0.0,
                              bound_dtod=0.0, write_noise=0.0, stuck_gmin=0.0, stuck_gmax=0.0)
        dev.attach(torch.zeros(n))
        g0 = dev.g[0].double().mean().item()
        for _ in range(pairs):
            dev.apply_pulses(torch.ones(n))
            w = dev.apply_pulses(-torch.ones(n))
        # one SET then one RESET: g -> (1-b)(g + a(1-g)), a = 2 dg (1+u), b = 2 dg (1-u)
        a, b = 2 * 0.001 * (1 + up_down), 2 * 0.001 * (1 - up_down)
        rate = (1 - a) * (1 - b)
        fixed_point = (1 - b) * a / (1 - rate)
        expected_g = fixed_point + (g0 - fixed_point) * rate ** pairs
        g = dev.g[0].double()
        assert abs(g.mean().item() - expected_g) < Z * g.std().item() / math.sqrt(n)
        results[up_down] = (w.double().mean().item(), 2 * (expected_g - 0.5))
    bias, expected = results[0.259]
    assert bias > 0.1 and bias == pytest.approx(expected, abs=0.01)  # w_max = 1: bias in units of w_max
    assert abs(results[0.0][0]) < 0.01  # a symmetric device shows none


def test_rram_pulse_train_matches_pulse_by_pulse():
    """k pulses in one update (closed form) against k updates of one pulse (the per-pulse law)."""
    n, k = 20_000, 40
    stats = []
    for per_pulse in (False, True):
        dev = hm.make_synapse("rram", seed=7, w_max=1.0, write_noise=0.0, stuck_gmin=0.0, stuck_gmax=0.0,
                              bound_dtod=0.0)
        dev.attach(torch.zeros(n))  # g ~ 1/2, far from the bounds for 40 steps of ~0.001
        g0 = dev.g[0].double().clone()
        if per_pulse:
            for _ in range(k):
                dev.apply_pulses(torch.ones(n))
        else:
            dev.apply_pulses(torch.full((n,), float(k)))
        change = dev.g[0].double() - g0
        stats.append((change.mean().item(), change.var().item()))
    (m1, v1), (m2, v2) = stats
    assert m1 > 0.02  # the train moved the devices (~k steps of ~0.001 each)
    assert abs(m1 - m2) < Z * math.sqrt((v1 + v2) / n)
    assert v1 == pytest.approx(v2, rel=Z * math.sqrt(2 / n) * 2)


def test_rram_stuck_devices_and_variation():
    n = 50_000
    dev = hm.make_synapse("rram", seed=6, w_max=1.0)
    dev.attach(torch.zeros(n))
    before = dev.g[0].clone()
    dev.apply_pulses(torch.full((n,), 5.0))
    low, high = dev.stuck_low, dev.stuck_high
    for frac, mask in ((0.0175, low), (0.0904, high)):
        assert abs(mask.float().mean().item() - frac) < Z * math.sqrt(frac * (1 - frac) / n)
    assert torch.equal(dev.g[0][low | high], before[low | high])
    assert torch.equal(dev.g[0][low], dev.g_min_i[low]) and torch.equal(dev.g[0][high], dev.g_max_i[high])
    assert dev.g_max_i.std().item() == pytest.approx(0.15, rel=0.05)


# --------------------------------------------------------------------------- seeding, registry, dtypes
@pytest.mark.parametrize("spec", ["pcm", "rram", "linear16"])
def test_same_seed_same_result_different_seed_different(spec):
    def run(seed):
        dev = hm.make_synapse(spec, seed=seed)
        gen = torch.Generator().manual_seed(0)
        w = dev.attach(torch.randn(20, 20, generator=gen))
        for _ in range(20):
            w = dev.program(0.05 * torch.randn(20, 20, generator=gen))
        dev.age(100.0)
        return torch.cat([w.flatten(), dev.read().flatten()])

    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))


@pytest.mark.parametrize("spec, noisy", [("ideal", False), ("linear16", False), ("rram", False), ("pcm", True),
                                         ("pcm:read_noise_scale=0", False)])
def test_noisy_reads_flag_says_whether_two_reads_differ(spec, noisy):
    """The sweep trains a noise-aware readout only for devices that say their reads are noisy: the flag must be true."""
    dev = hm.make_synapse(spec, seed=0)
    gen = torch.Generator().manual_seed(0)
    dev.attach(torch.randn(30, 30, generator=gen))
    dev.program(0.05 * torch.randn(30, 30, generator=gen))
    dev.age(10.0)
    assert dev.noisy_reads is noisy
    assert torch.equal(dev.read(), dev.read()) is not noisy


def test_registry():
    assert set(hm.SYNAPSES) == {"ideal", "linear", "pcm", "rram"}
    assert hm.make_synapse("linear16").levels == 16
    assert hm.make_synapse("linear:N=8").levels == 8
    dev = hm.make_synapse("pcm:read_noise_scale=0,refresh_upper=0.9", read_noise_scale=0.5)
    assert dev.read_noise_scale == 0.5 and dev.refresh_upper == 0.9
    assert hm.make_synapse("rram") is not hm.make_synapse("rram")
    with pytest.raises(ValueError, match="ideal"):
        hm.make_synapse("flash")
    with pytest.raises(ValueError, match="accepted"):
        hm.make_synapse("pcm:bogus=1")
    with pytest.raises(ValueError, match="key=value"):
        hm.make_synapse("pcm:0.5")


def test_public_api_is_exactly_all():
    """``__all__`` names every public top-level object of the package and nothing else."""
    import inspect

    public = {name for name, obj in vars(hm).items() if not name.startswith("_") and not inspect.ismodule(obj)}
    public.discard("annotations")  # the `from __future__ import annotations` feature
    assert set(hm.__all__) == public and len(hm.__all__) == len(set(hm.__all__))
    assert all(getattr(hm, name) is not None for name in hm.__all__)


@pytest.mark.parametrize("spec", ["ideal", "linear16", "pcm", "rram"])
def test_device_and_dtype_follow_the_weights(spec):
    for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        dev = hm.make_synapse(spec)
        w = torch.randn(4, 3, 3, 3, dtype=torch.float64, device=device)
        out = dev.attach(w)
        assert out.dtype == torch.float64 and out.device == w.device and out.shape == w.shape
        out = dev.program(0.1 * torch.randn_like(w))
        assert out.dtype == torch.float64 and out.device == w.device
        with pytest.raises(ValueError):
            dev.program(torch.zeros(3, device=device, dtype=torch.float64))


# --------------------------------------------------------------------------- learning on real data
def _mnist_path() -> Path:
    root = os.environ.get("SOFTHEBB_DATA")
    base = Path(root) if root else Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
    return base / "mnist.npz"


@pytest.mark.parametrize("spec", ["pcm", "rram"])
def test_softhebb_learns_through_device_on_mnist(spec):
    path = _mnist_path()
    if not path.exists():
        pytest.skip(f"MNIST not found at {path} (set SOFTHEBB_DATA to the folder holding mnist.npz)")
    with np.load(path) as data:
        x = torch.from_numpy(data["x_train"][:256].astype(np.float32) / 255.0)
    x = x.permute(0, 3, 1, 2) if x.dim() == 4 else x[:, None]
    x = (x - x.mean()) / x.std()  # batch normalisation without affine parameters, as before a SoftHebb layer
    dev = hm.make_synapse(spec, seed=0)
    torch.manual_seed(0)
    layer = SoftHebbConv2d(1, 16, 5, inverse_temperature=1.0, lr=0.08, lr_power=0.5, synapse=dev)
    w0 = layer.weight.detach().clone()
    norms0 = w0.flatten(1).norm(dim=1)
    for batch in x.split(32):
        u = layer.hebbian_step(batch)
        assert torch.isfinite(u).all()
    assert torch.isfinite(layer.weight).all()
    # the range of the nominal device, widened by the device-to-device spread of the bounds and by read noise
    if spec == "pcm":
        limit = dev.w_scale * (dev.g_max_i.max() + 6 * 0.0088 * math.sqrt(math.log(20 / 5e-7)))
    else:
        reach = torch.maximum(dev.g_max_i.max() - 0.5, 0.5 - dev.g_min_i.min())
        limit = dev.w_scale * (reach + 6 * dev.write_noise * dev.dg_step)
    assert layer.weight.abs().max() <= limit
    assert dev.pulses > 50
    # learning took place: neuron norms head from the initial radius towards 1, as in float
    assert layer.weight.flatten(1).norm(dim=1).mean() < norms0.mean()
