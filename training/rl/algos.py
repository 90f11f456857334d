"""stable-baselines3's PPO and SAC as residual learners: built with the residual's output layer at zero, mirrored
into a `policies.residual.ResidualActor` (so a specialist runs without SB3), and their training state written as
tensors + JSON (SB3's own `.save` pickles; alloy never loads a pickle).

Nothing here is an RL algorithm of alloy's own: the only addition is `ResidualSAC`, which stores the residual that
was executed (zeros in base-only episodes of progressive exploration) instead of the one it sampled.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.torch_layers import FlattenExtractor
from torch import nn

from policies.residual import ResidualActor, ResidualSpec
from training import checkpoint as ckpt
from training.errors import TrainingError
from training.rl.config import ALGOS, NetArch, PPOConfig, SACConfig


class ActorFeatures(FlattenExtractor):
    """The actor's features extractor under an asymmetric critic: the observation with its last `privileged` values
    (simulator-only state, `ResidualVecEnv(privileged=...)`) set to zero, so no weight of the actor can use them; the
    critic's own extractor sees everything. `extract_actor` drops the zeroed inputs' weights."""

    def __init__(self, observation_space, privileged: int):
        super().__init__(observation_space)
        keep = torch.ones(self.features_dim)
        keep[self.features_dim - int(privileged):] = 0.0
        self.register_buffer("keep", keep, persistent=False)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return super().forward(observations) * self.keep


def build_model(algo: str, venv, net: NetArch, ppo: PPOConfig, sac: SACConfig, seed: int, device: str,
                verbose: int = 0, privileged: int = 0):
    """An SB3 model on `venv` whose deterministic residual is zero (the specialist starts as its base); with
    `privileged` > 0 the last that many observation values reach the critic only (an asymmetric critic)."""
    if algo == "ppo":
        model = PPO("MlpPolicy", venv, n_steps=ppo.n_steps, batch_size=ppo.batch_size, n_epochs=ppo.n_epochs,
                    learning_rate=learning_rate(ppo.lr, ppo.lr_schedule), gamma=ppo.gamma, gae_lambda=ppo.gae_lambda,
                    clip_range=ppo.clip_range,
                    ent_coef=ppo.ent_coef, vf_coef=ppo.vf_coef, max_grad_norm=ppo.max_grad_norm,
                    target_kl=ppo.target_kl or None, use_sde=ppo.use_sde, sde_sample_freq=ppo.sde_sample_freq,
                    seed=seed, device=device, verbose=verbose,
                    policy_kwargs=dict(net_arch=dict(pi=list(net.actor), vf=list(net.critic)), activation_fn=nn.Tanh,
                                       log_std_init=ppo.log_std_init, share_features_extractor=not privileged))
        if privileged:
            view = ActorFeatures(venv.observation_space, privileged).to(model.device)
            model.policy.pi_features_extractor = model.policy.features_extractor = view
        nn.init.zeros_(model.policy.action_net.weight)
        nn.init.zeros_(model.policy.action_net.bias)
    elif algo == "sac":
        model = ResidualSAC("MlpPolicy", venv, buffer_size=sac.buffer_size, learning_starts=sac.learning_starts,
                            batch_size=sac.batch_size, learning_rate=sac.lr, gamma=sac.gamma, tau=sac.tau,
                            train_freq=sac.train_freq, gradient_steps=sac.gradient_steps, ent_coef=sac.ent_coef,
                            seed=seed, device=device, verbose=verbose,
                            policy_kwargs=dict(net_arch=dict(pi=list(net.actor), qf=list(net.critic)),
                                               activation_fn=nn.ReLU, log_std_init=sac.log_std_init))
        if privileged:
            model.actor.features_extractor = ActorFeatures(venv.observation_space, privileged).to(model.device)
        nn.init.zeros_(model.actor.mu.weight)
        nn.init.zeros_(model.actor.mu.bias)
    else:
        raise TrainingError(f"unknown algorithm {algo!r}; choose one of: {', '.join(ALGOS)}")
    return model


def learning_rate(lr: float, schedule: str):
    """SB3's learning rate: a constant, or a function of the remaining progress (1 at the start, 0 at the end of
    the run's total steps; SB3 counts a resumed run's steps from the run's start)."""
    if schedule == "constant":
        return float(lr)
    if schedule == "linear":
        return lambda progress_remaining: float(lr) * max(0.0, float(progress_remaining))
    raise TrainingError(f"unknown lr_schedule {schedule!r}; choose constant or linear")


class ResidualSAC(SAC):
    """SB3's SAC, storing the executed residual (`info['alloy_residual']`) as the transition's action."""

    def _store_transition(self, replay_buffer, buffer_action, new_obs, reward, dones, infos) -> None:
        executed = [info.get("alloy_residual") for info in infos]
        if all(e is not None for e in executed):
            buffer_action = np.asarray(executed, dtype=np.float32).reshape(buffer_action.shape)
        super()._store_transition(replay_buffer, buffer_action, new_obs, reward, dones, infos)


# ---------------------------------------------------------------------------------------------------- the actor
def _actor_modules(model) -> tuple[nn.Sequential, nn.Linear, nn.Module | nn.Parameter]:
    if isinstance(model, PPO):
        return model.policy.mlp_extractor.policy_net, model.policy.action_net, model.policy.log_std
    return model.actor.latent_pi, model.actor.mu, model.actor.log_std


