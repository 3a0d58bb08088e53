"""rnnkit.train: exact resume, clipping (pre-clip norm recorded), NaN errors, early stopping, determinism."""

import itertools
import math

import pytest
import torch
from torch import nn

from rnnkit.models import CharLM, PianoRollModel
from rnnkit.train import TrainConfig, Trainer


def rolls(n=10, keys=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):  # a length, then that many frames, from one generator
        length = int(torch.randint(3, 8, (1,), generator=g))
        out.append((torch.rand(length, keys, generator=g) < 0.3).float())
    return out


def piano_trainer(tmp_path=None, seed=0, **kw):
    torch.manual_seed(seed)
    model = PianoRollModel("gru", 5, n_keys=6)
    cfg = dict(epochs=4, lr=1e-2, batch_size=3, weight_noise_std=0.075, seed=seed, progress=False)
    cfg.update(kw)
    return Trainer(model, TrainConfig(**cfg))


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_resume_is_bitwise_identical(tmp_path):
    train, valid = rolls(10), rolls(4, seed=1)
    full = piano_trainer()
    full.fit(train, valid)

    ckpt = str(tmp_path / "ckpt.pt")
    first = piano_trainer(epochs=2, checkpoint=ckpt)
    first.fit(train, valid)
    assert not same_weights(first.model, full.model)  # half-way is not the end
    resumed = piano_trainer(seed=0, epochs=4, checkpoint=ckpt, resume=True)
    torch.manual_seed(123)  # disturb the global RNG: the checkpoint must restore it
    resumed.model.rnn.reset_parameters()  # and the fresh weights: the checkpoint must overwrite them
    resumed.fit(train, valid)
    assert same_weights(resumed.model, full.model)
    assert resumed.history["train_loss"] == full.history["train_loss"]
    assert resumed.history["grad_norm"] == full.history["grad_norm"]
    assert resumed.history["updates"] == full.history["updates"]


def test_resume_with_dropout_restores_global_rng(tmp_path):
    """Dropout draws from the global torch RNG; the checkpoint carries its state."""
    vocab = 7
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randint(0, vocab, (int(torch.randint(3, 9, (1,), generator=g)),), generator=g) for _ in range(9)]

    def make(**kw):
        torch.manual_seed(0)
        model = CharLM(vocab, 6, embedding_dim=4, num_layers=2, dropout=0.5)
        return Trainer(model, TrainConfig(**{"epochs": 3, "lr": 1e-2, "batch_size": 4, "progress": False, **kw}))

    full = make()
    full.fit(seqs)
    ckpt = str(tmp_path / "c.pt")
    make(epochs=1, checkpoint=ckpt).fit(seqs)
    torch.manual_seed(999)
    resumed = make(checkpoint=ckpt, resume=True)
    resumed.fit(seqs)
    assert same_weights(resumed.model, full.model)


