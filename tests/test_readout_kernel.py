"""The fused readout kernel against the tensor operations it replaces (rate_decoder/readout_kernel.py)."""
import pytest
import torch

from rate_decoder import SoftHebbNet, load_preset
from rate_decoder import readout_kernel
from rate_decoder.readout import CachedFeatureHead, dropout_bits, feature_dropout, train_readout

pytestmark = pytest.mark.skipif(readout_kernel.library() is None, reason="no C compiler for the readout kernel")


def _reference(features, idx, p, seed, start=0, total=None):
    """The rows ``idx`` as floats times the dropout mask that feature_dropout draws from ``seed``."""
    x = features[idx].float()
    if p:
        torch.manual_seed(seed)
        x = feature_dropout(x, p, None if total is None else (start, total))
    return x


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("n_features, n_outputs", [(24576, 10), (1037, 3), (1037, 13), (700, 64)])
def test_product_and_gradient_match_tensor_operations(dtype, n_features, n_outputs):
    torch.manual_seed(0)
    features = torch.randn(300, n_features).to(dtype)
    weight = torch.randn(n_outputs, n_features, requires_grad=True)
    idx = torch.randperm(300)[:37]
    grad = torch.randn(37, n_outputs)
    for p in (0.0, 0.5):
        x = _reference(features, idx, p, seed=4)
        torch.manual_seed(4)
        bits = dropout_bits(37 * n_features) if p else None
        out = readout_kernel.gathered_matmul(weight, features, idx, bits)
        expected = x @ weight.detach().t()
        # fp32 sums of n terms in two orders: a few units of rounding of the largest partial sum
        scale = (x.abs() @ weight.detach().abs().t()).max().item()
        assert (out - expected).abs().max().item() <= 1e-6 * scale
        weight.grad = None
        out.backward(grad)
        expected_grad = grad.t() @ x
        assert (weight.grad - expected_grad).abs().max().item() <= 1e-6 * (grad.abs().t() @ x.abs()).max().item()


def test_a_shard_gets_the_rows_of_the_whole_batch_mask():
    torch.manual_seed(1)
    features = torch.randn(50, 1001).half()
    weight = torch.randn(10, 1001)
    idx = torch.arange(20)
    torch.manual_seed(7)
    bits = dropout_bits(20 * 1001)
    whole = readout_kernel.gathered_matmul(weight, features, idx, bits)
    shard = readout_kernel.gathered_matmul(weight, features, idx[13:], bits, start=13)
    assert torch.allclose(shard, whole[13:], rtol=0, atol=1e-4)
    x = _reference(features, idx[13:], 0.5, seed=7, start=13, total=20)
    assert torch.allclose(shard, x @ weight.t(), rtol=0, atol=1e-4)


def test_the_mask_is_applied_exactly():
    """A one-row gradient with g = 1 for one output is that row times its dropout scales, to the bit."""
    torch.manual_seed(2)
    features = torch.rand(9, 3000).half()
    weight = torch.zeros(2, 3000, requires_grad=True)
    for row in (0, 5):
        torch.manual_seed(11)
        bits = dropout_bits(9 * 3000)
        out = readout_kernel.gathered_matmul(weight, features, torch.tensor([row]), bits, start=row)
        out.backward(torch.tensor([[1.0, 0.0]]))
        torch.manual_seed(11)
        expected = feature_dropout(features.float(), 0.5)[row]
        assert torch.equal(weight.grad[0], expected)
        assert torch.equal(weight.grad[1], torch.zeros(3000))
        weight.grad = None


def test_the_result_does_not_depend_on_the_number_of_threads():
    torch.manual_seed(3)
    features = torch.randn(200, 24576).half()
    weight = torch.randn(10, 24576, requires_grad=True)
    idx = torch.randperm(200)[:64]
    bits = dropout_bits(64 * 24576)
    results = []
    for n in (1, 2, 3):
        weight.grad = None
        out = readout_kernel.gathered_matmul(weight, features, idx, bits, threads=n)
        out.backward(torch.ones_like(out))
        results.append((out.detach(), weight.grad.clone()))
    for out, grad in results[1:]:
        assert torch.equal(out, results[0][0]) and torch.equal(grad, results[0][1])


def test_bad_rows_and_short_masks_are_refused():
    features, weight = torch.zeros(10, 16), torch.zeros(10, 16)
    with pytest.raises(IndexError, match="row positions"):
        readout_kernel.gathered_matmul(weight, features, torch.tensor([3, 10]))
    with pytest.raises(ValueError, match="dropout bits"):
        readout_kernel.gathered_matmul(weight, features, torch.arange(4), torch.zeros(7, dtype=torch.uint8))


def test_the_readout_learns_the_same_with_and_without_the_kernel(monkeypatch):
    """The fused readout against tensor operations on a learnable task: the same accuracy within a few images.

    The two sum in different orders; Adam's first steps (about lr * sign(gradient)) and the argmax carry
    rounding differences forward, so the histories are compared by accuracy, not bit for bit. A kernel
    that dropped the mask's scale of 2, mixed up rows or outputs, or took the wrong gradient would learn
    visibly worse or differently.
    """
    torch.manual_seed(5)
    n_features = 24576
    template = torch.randn(10, n_features)
    labels = torch.randint(0, 10, (1200,))
    features = (0.3 * template[labels] + torch.randn(1200, n_features)).half() * 0.05
    histories = {}
    for mode in ("c", "torch"):
        monkeypatch.setenv("SOFTHEBB_READOUT_KERNEL", mode)
        torch.manual_seed(0)
        net = SoftHebbNet(load_preset("cifar10"))
        assert net.head.in_features == n_features
        histories[mode] = train_readout(net, features[:1000], labels[:1000], features[1000:], labels[1000:],
                                        epochs=3, seed=2, progress=False)
    fused, reference = histories["c"][-1], histories["torch"][-1]
    assert reference["test_acc"] > 0.5  # the task is learnable: chance is 0.1
    assert abs(fused["test_acc"] - reference["test_acc"]) <= 0.03  # 6 of 200 test images
    assert abs(fused["train_loss"] - reference["train_loss"]) <= 0.05 * reference["train_loss"]


def test_the_switch_and_unsupported_inputs_fall_back_to_tensor_operations(monkeypatch):
    features = torch.zeros(4, 8)
    assert readout_kernel.usable(features, 10)
    assert not readout_kernel.usable(features, readout_kernel.MAX_OUTPUTS + 1)
    assert not readout_kernel.usable(features.double(), 10)
    assert not readout_kernel.usable(features.t(), 10)  # not contiguous
    assert not readout_kernel.usable(features, 10, device="meta")
    monkeypatch.setenv("SOFTHEBB_READOUT_KERNEL", "torch")
    assert not readout_kernel.usable(features, 10)
    with pytest.raises(ValueError, match="dropout 0 or 0.5"):
        CachedFeatureHead(torch.nn.Linear(8, 10), features, 0.3)


def test_a_forked_child_runs_the_kernel_on_threads_of_its_own():
    """The worker threads do not survive a fork; a child that used the parent's pool would wait forever."""
    import multiprocessing

    features, weight = torch.randn(20, 3000).half(), torch.randn(10, 3000)
    expected = readout_kernel.gathered_matmul(weight, features, threads=2)  # the parent's pool exists now
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        result = pool.apply_async(_product_in_child, (weight, features)).get(timeout=60)
    assert torch.equal(result, expected)


def _product_in_child(weight, features):
    return readout_kernel.gathered_matmul(weight, features, threads=2)
