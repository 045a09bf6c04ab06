"""ASG's learned layer-wise learning rates: stage groups, REINFORCE direction, lr application, checkpoint state."""

from __future__ import annotations

import io
import warnings
from types import SimpleNamespace

import pytest
import torch

from syn2real.callbacks.layerwise_lr import LayerwiseLR, backbone_stage_names
from syn2real.methods import ASG, CSG, SourceOnly
from syn2real.tasks import Classification
from syn2real.models.heads import NetworkConfig

warnings.filterwarnings("ignore", message=".*frozen ImageNet model has a random classifier.*")


def _ids(params) -> list[int]:
    return [id(p) for p in params]


@pytest.mark.parametrize("method_cls,backbone", [(ASG, "test_resnet"), (CSG, "test_efficientnet"),
                                                 (SourceOnly, "digits_cnn")])
def test_groups_cover_every_trainable_parameter_exactly_once(method_cls, backbone: str) -> None:
    chans = 1 if backbone == "digits_cnn" else 3
    kwargs = {"queue_size": 8} if method_cls is CSG else {}
    method = method_cls(task=Classification(NetworkConfig(backbone=backbone, num_classes=4, in_chans=chans, bottleneck_dim=8)),
                        **kwargs)
    cb = LayerwiseLR()
    groups = cb.split_param_groups(method, method.param_groups())
    seen = [i for g in groups for i in _ids(g["params"])]
    trainable = _ids(p for p in method.parameters() if p.requires_grad)
    assert len(seen) == len(set(seen)) and sorted(seen) == sorted(trainable)
    # every backbone parameter sits in a stage group the policy controls; the head too
    stage_groups = [g for g in groups if g["name"].startswith("backbone.stage")]
    assert sorted(i for g in stage_groups for i in _ids(g["params"])) == sorted(
        _ids(p for p in method.model.backbone.parameters() if p.requires_grad))
    assert cb.group_names == [g["l2o"] for g in groups if "l2o" in g] and "head" in cb.group_names
    assert all(g["lr"] == method.optim_cfg.lr * method.optim_cfg.backbone_lr_mult for g in stage_groups)
    if backbone == "test_resnet":  # timm's coarse groups: stem (conv1 + bn1), layer1..4
        assert [g["name"] for g in stage_groups] == [f"backbone.stage{i}" for i in range(5)]
        names = backbone_stage_names(method.model.backbone)
        assert names["conv1.0.weight"] == names["bn1.weight"] == "stage0" and names["layer4.0.conv1.weight"] == "stage4"
    if method_cls is CSG:  # the projection heads are optimised but not controlled
        assert any(g["name"] == "projection" and "l2o" not in g for g in groups)


def test_reinforce_on_a_toy_reward_moves_the_policy_the_right_way() -> None:
    cb = LayerwiseLR(policy_lr=0.05, rollout=5, seed=0)
    cb._setup_policy(["stage0", "head"])
    inputs = torch.zeros(2, 6)

    def expected_mult() -> torch.Tensor:
        with torch.no_grad():
            logits, _ = cb.policy(inputs, cb.policy.initial_state())
        return logits.softmax(1) @ torch.tensor(cb.actions)

    before = expected_mult()
    for _ in range(300):
        cb.lstm_state = cb.policy.initial_state()
        for _ in range(cb.rollout):
            mults = cb.decide(inputs)
            cb.give_reward(mults[0] - mults[1])  # rewards a high lr for group 0 and a low one for group 1
    after = expected_mult()
    assert after[0] > before[0] + 0.2 and after[1] < before[1] - 0.2, (before, after)


def test_one_update_raises_the_probability_of_a_rewarded_action() -> None:
    cb = LayerwiseLR(policy_lr=0.1, rollout=1, baseline_momentum=0.0)
    cb._setup_policy(["g"])
    inputs = torch.ones(1, 6)
    state0 = cb.policy.initial_state()
    action = cb.actions.index(cb.decide(inputs)[0])
    with torch.no_grad():
        p_before = cb.policy(inputs, state0)[0].softmax(1)[0, action]
    assert cb.give_reward(1.0)  # a rollout of 1: updated now
    with torch.no_grad():
        p_after = cb.policy(inputs, state0)[0].softmax(1)[0, action]
    assert p_after > p_before
    # a negative return lowers it
    cb.lstm_state = cb.policy.initial_state()
    action = cb.actions.index(cb.decide(inputs)[0])
    with torch.no_grad():
        p_before = cb.policy(inputs, state0)[0].softmax(1)[0, action]
    cb.give_reward(-1.0)
    with torch.no_grad():
        assert cb.policy(inputs, state0)[0].softmax(1)[0, action] < p_before


