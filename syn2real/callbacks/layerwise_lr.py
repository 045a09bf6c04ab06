"""Learned layer-wise learning rates (ASG's "learning to optimise", Chen et al., ICML 2020, Sec. 3.3).

The backbone's parameters are split into its stages (timm's ``group_matcher``: ResNet stem, layer1..4;
EfficientNet stem, block stages, ...) plus the task model's new layers (``head``). Every ``interval`` training
steps a policy (one small LSTM per group, hidden 20) picks each group's learning-rate multiplier from
{0, 0.1, …, 1.0} from a state of window-averaged CE and KL losses, training progress, mean and std of the head's
weights and the group's current multiplier. It is trained by REINFORCE (SGD lr 7e-4, discount γ = 0.99) over
rollouts of 5 decisions.

Reward (the paper's was not released; ``reward`` chooses): ``loss_decrease`` (default) = the window mean of the
training objective (``loss_key``, e.g. CE + λ·KL for ASG) in the window before a decision minus the window after
it. Each training batch's loss is measured *before* the model's update on that batch, so within an epoch it is a
loss on synthetic images the model has not been trained on yet, the cheap stand-in for a held-out synthetic batch.
``neg_kl`` = −(window mean of ``kl_key``): fidelity to the ImageNet model.

DDP: window statistics are averaged over ranks and actions are drawn from a seeded generator, so every rank takes
the same decisions and applies the same learning rates. The policy, its optimiser, the multipliers and the
decision history are saved in checkpoints; a rollout interrupted by a restart is discarded.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from torch import nn

__all__ = ["LayerwiseLR", "LayerwisePolicy", "backbone_stage_names"]

STATE_FEATURES = ("ce", "kl", "progress", "head_mean", "head_std", "own_mult")


def backbone_stage_names(backbone: nn.Module) -> dict[str, str]:
    """Parameter name → stage label (``stage0`` = stem, ``stage1`` …) from timm's coarse ``group_matcher``;
    models without one are split by their top-level children."""
    names = [n for n, _ in backbone.named_parameters()]
    matcher = getattr(backbone, "group_matcher", None)
    if callable(matcher):
        from timm.models import group_parameters

        groups = group_parameters(backbone, matcher(coarse=True))
        ordered = sorted(groups.items(), key=lambda kv: kv[0])
        out = {p: f"stage{i}" for i, (_, params) in enumerate(ordered) for p in params}
    else:
        children = [c for c, _ in backbone.named_children()]
        out = {p: f"stage{children.index(p.split('.')[0])}" for p in names}
    missing = [n for n in names if n not in out]
    if missing:
        raise ValueError(f"layer-wise lr: no stage found for backbone parameters {missing[:5]}")
    return out


class LayerwisePolicy(nn.Module):
    """One LSTM cell (hidden ``hidden``) + linear action head per parameter group."""

    def __init__(self, n_groups: int, n_actions: int, n_inputs: int = len(STATE_FEATURES), hidden: int = 20,
                 seed: int = 0) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # identical on every rank
            self.cells = nn.ModuleList(nn.LSTMCell(n_inputs, hidden) for _ in range(n_groups))
            self.heads = nn.ModuleList(nn.Linear(hidden, n_actions) for _ in range(n_groups))
        self.hidden = hidden

    def initial_state(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(torch.zeros(1, self.hidden), torch.zeros(1, self.hidden)) for _ in self.cells]

    def forward(self, inputs: torch.Tensor, state: list[tuple[torch.Tensor, torch.Tensor]]
                ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """``inputs`` (G, n_inputs) → action logits (G, n_actions) and the new LSTM states."""
        logits, new_state = [], []
        for g, (cell, head) in enumerate(zip(self.cells, self.heads)):
            h, c = cell(inputs[g : g + 1], state[g])
            new_state.append((h, c))
            logits.append(head(h))
        return torch.cat(logits), new_state


class LayerwiseLR(L.Callback):
    """ASG's learned layer-wise learning rates for any method that builds its optimizer with
    ``DAMethod.build_optimizer`` (it splits the backbone's parameter group into stages).

    Args:
        interval: training steps between two decisions (the paper: "every few steps").
        rollout: decisions per REINFORCE update (5).
        hidden: LSTM hidden size (20).
        policy_lr: SGD learning rate of the policy (7e-4).
        gamma: discount γ of the returns (0.99).
        actions: the multipliers to choose from (0, 0.1, …, 1.0).
        reward: ``loss_decrease`` (default) or ``neg_kl``, see the module docstring.
        loss_key / ce_key / kl_key: logged training metrics read for the reward and the state (a missing CE/KL
            enters the state as 0).
        controlled: group names besides the backbone stages whose lr the policy sets (the task model's ``head``);
            other groups (discriminators, projection heads) keep the optimiser's lr.
        baseline_momentum: moving-average baseline of the returns (variance reduction; 0 = no baseline).
        initial_mult: multiplier of every group before the first decision.
        seed: seed of the policy's weights and of its action sampling; default the run's ``seed_everything``
            (the same on every rank).
        filename: the decisions (step, reward, multipliers) written to ``<default_root_dir>/<filename>`` after fit.
    """

    def __init__(
        self,
        interval: int = 50,
        rollout: int = 5,
        hidden: int = 20,
        policy_lr: float = 7e-4,
        gamma: float = 0.99,
        actions: list[float] | None = None,
        reward: Literal["loss_decrease", "neg_kl"] = "loss_decrease",
        loss_key: str = "train/loss",
        ce_key: str = "train/source_ce",
        kl_key: str = "train/guidance_kl",
        controlled: list[str] | None = None,
        baseline_momentum: float = 0.9,
        initial_mult: float = 1.0,
        seed: int | None = None,
        filename: str | None = "layerwise_lr.json",
    ) -> None:
        if interval < 1 or rollout < 1:
            raise ValueError(f"LayerwiseLR: interval and rollout must be >= 1, got {interval}, {rollout}")
        if reward not in ("loss_decrease", "neg_kl"):
            raise ValueError(f"LayerwiseLR.reward must be 'loss_decrease' or 'neg_kl', got {reward!r}")
        self.interval, self.rollout, self.hidden = int(interval), int(rollout), int(hidden)
        self.policy_lr, self.gamma = float(policy_lr), float(gamma)
        self.actions = [round(0.1 * i, 1) for i in range(11)] if actions is None else [float(a) for a in actions]
        self.reward = reward
        self.loss_key, self.ce_key, self.kl_key = loss_key, ce_key, kl_key
        self.controlled = list(controlled) if controlled is not None else ["head"]
        self.baseline_momentum = float(baseline_momentum)
        self.initial_mult = float(initial_mult)
        self.seed = seed
        self.filename = filename
        self.group_names: list[str] = []
        self.policy: LayerwisePolicy | None = None
        self.policy_opt: torch.optim.Optimizer | None = None
        self.multipliers: list[float] = []
        self.lstm_state: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.generator = torch.Generator().manual_seed(self.resolved_seed())
        self.baseline: float | None = None
        self.batches_seen = 0
        self.window: dict[str, list[float]] = {"loss": [], "ce": [], "kl": []}
        self.prev_window: dict[str, float] | None = None
        self.pending_log_prob: torch.Tensor | None = None  # of the latest decision, awaiting its reward
        self.rollout_buffer: list[tuple[torch.Tensor, float]] = []
        self.history: list[dict[str, Any]] = []
        self._unscaled: dict[tuple[int, int], float] = {}
        self._loaded: dict[str, Any] | None = None

    # -- parameter groups ---------------------------------------------------------------------------
    def split_param_groups(self, pl_module: L.LightningModule, groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Split every group's backbone parameters by stage (``<group>.stageK``); other parameters keep their
        group. Groups the policy controls get an ``l2o`` label. Called by ``DAMethod.build_optimizer``."""
        backbone = pl_module.model.backbone
        stages = backbone_stage_names(backbone)
        stage_of = {id(p): stages[n] for n, p in backbone.named_parameters()}
        out: list[dict[str, Any]] = []
        for group in groups:
            name = group.get("name", "group")
            by_stage: dict[str, list[nn.Parameter]] = {}
            rest: list[nn.Parameter] = []
            for p in group["params"]:
                if id(p) in stage_of:
                    by_stage.setdefault(stage_of[id(p)], []).append(p)
                else:
                    rest.append(p)
            for stage in sorted(by_stage, key=lambda s: int(s[len("stage"):])):
                out.append({**group, "params": by_stage[stage], "name": f"{name}.{stage}", "l2o": f"{name}.{stage}"})
            if rest:
                extra = {"l2o": name} if name in self.controlled else {}
                out.append({**group, "params": rest, **extra})
        names = [g["l2o"] for g in out if "l2o" in g]
        if names:
            self._setup_policy(names)
        return out

    def resolved_seed(self) -> int:
        """``seed``, or the run's global seed (``seed_everything``), or 0."""
        return int(self.seed) if self.seed is not None else int(os.environ.get("PL_GLOBAL_SEED", 0))

    def _setup_policy(self, names: list[str]) -> None:
        if self.policy is not None and names == self.group_names:
            return
        self.group_names = names
        seed = self.resolved_seed()
        self.generator = torch.Generator().manual_seed(seed)
        self.policy = LayerwisePolicy(len(names), len(self.actions), hidden=self.hidden, seed=seed)
        self.policy_opt = torch.optim.SGD(self.policy.parameters(), lr=self.policy_lr)
        self.multipliers = [self.initial_mult] * len(names)
        self.lstm_state = self.policy.initial_state()
        if self._loaded is not None:
            self._apply_loaded(self._loaded)
            self._loaded = None

    # -- the policy: decisions and REINFORCE ------------------------------------------------------
    def state_inputs(self, stats: dict[str, float], progress: float, head_stats: tuple[float, float]) -> torch.Tensor:
        """(G, 6) policy inputs: shared [CE, KL, progress, head mean, head std] + each group's multiplier."""
        shared = [stats.get("ce", 0.0), stats.get("kl", 0.0), progress, head_stats[0], head_stats[1]]
        shared = [0.0 if not math.isfinite(v) else float(v) for v in shared]
        return torch.tensor([shared + [m] for m in self.multipliers], dtype=torch.float32)

    def decide(self, inputs: torch.Tensor) -> list[float]:
        """Sample a multiplier per group; the log-probability awaits the reward of the coming window."""
        if self.policy is None:
            raise RuntimeError("LayerwiseLR has no parameter groups yet (split_param_groups was never called)")
        logits, self.lstm_state = self.policy(inputs, self.lstm_state)
        probs = logits.softmax(dim=1)
        choice = torch.multinomial(probs.detach(), 1, generator=self.generator).squeeze(1)
        self.pending_log_prob = probs.log().gather(1, choice[:, None]).sum()
        self.multipliers = [self.actions[int(a)] for a in choice]
        return self.multipliers

    def give_reward(self, reward: float) -> bool:
        """Attach ``reward`` to the latest decision; after ``rollout`` of them, one REINFORCE update (True)."""
        if self.pending_log_prob is None:
            return False
        self.rollout_buffer.append((self.pending_log_prob, float(reward)))
        self.pending_log_prob = None
        if len(self.rollout_buffer) < self.rollout:
            return False
        self.reinforce()
        return True

    def reinforce(self) -> float:
        """REINFORCE over the buffered rollout: ∇ −Σ_t log π(a_t|s_t) (G_t − b), G_t = Σ_k γ^k r_{t+k}."""
        assert self.policy_opt is not None
        rewards = [r for _, r in self.rollout_buffer]
        returns, running = [], 0.0
        for r in reversed(rewards):
            running = r + self.gamma * running
            returns.append(running)
        returns.reverse()
        baseline = self.baseline if self.baseline is not None else 0.0
        loss = -sum(lp * (g - baseline) for (lp, _), g in zip(self.rollout_buffer, returns))
        self.policy_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.policy_opt.step()
        mean_return = sum(returns) / len(returns)
        m = self.baseline_momentum
        if m > 0:
            self.baseline = mean_return if self.baseline is None else m * self.baseline + (1 - m) * mean_return
        self.rollout_buffer = []
        self.lstm_state = [(h.detach(), c.detach()) for h, c in self.lstm_state]
        return float(loss)

    def reward_of(self, before: dict[str, float], after: dict[str, float]) -> float:
        if self.reward == "neg_kl":
            return -after["kl"]
        return before["loss"] - after["loss"]

    # -- Lightning hooks --------------------------------------------------------------------------
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.policy is None:
            raise RuntimeError(
                "LayerwiseLR found no parameter groups to control: the method must build its optimizer with "
                "DAMethod.build_optimizer and have a model.backbone (every syn2real method does)"
            )

    def _window_means(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        values = []
        for key in ("loss", "ce", "kl"):
            seq = self.window[key]
            values.append(sum(seq) / len(seq) if seq else float("nan"))
        t = torch.tensor(values, dtype=torch.float64, device=pl_module.device)
        if trainer.world_size > 1:
            t = trainer.strategy.reduce(t.float(), reduce_op="mean").double()
        return dict(zip(("loss", "ce", "kl"), t.cpu().tolist()))

    def _head_stats(self, pl_module: L.LightningModule) -> tuple[float, float]:
        head = getattr(pl_module.model, "head", None)
        weights = [p.detach().float().flatten() for n, p in head.named_parameters() if n.endswith("weight")] \
            if head is not None else []
        if not weights:
            return 0.0, 0.0
        w = torch.cat(weights)
        return float(w.mean()), float(w.std()) if w.numel() > 1 else 0.0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if self.batches_seen % self.interval == 0:
            stats = self._window_means(trainer, pl_module)
            reward = None
            if self.prev_window is not None and self.window["loss"]:
                reward = self.reward_of(self.prev_window, stats)
                if not math.isfinite(reward):
                    raise ValueError(f"LayerwiseLR: reward {self.reward!r} needs the logged metric "
                                     f"{self.kl_key if self.reward == 'neg_kl' else self.loss_key!r}")
                self.give_reward(reward)
            if self.window["loss"]:
                self.prev_window = stats
            progress = trainer.global_step / max(1, int(trainer.estimated_stepping_batches))
            self.decide(self.state_inputs(stats, progress, self._head_stats(pl_module)))
            self.window = {"loss": [], "ce": [], "kl": []}
            self.history.append({"step": int(trainer.global_step), "reward": reward,
                                 **{f"mult/{n}": m for n, m in zip(self.group_names, self.multipliers)}})
        self._apply_lrs(trainer)

    def _apply_lrs(self, trainer: L.Trainer) -> None:
        """lr of each controlled group = the schedule's lr for this step (``get_last_lr()``; the optimizer's
        initial lr without a schedule) × the group's multiplier."""
        mult = dict(zip(self.group_names, self.multipliers))
        schedulers = {id(c.scheduler.optimizer): c.scheduler for c in getattr(trainer, "lr_scheduler_configs", [])}
        for o, optimizer in enumerate(trainer.optimizers):
            scheduler = schedulers.get(id(optimizer))
            scheduled = scheduler.get_last_lr() if scheduler is not None else None
            for g, group in enumerate(optimizer.param_groups):
                label = group.get("l2o")
                if label not in mult:
                    continue
                base = scheduled[g] if scheduled is not None else self._unscaled.setdefault((o, g), group["lr"])
                group["lr"] = base * mult[label]

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        metrics = trainer.callback_metrics
        for key, name in ((self.loss_key, "loss"), (self.ce_key, "ce"), (self.kl_key, "kl")):
            value = metrics.get(key)
            if value is None and name == "loss" and isinstance(outputs, dict) and "loss" in outputs:
                value = outputs["loss"]
            if value is not None:
                self.window[name].append(float(value))
        decided = self.batches_seen % self.interval == 0
        self.batches_seen += 1
        for name, m in zip(self.group_names, self.multipliers):
            pl_module.log(f"l2o/lr_mult/{name}", float(m), on_step=True, on_epoch=False, batch_size=1)
        if decided and self.history and self.history[-1]["reward"] is not None:
            pl_module.log("l2o/reward", float(self.history[-1]["reward"]), on_step=True, on_epoch=False, batch_size=1)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and self.filename:
            from syn2real.io import write_json_atomic

            write_json_atomic(self.summary(), Path(trainer.default_root_dir) / self.filename)

    # -- checkpoints ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        if self.policy is None:
            return {}
        return {
            "group_names": list(self.group_names),
            "policy": self.policy.state_dict(),
            "policy_opt": self.policy_opt.state_dict() if self.policy_opt is not None else {},
            "multipliers": list(self.multipliers),
            "lstm_state": [[h.detach(), c.detach()] for h, c in self.lstm_state],
            "generator": self.generator.get_state(),
            "baseline": self.baseline,
            "batches_seen": self.batches_seen,
            "window": {k: list(v) for k, v in self.window.items()},
            "prev_window": dict(self.prev_window) if self.prev_window is not None else None,
            "history": list(self.history),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        if self.policy is None:
            self._loaded = dict(state_dict)  # applied once the optimizer's groups exist
            return
        self._apply_loaded(state_dict)

    def _apply_loaded(self, state: dict[str, Any]) -> None:
        if list(state["group_names"]) != self.group_names:
            raise ValueError(f"LayerwiseLR checkpoint state is for groups {state['group_names']}, but the optimizer "
                             f"has {self.group_names}; resume with the same backbone and method")
        assert self.policy is not None and self.policy_opt is not None
        self.policy.load_state_dict(state["policy"])
        if state["policy_opt"]:
            self.policy_opt.load_state_dict(state["policy_opt"])
        self.multipliers = [float(m) for m in state["multipliers"]]
        self.lstm_state = [(h.clone(), c.clone()) for h, c in state["lstm_state"]]
        self.generator.set_state(state["generator"])
        self.baseline = state["baseline"]
        self.batches_seen = int(state["batches_seen"])
        self.window = {k: list(v) for k, v in state["window"].items()}
        self.prev_window = state["prev_window"]
        self.history = list(state["history"])
        self.pending_log_prob, self.rollout_buffer = None, []

    def summary(self) -> dict[str, Any]:
        """Decisions so far (step, reward, multiplier per group), e.g. for ``metrics.json``."""
        return {"groups": list(self.group_names), "decisions": list(self.history)}
