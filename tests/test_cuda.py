"""The CUDA path, where a GPU is present (skipped otherwise): the same step as the CPU's, and a short run.

The tolerance is derived in the test: with TF32 off, both devices compute IEEE float32, so each
differs from a float64 reference by summation-order rounding; the CUDA step must be as close to the
float64 step as 10x the CPU's own float32 error (plus 1e-6 for an update whose CPU error is ~0).
"""
import pytest
import torch

from rate_decoder import RunConfig, SoftHebbConv2d, load_preset, run

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")


@pytest.fixture
def ieee_fp32():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _step(device, dtype, x, w0):
    layer = SoftHebbConv2d(3, 32, 5, inverse_temperature=1.0, lr=0.08, lr_power=0.5, device=device, dtype=dtype)
    with torch.no_grad():
        layer.weight.copy_(w0.to(device, dtype))
    u = layer.hebbian_step(x.to(device, dtype))
    return u.double().cpu(), layer.weight.detach().double().cpu()


def test_cuda_step_matches_the_cpu_step(ieee_fp32):
    g = torch.Generator().manual_seed(0)
    x, w0 = torch.randn(10, 3, 32, 32, generator=g), torch.randn(32, 3, 5, 5, generator=g) * 25 / 75 ** 0.5
    u64, w64 = _step("cpu", torch.float64, x, w0)
    u_cpu, w_cpu = _step("cpu", torch.float32, x, w0)
    u_gpu, w_gpu = _step("cuda", torch.float32, x, w0)
    for name, ref, cpu, gpu in (("u", u64, u_cpu, u_gpu), ("weights", w64, w_cpu, w_gpu)):
        cpu_error = float((cpu - ref).abs().max())
        gpu_error = float((gpu - ref).abs().max())
        assert gpu_error <= 10 * cpu_error + 1e-6, f"{name}: CUDA {gpu_error:.2e} vs CPU {cpu_error:.2e} from float64"


def test_short_cuda_run_completes(tmp_path):
    metrics = run(RunConfig(load_preset("digits"), readout_epochs=3), tmp_path / "r", device="cuda", progress=False)
    assert metrics["device"].startswith("cuda") and metrics["test_acc"] > 0.8