def test_discounted_returns_and_loss_decrease_reward() -> None:
    cb = LayerwiseLR(rollout=3, gamma=0.5, baseline_momentum=0.0)
    cb._setup_policy(["g"])
    lps = []
    for r in (1.0, 0.0, 2.0):
        cb.decide(torch.zeros(1, 6))
        lps.append(cb.pending_log_prob)
        cb.rollout_buffer.append((cb.pending_log_prob, r))
        cb.pending_log_prob = None
    # G = (1 + 0.5·0 + 0.25·2, 0 + 0.5·2, 2) = (1.5, 1, 2); loss = −Σ log π · G
    expected = -(lps[0] * 1.5 + lps[1] * 1.0 + lps[2] * 2.0)
    assert cb.reinforce() == pytest.approx(float(expected), rel=1e-5)
    assert cb.reward_of({"loss": 2.0, "kl": 1.0}, {"loss": 1.5, "kl": 0.3}) == 0.5
    assert LayerwiseLR(reward="neg_kl").reward_of({"loss": 2.0, "kl": 1.0}, {"loss": 1.5, "kl": 0.3}) == -0.3


def test_multipliers_scale_the_scheduled_lr_without_compounding() -> None:
    method = SourceOnly(task=Classification(network=NetworkConfig(backbone="digits_cnn", num_classes=10, in_chans=1)))
    cb = LayerwiseLR()
    groups = cb.split_param_groups(method, method.param_groups())
    opt = torch.optim.SGD(groups, lr=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (1 + step))
    trainer = SimpleNamespace(optimizers=[opt], lr_scheduler_configs=[SimpleNamespace(scheduler=sched)])
    cb.multipliers = [0.5] * len(cb.group_names)
    cb._apply_lrs(trainer)
    cb._apply_lrs(trainer)  # applying twice in one step does not compound
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.005] * len(groups))
    opt.step()
    sched.step()  # the schedule sets 0.01 / 2; the multiplier applies on top
    cb.multipliers[0] = 0.0
    cb._apply_lrs(trainer)
    assert opt.param_groups[0]["lr"] == 0.0 and opt.param_groups[1]["lr"] == pytest.approx(0.0025)
    # without a schedule the optimizer's initial lr is the base
    plain = torch.optim.SGD(cb.split_param_groups(method, method.param_groups()), lr=0.01)
    cb._apply_lrs(SimpleNamespace(optimizers=[plain], lr_scheduler_configs=[]))
    cb._apply_lrs(SimpleNamespace(optimizers=[plain], lr_scheduler_configs=[]))
    assert plain.param_groups[1]["lr"] == pytest.approx(0.005 * method.optim_cfg.backbone_lr_mult / 0.01 * 0.01)


def test_policy_state_survives_a_checkpoint_round_trip() -> None:
    method = SourceOnly(task=Classification(network=NetworkConfig(backbone="digits_cnn", num_classes=10, in_chans=1)))
    cb = LayerwiseLR(rollout=2, seed=3)
    cb.split_param_groups(method, method.param_groups())
    for r in (0.1, 0.2, 0.3):
        cb.decide(torch.randn(len(cb.group_names), 6))
        cb.give_reward(r)
    cb.batches_seen, cb.history = 150, [{"step": 100, "reward": 0.3}]
    buffer = io.BytesIO()
    torch.save(cb.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)  # primitives and tensors only

    fresh = LayerwiseLR(rollout=2, seed=3)
    fresh.load_state_dict(state)  # before the optimizer exists (Lightning restores callbacks first)
    fresh.split_param_groups(method, method.param_groups())
    for (k, v), v2 in zip(cb.policy.state_dict().items(), fresh.policy.state_dict().values()):
        assert torch.equal(v, v2), k
    assert fresh.multipliers == cb.multipliers and fresh.batches_seen == 150 and fresh.baseline == cb.baseline
    assert fresh.history == cb.history
    x = torch.randn(len(cb.group_names), 6)
    assert cb.decide(x) == fresh.decide(x)  # same LSTM state and sampling generator
    wrong = LayerwiseLR()
    wrong._setup_policy(["a"])
    with pytest.raises(ValueError, match="resume with the same backbone"):
        wrong.load_state_dict(state)


def test_policy_seed_follows_the_run_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    def first_weights(global_seed: str, seed: int | None = None) -> torch.Tensor:
        monkeypatch.setenv("PL_GLOBAL_SEED", global_seed)
        cb = LayerwiseLR(seed=seed)
        cb._setup_policy(["a", "b"])
        return cb.policy.heads[0].weight.detach().clone()

    assert torch.equal(first_weights("1"), first_weights("1"))
    assert not torch.equal(first_weights("1"), first_weights("2"))
    assert torch.equal(first_weights("1", seed=5), first_weights("2", seed=5))