class Quadratic(nn.Module):
    """loss = scale * ||W x - y||^2 with a known gradient."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2, bias=False)
        with torch.no_grad():
            self.lin.weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [0.3, 0.0, -1.0]]))

    def loss(self, batch):
        x, y = batch
        return 10.0 * ((self.lin(x) - y) ** 2).sum()


def expected_grad():
    m = Quadratic()
    x, y = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[0.5, -0.5]])
    m.loss((x, y)).backward()
    return m.lin.weight.grad.clone(), (x[0], y[0])


def test_clip_norm_records_preclip_norm_and_rescales():
    grad, example = expected_grad()
    trainer = Trainer(Quadratic(), TrainConfig(epochs=1, batch_size=1, clip_norm=1.0, lr=1e-3, progress=False))
    trainer.fit([example])
    assert trainer.history["grad_norm"] == pytest.approx([float(grad.norm())], rel=1e-6)
    assert float(grad.norm()) > 1.0
    clipped = trainer.model.lin.weight.grad  # the gradient the optimizer used
    assert float(clipped.norm()) == pytest.approx(1.0, rel=1e-5)
    torch.testing.assert_close(clipped, grad / grad.norm(), rtol=1e-5, atol=1e-6)


def test_clip_value_clamps_each_entry():
    grad, example = expected_grad()
    trainer = Trainer(Quadratic(), TrainConfig(epochs=1, batch_size=1, clip_norm=None, clip_value=5.0, lr=1e-3,
                                               progress=False))
    trainer.fit([example])
    assert trainer.history["grad_norm"] == pytest.approx([float(grad.norm())], rel=1e-6)
    torch.testing.assert_close(trainer.model.lin.weight.grad, grad.clamp(-5.0, 5.0))
    assert grad.abs().max() > 5.0  # the case really clips


def test_no_clipping_leaves_gradient():
    grad, example = expected_grad()
    trainer = Trainer(Quadratic(), TrainConfig(epochs=1, batch_size=1, clip_norm=None, lr=1e-3, progress=False))
    trainer.fit([example])
    torch.testing.assert_close(trainer.model.lin.weight.grad, grad)


def test_nan_loss_names_step_and_gradient_norm():
    calls = {"n": 0}

    def loss_fn(model, batch):
        calls["n"] += 1
        loss = model.loss(batch)
        return loss * float("nan") if calls["n"] == 3 else loss

    _, example = expected_grad()
    trainer = Trainer(Quadratic(), TrainConfig(epochs=5, batch_size=1, lr=1e-4, progress=False), loss_fn=loss_fn)
    with pytest.raises(FloatingPointError, match=r"loss became non-finite at step 2 .*gradient norm = nan"):
        trainer.fit([example])


def test_infinite_gradient_with_finite_loss_is_reported():
    class Sqrt(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def loss(self, batch):
            return self.w.abs().sqrt().sum()  # d/dw sqrt|w| at w = 0 is inf

    trainer = Trainer(Sqrt(), TrainConfig(epochs=1, batch_size=1, progress=False))
    with pytest.raises(FloatingPointError, match=r"gradient norm became non-finite at step 0"):
        trainer.fit([torch.zeros(1)])


def test_early_stopping_restores_best_weights():
    valid_losses = iter([3.0, 2.0, 2.5, 2.6, 2.7, 2.8, 2.9])
    snapshots = []

    def loss_fn(model, batch):
        if not model.training:  # validation: a scripted curve, and a snapshot of the weights it scored
            snapshots.append(model.lin.weight.detach().clone())
            return torch.tensor(next(valid_losses))
        return model.loss(batch)

    _, example = expected_grad()
    trainer = Trainer(Quadratic(), TrainConfig(epochs=7, batch_size=1, lr=1e-2, patience=2, progress=False),
                      loss_fn=loss_fn)
    history = trainer.fit([example], [example])
    assert history["stop_reason"] == "early_stopping"
    assert history["epoch"] == [1, 2, 3, 4]
    assert history["best_epoch"] == 2
    assert not torch.equal(snapshots[1], snapshots[3])
    torch.testing.assert_close(trainer.model.lin.weight, snapshots[1], rtol=0, atol=0)


def test_seeded_runs_are_identical_and_seeds_matter():
    train = rolls(8)
    a, b, c = piano_trainer(seed=0, epochs=2), piano_trainer(seed=0, epochs=2), piano_trainer(seed=1, epochs=2)
    for t in (a, b, c):
        t.fit(train)
    assert same_weights(a.model, b.model)
    assert a.history["train_loss"] == b.history["train_loss"]
    assert not same_weights(a.model, c.model)


def test_weight_noise_is_removed_before_the_update():
    """With lr = 0 the update changes nothing: the noisy weights must not leak into the model."""
    train = rolls(6)
    t = piano_trainer(epochs=2, weight_noise_std=0.5)
    for group in t.optimizer.param_groups:
        group["lr"] = 0.0
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    t.fit(train)
    assert all(torch.equal(before[k], v) for k, v in t.model.state_dict().items())


def test_history_and_evaluation():
    train, valid = rolls(9), rolls(3, seed=2)
    t = piano_trainer(epochs=3)
    h = t.fit(train, valid)
    assert h["epoch"] == [1, 2, 3] and h["updates"] == [3, 6, 9] and len(h["grad_norm"]) == 9
    assert all(b >= a for a, b in itertools.pairwise(h["seconds"]))
    assert all(math.isfinite(v) for v in h["train_loss"] + h["valid_loss"])
    # evaluate() weights batches by their frame counts: the same number whatever the batch size
    assert t.evaluate(valid, batch_size=1) == pytest.approx(t.evaluate(valid, batch_size=3), rel=1e-6)


@pytest.mark.parametrize("result, error, match", [
    (1.0, TypeError, r"expected loss_fn to return a scalar tensor or \(mean_loss, count\), got float"),
    ((torch.tensor(1.0, requires_grad=True), 2, 3), TypeError, r"got a tuple of length 3"),
    (torch.ones(2, requires_grad=True), ValueError, r"expected loss_fn to return a scalar loss, got shape \(2,\)"),
    ((torch.tensor(1.0, requires_grad=True), 0), ValueError, r"expected a count >= 1.*got 0"),
    ((torch.tensor(1.0, requires_grad=True), 2.7), TypeError, r"count .* to be a whole number, got 2.7"),  # was 2
    (torch.tensor(1.0), ValueError, r"does not depend on any trainable parameter"),  # was autograd's RuntimeError
])
def test_bad_loss_fn_results(result, error, match):
    model = nn.Linear(2, 1)
    t = Trainer(model, TrainConfig(epochs=1, progress=False), loss_fn=lambda m, b: result)
    with pytest.raises(error, match=match):
        t.fit((torch.zeros(4, 2),))


def test_variable_length_examples_without_a_collate_fn_get_a_hint():
    t = Trainer(nn.Linear(2, 1), TrainConfig(epochs=1, progress=False), loss_fn=lambda m, b: m(b).mean())
    with pytest.raises(ValueError, match=r"could not stack a batch.*collate_fn=.*pad_batch"):
        t.fit([torch.zeros(3, 2), torch.zeros(4, 2)])


def test_bad_inputs():
    with pytest.raises(TypeError, match="torch.nn.Module"):
        Trainer("not a model")
    with pytest.raises(ValueError, match="loss_fn"):
        Trainer(nn.Linear(2, 2))
    t = piano_trainer()
    with pytest.raises(ValueError, match="non-empty training set"):
        t.fit([])
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            piano_trainer(device="cuda")


@pytest.mark.cuda
def test_resume_on_cuda(tmp_path):
    train = rolls(6)
    full = piano_trainer(epochs=2, device="cuda")
    full.fit(train)
    ckpt = str(tmp_path / "c.pt")
    piano_trainer(epochs=1, device="cuda", checkpoint=ckpt).fit(train)
    resumed = piano_trainer(epochs=2, device="cuda", checkpoint=ckpt, resume=True)
    resumed.fit(train)
    assert same_weights(resumed.model, full.model)


def test_resume_from_a_checkpoint_written_on_another_device(tmp_path):
    # A CUDA generator's state is 16 bytes, a CPU one's 5056: a GPU checkpoint resumed on a CPU-only machine (or the
    # reverse) cannot restore the weight-noise stream. It resumes with a warning and a reseeded stream, not a failure.
    train = rolls(6)
    ckpt = str(tmp_path / "c.pt")
    piano_trainer(epochs=1, checkpoint=ckpt).fit(train)
    state = torch.load(ckpt, weights_only=True)
    state["noise_generator"] = torch.zeros(16, dtype=torch.uint8)  # what a CUDA generator's get_state() returns
    torch.save(state, ckpt)
    ckpt2 = str(tmp_path / "c2.pt")
    torch.save(state, ckpt2)  # a second copy: the first resumed run overwrites ckpt
    resumed = piano_trainer(epochs=2, checkpoint=ckpt, resume=True)
    with pytest.warns(UserWarning, match="weight-noise generator"):
        resumed.fit(train)
    assert resumed.epoch == 2 and len(resumed.history["train_loss"]) == 2
    assert all(math.isfinite(v) for v in resumed.history["train_loss"])
    again = piano_trainer(epochs=2, checkpoint=ckpt2, resume=True)  # the reseeded stream is itself deterministic
    with pytest.warns(UserWarning):
        again.fit(train)
    assert same_weights(again.model, resumed.model)


def test_weight_noise_changes_the_forward_pass_reproducibly():
    train = rolls(6)
    losses = []
    for std in (0.0, 0.3, 0.3):
        t = piano_trainer(epochs=1, weight_noise_std=std)
        for group in t.optimizer.param_groups:
            group["lr"] = 0.0
        losses.append(t.fit(train)["train_loss"][0])
    assert losses[1] != losses[0]  # noisy weights give another loss
    assert losses[1] == losses[2]  # from the trainer's own seeded generator


def test_count_may_be_a_tensor_or_an_integral_float():
    model = nn.Linear(2, 1)
    for count in (torch.tensor(3), 3.0):
        t = Trainer(model, TrainConfig(epochs=1, progress=False),
                    loss_fn=lambda m, b, count=count: (m(b[0]).pow(2).mean(), count))
        assert math.isfinite(t.fit((torch.ones(4, 2),))["train_loss"][0])


def test_evaluate_checks_the_loss_shape_and_batch_size():
    t = Trainer(nn.Linear(2, 3), TrainConfig(progress=False), loss_fn=lambda m, b: m(b[0]).mean(0))
    with pytest.raises(ValueError, match=r"scalar loss, got shape \(3,\)"):  # was 'only one element tensors ...'
        t.evaluate((torch.zeros(4, 2),))
    t = piano_trainer()
    for bad in (0, -1):  # 0 silently meant the config's batch size, -1 divided by zero
        with pytest.raises(ValueError, match=f"batch_size >= 1, got {bad}"):
            t.evaluate(rolls(3), batch_size=bad)
    with pytest.raises(TypeError, match="batch_size to be an int or None, got float"):  # a wrong type: TypeError
        t.evaluate(rolls(3), batch_size=2.0)


def test_model_without_trainable_parameters():
    frozen = PianoRollModel("gru", 3, n_keys=6).requires_grad_(False)
    with pytest.raises(ValueError, match=r"trainable parameters, got none \(6 parameters"):
        Trainer(frozen, TrainConfig(progress=False))


def test_bad_device_string_is_a_value_error():
    with pytest.raises(ValueError, match=r"expected device 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto', got 'gpu'"):
        piano_trainer(device="gpu")


def test_device_object_is_stored_as_a_string():
    assert piano_trainer(device=torch.device("cpu")).config.device == "cpu"


def test_patience_without_validation_set_is_an_error():
    with pytest.raises(ValueError, match="patience=2 needs a validation set"):
        piano_trainer(patience=2).fit(rolls(4))


def test_nan_validation_loss_is_an_error():
    valid = rolls(2)
    valid[1][0, 0] = math.nan
    with pytest.raises(FloatingPointError, match="validation loss is nan after epoch 1"):
        piano_trainer().fit(rolls(4), valid)


def test_resume_checks_model_optimizer_and_file(tmp_path):
    ck = str(tmp_path / "ck.pt")
    piano_trainer(checkpoint=ck, epochs=1).fit(rolls(4), rolls(2))
    other = Trainer(PianoRollModel("lstm", 5, n_keys=6), TrainConfig(checkpoint=ck, resume=True, progress=False,
                                                                      lr=1e-2, weight_noise_std=0.075))
    before = {k: v.clone() for k, v in other.model.state_dict().items()}
    with pytest.raises(ValueError, match=r"checkpoint's weights do not fit this model.*\(15, 6\) in the checkpoint"):
        other.fit(rolls(4), rolls(2))
    assert all(torch.equal(before[k], v) for k, v in other.model.state_dict().items())  # nothing half-loaded
    with pytest.raises(ValueError, match="written with optimizer 'rmsprop', this trainer uses 'adam'"):
        piano_trainer(checkpoint=ck, resume=True, optimizer="adam").fit(rolls(4), rolls(2))
    model_file = tmp_path / "model.pt"
    torch.save({"kind": "pianoroll", "state_dict": {}}, model_file)
    with pytest.raises(ValueError, match="expected a Trainer checkpoint"):
        piano_trainer(checkpoint=str(model_file), resume=True).fit(rolls(4), rolls(2))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="could not read the checkpoint"):
        piano_trainer(checkpoint=str(tmp_path / "junk.pt"), resume=True).fit(rolls(4), rolls(2))


def test_resume_with_a_new_learning_rate_uses_it(tmp_path):
    # The optimizer state restored the checkpoint's lr, so --lr on resume was silently ignored.
    ck = str(tmp_path / "ck.pt")
    piano_trainer(checkpoint=ck, epochs=1).fit(rolls(4), rolls(2))
    t = piano_trainer(checkpoint=ck, resume=True, epochs=2, lr=0.5)
    with pytest.warns(UserWarning, match=r"lr 0.01 -> 0.5"):
        t.fit(rolls(4), rolls(2))
    assert [g["lr"] for g in t.optimizer.param_groups] == [0.5]


def test_a_tuple_of_two_lists_is_not_read_as_two_examples():
    xs, ys = [torch.randn(2) for _ in range(5)], [torch.randn(1) for _ in range(5)]
    t = Trainer(nn.Linear(2, 1), TrainConfig(epochs=1, progress=False),
                loss_fn=lambda m, b: ((m(b[0]) - b[1]) ** 2).mean())
    with pytest.raises(TypeError, match=r"tuple of 2 lists of 5 items.*list\(zip\(inputs, targets\)\)"):
        t.fit((xs, ys))  # was: 2 'examples', each a whole list, trained on silently
    assert len(t.fit(list(zip(xs, ys, strict=True)))["train_loss"]) == 1


def test_a_tuple_with_a_0d_tensor_is_named():
    t = Trainer(nn.Linear(2, 1), TrainConfig(epochs=1, progress=False), loss_fn=lambda m, b: m(b[0]).mean())
    with pytest.raises(ValueError, match=r"first \(example\) dimension, got shapes \[\(4, 2\), \(\)\]"):
        t.fit((torch.zeros(4, 2), torch.tensor(1.0)))  # was IndexError: tuple index out of range


def test_checkpoint_path_that_is_a_folder_fails_before_training(tmp_path):
    t = piano_trainer(checkpoint=str(tmp_path))
    with pytest.raises(ValueError, match="is a folder; expected a file path"):  # was IsADirectoryError after epoch 1
        t.fit(rolls(4), rolls(2))
    assert t.step == 0


def test_weights_are_noise_free_after_loss_fn_raises():
    t = piano_trainer(weight_noise_std=0.5)
    before = {k: v.clone() for k, v in t.model.state_dict().items()}

    def broken(model, batch):
        model(batch.inputs, batch.lengths)
        raise RuntimeError("bad batch")

    t.loss_fn = broken
    with pytest.raises(RuntimeError, match="bad batch"):
        t.fit(rolls(4))
    assert all(torch.equal(before[k], v) for k, v in t.model.state_dict().items())  # was left at theta + noise


def test_evaluate_restores_training_mode_when_loss_fn_raises():
    t = Trainer(nn.Linear(2, 1), TrainConfig(progress=False), loss_fn=lambda m, b: m(b[0]).mean() / 0 + None)
    t.model.train()
    with pytest.raises(TypeError):
        t.evaluate((torch.zeros(3, 2),))
    assert t.model.training  # was left in eval mode: dropout off for the rest of training