def actor_spec(algo: str, net: NetArch, obs_dims: dict[str, int], low, high, scale: float,
               embodiment: str, normalize: bool = False, sde: bool = False) -> ResidualSpec:
    return ResidualSpec(obs_dims=dict(obs_dims), action_dim=len(low), action_low=[float(v) for v in low],
                        action_high=[float(v) for v in high], scale=float(scale), hidden=[int(h) for h in net.actor],
                        activation="tanh" if algo == "ppo" else "relu", squash=algo == "sac", state_std=algo == "sac",
                        sde=bool(sde) and algo == "ppo", algo=algo, embodiment=embodiment, normalize=bool(normalize))


def extract_actor(model, spec: ResidualSpec, obs_scale: dict[str, np.ndarray], obs_rms=None) -> ResidualActor:
    """A `ResidualActor` with the model's current actor weights (a copy, on the CPU); `obs_rms` the running
    observation statistics of SB3's VecNormalize when the run normalises."""
    actor = ResidualActor(spec)
    actor.set_obs_scale(obs_scale)
    width = spec.feature_dim  # the model's observation may end with an asymmetric critic's privileged values: dropped
    if obs_rms is not None:
        actor.obs_mean.copy_(torch.as_tensor(np.asarray(obs_rms.mean, dtype=np.float32)[:width]))
        actor.obs_var.copy_(torch.as_tensor(np.asarray(obs_rms.var, dtype=np.float32)[:width]))
    trunk, mu, log_std = _actor_modules(model)
    first = next(k for k, v in trunk.state_dict().items() if k.endswith("weight"))
    with torch.no_grad():
        actor.trunk.load_state_dict({k: (v[:, :width] if k == first else v).detach().cpu()
                                     for k, v in trunk.state_dict().items()})
        actor.mu.load_state_dict({k: v.detach().cpu() for k, v in mu.state_dict().items()})
        if isinstance(log_std, nn.Parameter):
            actor.log_std.copy_(log_std.detach().cpu())
        else:
            actor.log_std.load_state_dict({k: v.detach().cpu() for k, v in log_std.state_dict().items()})
    return actor.eval()


def actor_parameters(model) -> list[nn.Parameter]:
    """The parameters of the residual actor (frozen while the critic warms up)."""
    trunk, mu, log_std = _actor_modules(model)
    params = list(trunk.parameters()) + list(mu.parameters())
    params += [log_std] if isinstance(log_std, nn.Parameter) else list(log_std.parameters())
    return params


def set_actor_trainable(model, trainable: bool) -> None:
    for p in actor_parameters(model):
        p.requires_grad_(trainable)


# ---------------------------------------------------------------------------------------------------- state
def _optimizers(model) -> dict[str, torch.optim.Optimizer]:
    if isinstance(model, PPO):
        return {"policy": model.policy.optimizer}
    out = {"actor": model.actor.optimizer, "critic": model.critic.optimizer}
    if model.ent_coef_optimizer is not None:
        out["ent_coef"] = model.ent_coef_optimizer
    return out


def model_state(model) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Everything a resumed run needs from the model, as tensors and JSON-able values (no pickling)."""
    tensors = {f"weights.{k}": v.detach().cpu().contiguous().clone() for k, v in model.policy.state_dict().items()}
    meta: dict[str, Any] = {"num_timesteps": int(model.num_timesteps), "n_updates": int(model._n_updates),
                            "optimizers": {}}
    for name, opt in _optimizers(model).items():
        t, m = ckpt.optimizer_state(opt)
        tensors.update({f"opt.{name}.{k}": v for k, v in t.items()})
        meta["optimizers"][name] = m
    if isinstance(model, SAC):
        if model.log_ent_coef is not None:
            tensors["log_ent_coef"] = model.log_ent_coef.detach().cpu().clone()
        rb = model.replay_buffer
        size = rb.buffer_size if rb.full else rb.pos
        for key in ("observations", "next_observations", "actions", "rewards", "dones", "timeouts"):
            tensors[f"replay.{key}"] = torch.from_numpy(np.ascontiguousarray(getattr(rb, key)[:size]))
        meta["replay"] = {"pos": int(rb.pos), "full": bool(rb.full)}
    return tensors, meta


def load_model_state(model, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    policy = {k[len("weights."):]: v for k, v in tensors.items() if k.startswith("weights.")}
    try:
        model.policy.load_state_dict(policy, strict=True)
    except RuntimeError as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        raise TrainingError(f"the saved RL state does not fit this model ({(lines[1:] or lines)[0][:200]}); resume "
                            f"with the same algo/net settings or start a new run") from None
    for name, opt in _optimizers(model).items():
        sub = {k[len(f"opt.{name}."):]: v for k, v in tensors.items() if k.startswith(f"opt.{name}.")}
        ckpt.load_optimizer_state(opt, sub, meta["optimizers"][name])
    model.num_timesteps = int(meta["num_timesteps"])
    model._n_updates = int(meta["n_updates"])
    if isinstance(model, SAC):
        if "log_ent_coef" in tensors and model.log_ent_coef is not None:
            with torch.no_grad():
                model.log_ent_coef.copy_(tensors["log_ent_coef"])
        rb = model.replay_buffer
        for key in ("observations", "next_observations", "actions", "rewards", "dones", "timeouts"):
            saved = tensors[f"replay.{key}"].numpy()
            getattr(rb, key)[: len(saved)] = saved
        rb.pos, rb.full = int(meta["replay"]["pos"]), bool(meta["replay"]["full"])
