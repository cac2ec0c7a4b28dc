"""Preference-training losses on per-sequence log-probabilities.

Every function here is pure `jnp` over small per-sequence arrays (`[B]`), so a trainer computes the
sequence log-probabilities once (`sequence_logps`) and any loss in the DPO family, SimPO, CPO, ORPO,
KTO or a Bradley-Terry reward model is a few elementwise ops on top. All are jittable; string options
(`loss_type`) are Python values, static under `jax.jit`.

Conventions: `*_logps` are sums of token log-probabilities over the response unless a name says
`mean`; returned losses are per example (`[B]`), so the caller chooses the reduction (and can mask
padding rows of a static-shape batch); returned rewards are metrics and carry no gradient.
"""

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

_LOSS_TYPES = ("sigmoid", "ipo", "hinge")
RLHF_TYPES = ("dpo", "orpo", "simpo", "cpo", "kto", "rm")
# Losses that compare the policy with a reference model (the others are reference-free).
NEEDS_REFERENCE = ("dpo", "kto")


def sequence_logps(logits: jax.Array, labels: jax.Array, weights: jax.Array
                   ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Weighted sum and mean of the labelled tokens' log-probabilities, per sequence.

  `sum_logp[b] = sum_t w[b, t] * log_softmax(logits[b, t])[labels[b, t]]`,
  `mean_logp = sum_logp / num_tokens`, `num_tokens[b] = sum_t w[b, t]`.

  Args:
    logits: `[B, T, V]`; `logits[:, t]` predicts `labels[:, t]` (labels are already shifted).
    labels: `[B, T]` int. Entries under weight 0 may hold anything (e.g. -100); they are not read.
    weights: `[B, T]` per-token weights; 0 = not counted.

  Returns:
    `(sum_logp [B], mean_logp [B], num_tokens [B])`, float32. A row with no counted token has
    `sum_logp = mean_logp = 0`.
  """
  # float32 log_softmax: bf16 logits lose the small differences that the DPO log-ratios are made of.
  logp_btv = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  w_bt = weights.astype(jnp.float32)
  # Masked labels can be -100 (the Hugging Face convention); take_along_axis would wrap them around.
  safe_bt = jnp.where(w_bt != 0, labels, 0).astype(jnp.int32)
  tok_bt = jnp.take_along_axis(logp_btv, safe_bt[..., None], axis=-1)[..., 0]
  sum_b = jnp.sum(tok_bt * w_bt, axis=-1)
  num_b = jnp.sum(w_bt, axis=-1)
  mean_b = sum_b / jnp.maximum(num_b, 1e-9)
  return sum_b, mean_b, num_b


def dpo_loss(policy_chosen_logps: jax.Array, policy_rejected_logps: jax.Array,
             ref_chosen_logps: jax.Array, ref_rejected_logps: jax.Array, beta: float,
             loss_type: str = "sigmoid", label_smoothing: float = 0.0
             ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """DPO and its IPO / hinge variants on one preference pair per row.

  With the log-ratio difference
  `h = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)`:

  - `sigmoid` (Rafailov et al. 2023, "Direct Preference Optimization", eq. 7, with conservative-DPO
    label smoothing eps, Mitchell 2023): `-(1 - eps) logsigmoid(beta h) - eps logsigmoid(-beta h)`.
  - `ipo` (Azar et al. 2023, "A General Theoretical Paradigm to Understand Learning from Human
    Preferences", eq. 17): `(h - 1 / (2 beta))^2`. The paper's `h` uses sequence log-probabilities;
    TRL passes length-normalised (mean) log-probabilities for IPO. This function uses whatever it is
    given; pass the `mean_logp` of `sequence_logps` to match TRL.
  - `hinge` (SLiC, Zhao et al. 2023, "SLiC-HF", eq. 1 with delta = 1/beta, as in TRL):
    `relu(1 - beta h)`.

  Args:
    policy_chosen_logps: `[B]` policy log-probabilities of the chosen responses.
    policy_rejected_logps: `[B]` of the rejected responses.
    ref_chosen_logps: `[B]` reference-model log-probabilities of the chosen responses.
    ref_rejected_logps: `[B]` of the rejected responses.
    beta: temperature (the KL penalty weight); > 0.
    loss_type: `sigmoid`, `ipo` or `hinge`.
    label_smoothing: eps in [0, 0.5), the assumed probability that a label is flipped (sigmoid only).

  Returns:
    `(loss [B], chosen_rewards [B], rejected_rewards [B])`; rewards are the implicit
    `beta * (policy - ref)`, without gradient.
  """
  if loss_type not in _LOSS_TYPES:
    raise ValueError(f"loss_type must be one of {_LOSS_TYPES}, got {loss_type!r}")
  chosen_ratio = policy_chosen_logps - ref_chosen_logps
  rejected_ratio = policy_rejected_logps - ref_rejected_logps
  h = chosen_ratio - rejected_ratio
  if loss_type == "sigmoid":
    loss = (-(1.0 - label_smoothing) * jax.nn.log_sigmoid(beta * h)
            - label_smoothing * jax.nn.log_sigmoid(-beta * h))
  elif loss_type == "ipo":
    # The squared loss regresses h onto a finite target, so it cannot overfit to h -> infinity.
    loss = (h - 1.0 / (2.0 * beta)) ** 2
  else:
    loss = jax.nn.relu(1.0 - beta * h)
  chosen_rewards = jax.lax.stop_gradient(beta * chosen_ratio)
  rejected_rewards = jax.lax.stop_gradient(beta * rejected_ratio)
  return loss, chosen_rewards, rejected_rewards


def simpo_loss(chosen_mean_logps: jax.Array, rejected_mean_logps: jax.Array, beta: float,
               gamma: float) -> tuple[jax.Array, jax.Array, jax.Array]:
  """SimPO: reference-free DPO on length-normalised log-probabilities with a target margin.

  `loss = -logsigmoid(beta * (mean_c - mean_r) - gamma)` (Meng et al. 2024, "SimPO: Simple
  Preference Optimization with a Reference-Free Reward", eq. 6). `gamma` is the paper's margin,
  as TRL's and ms-swift's `simpo_gamma` (the paper's code configures `gamma / beta` instead, its
  `gamma_beta_ratio`).

  Args:
    chosen_mean_logps: `[B]` mean token log-probability of the chosen responses.
    rejected_mean_logps: `[B]` of the rejected responses.
    beta: reward scale.
    gamma: target reward margin.

  Returns:
    `(loss [B], chosen_rewards [B], rejected_rewards [B])`, rewards `beta * mean_logp` without
    gradient.
  """
  loss = -jax.nn.log_sigmoid(beta * (chosen_mean_logps - rejected_mean_logps) - gamma)
  return (loss, jax.lax.stop_gradient(beta * chosen_mean_logps),
          jax.lax.stop_gradient(beta * rejected_mean_logps))


def cpo_loss(chosen_logps: jax.Array, rejected_logps: jax.Array, beta: float,
             nll_chosen: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """CPO: DPO's sigmoid loss with the reference dropped, plus NLL on the chosen responses.

  `loss = -logsigmoid(beta * (logp_c - logp_r)) + nll_chosen` (Xu et al. 2024, "Contrastive
  Preference Optimization", eq. 3-4: L_prefer + L_NLL, the policy itself standing in for the
  reference, as a uniform prior).

  Args:
    chosen_logps: `[B]` summed log-probabilities of the chosen responses (as TRL's CPO).
    rejected_logps: `[B]` of the rejected responses.
    beta: temperature.
    nll_chosen: `[]` or `[B]` negative log-likelihood of the chosen responses (TRL uses the
      token-mean cross-entropy over the batch's chosen tokens).

  Returns:
    `(loss [B], chosen_rewards [B], rejected_rewards [B])`, rewards `beta * logp` without gradient.
  """
  prefer = -jax.nn.log_sigmoid(beta * (chosen_logps - rejected_logps))
  loss = prefer + nll_chosen
  return (loss, jax.lax.stop_gradient(beta * chosen_logps),
          jax.lax.stop_gradient(beta * rejected_logps))


def log1mexp(x: jax.Array) -> jax.Array:
  """`log(1 - exp(x))` for `x < 0`, accurate over the whole range.

  Mächler 2012 ("Accurately Computing log(1 - exp(-|a|))"): `log(-expm1(x))` for x > -ln 2, where
  `1 - exp(x)` cancels, and `log1p(-exp(x))` below, where `exp(x)` is small. Each branch gets a safe
  input so the unused one cannot put a NaN into the gradient. `x = 0` gives `-inf`.
  """
  x = jnp.minimum(x, 0.0)
  near_zero = x > -jnp.log(2.0)
  a = jnp.where(near_zero, x, -1.0)
  b = jnp.where(near_zero, -1.0, x)
  return jnp.where(near_zero, jnp.log(-jnp.expm1(a)), jnp.log1p(-jnp.exp(b)))


def orpo_log_odds_ratio(chosen_mean_logps: jax.Array, rejected_mean_logps: jax.Array
                        ) -> jax.Array:
  """`log odds(y_c) - log odds(y_r)` with `odds = p / (1 - p)`, `p = exp(mean_logp)`.

  `log odds = x - log(1 - exp(x))` for `x = mean_logp < 0`, evaluated with `log1mexp` so it stays
  finite as `x -> 0` (p -> 1, where `log1p(-exp(x))` is `-inf` in float32) and as `x -> -inf`.

  Args:
    chosen_mean_logps: `[B]`, < 0.
    rejected_mean_logps: `[B]`, < 0.

  Returns:
    `[B]` log odds ratio.
  """
  # Exactly 0 (every token certain) would be an infinite odds; keep it just below.
  tiny = jnp.finfo(jnp.float32).tiny
  xc = jnp.minimum(chosen_mean_logps, -tiny)
  xr = jnp.minimum(rejected_mean_logps, -tiny)
  return (xc - log1mexp(xc)) - (xr - log1mexp(xr))


def orpo_loss(chosen_mean_logps: jax.Array, rejected_mean_logps: jax.Array, lam: float,
              nll_chosen: jax.Array | None = None
              ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """ORPO: SFT on the chosen responses plus an odds-ratio preference term.

  `L = L_SFT + lam * L_OR`, `L_OR = -logsigmoid(log odds(y_c) - log odds(y_r))`,
  `odds(y) = p / (1 - p)`, `p = exp(mean token logp)` (Hong et al. 2024, "ORPO: Monolithic
  Preference Optimization without Reference Model", eq. 4-7). TRL's `beta` is `lam`.

  Args:
    chosen_mean_logps: `[B]` mean token log-probability of the chosen responses.
    rejected_mean_logps: `[B]` of the rejected responses.
    lam: weight of the odds-ratio term.
    nll_chosen: `[]` or `[B]` L_SFT. Default `-chosen_mean_logps`, the paper's per-example
      length-normalised NLL; TRL uses the token-mean cross-entropy over the batch instead.

  Returns:
    `(loss [B], nll [B], or_loss [B])` with `loss = nll + or_loss`; `or_loss` already includes
    `lam`.
  """
  if nll_chosen is None:
    nll_chosen = -chosen_mean_logps
  log_odds = orpo_log_odds_ratio(chosen_mean_logps, rejected_mean_logps)
  or_loss = -lam * jax.nn.log_sigmoid(log_odds)
  nll = jnp.broadcast_to(nll_chosen, or_loss.shape)
  return nll + or_loss, nll, or_loss


def kto_reference_point(policy_kl_logps: jax.Array, ref_kl_logps: jax.Array) -> jax.Array:
  """KTO's reference point `z0 = max(0, mean(policy - ref))`, without gradient.

  Estimated, as in the paper (section 4.1) and TRL, on mismatched (prompt, completion) pairs of the
  batch, so it is a biased but cheap estimate of `KL(policy || ref)`. Under data parallelism the mean
  should be over the global batch (a `jnp.mean` over a sharded array is).

  Args:
    policy_kl_logps: `[B]` policy log-probabilities of the mismatched completions.
    ref_kl_logps: `[B]` reference log-probabilities of the same.

  Returns:
    `[]` z0.
  """
  return jax.lax.stop_gradient(jnp.maximum(jnp.mean(policy_kl_logps - ref_kl_logps), 0.0))


def kto_loss(policy_logps: jax.Array, ref_logps: jax.Array, desirable: jax.Array,
             kl: jax.Array, beta: float, desirable_weight: float = 1.0,
             undesirable_weight: float = 1.0) -> tuple[jax.Array, jax.Array]:
  """KTO: prospect-theoretic loss on unpaired desirable / undesirable examples.

  With `r = policy_logps - ref_logps` and `z0 = max(kl, 0)` held constant (Ethayarajh et al. 2024,
  "KTO: Model Alignment as Prospect Theoretic Optimization", eq. 8; the paper does not
  backpropagate through z0):

  - desirable: `w_d * (1 - sigmoid(beta * (r - z0)))`
  - undesirable: `w_u * (1 - sigmoid(beta * (z0 - r)))`

  Args:
    policy_logps: `[B]` summed policy log-probabilities of the completions.
    ref_logps: `[B]` reference log-probabilities of the same.
    desirable: `[B]` bool, True for a desirable example.
    kl: `[]` reference point z0 (see `kto_reference_point`).
    beta: temperature.
    desirable_weight: lambda_D.
    undesirable_weight: lambda_U (the paper balances so lambda_D n_D / (lambda_U n_U) is in [1, 4/3]).

  Returns:
    `(loss [B], rewards [B])`, rewards `beta * r` without gradient.
  """
  z0 = jax.lax.stop_gradient(jnp.maximum(kl, 0.0))
  r = policy_logps - ref_logps
  loss = jnp.where(desirable,
                   desirable_weight * (1.0 - jax.nn.sigmoid(beta * (r - z0))),
                   undesirable_weight * (1.0 - jax.nn.sigmoid(beta * (z0 - r))))
  return loss, jax.lax.stop_gradient(beta * r)


def reward_model_loss(chosen_rewards: jax.Array, rejected_rewards: jax.Array,
                      margin: jax.Array | None = None) -> jax.Array:
  """Bradley-Terry pairwise loss of a scalar reward model.

  `loss = -logsigmoid(r_c - r_r - margin)` (Ouyang et al. 2022, InstructGPT eq. 1; the margin is
  Llama 2's, Touvron et al. 2023, eq. 2, larger for pairs rated more distinct).

  Args:
    chosen_rewards: `[B]` reward-model scores of the chosen responses.
    rejected_rewards: `[B]` of the rejected responses.
    margin: optional `[]` or `[B]` margin.

  Returns:
    `[B]` loss.
  """
  diff = chosen_rewards - rejected_rewards
  if margin is not None:
    diff = diff - margin
  return -jax.nn.log_sigmoid(diff)


@dataclasses.dataclass(frozen=True)
class PreferenceConfig:
  """Which preference loss and its hyper-parameters, named as ms-swift / TRL name them.

  Attributes:
    rlhf_type: `dpo`, `orpo`, `simpo`, `cpo`, `kto` or `rm` (Bradley-Terry reward model).
    beta: DPO / KTO / CPO temperature, SimPO's reward scale, ORPO's lambda; `None` picks
      ms-swift's default (2.0 for SimPO, 0.1 otherwise). Unused by `rm`.
    loss_type: the DPO variant, `sigmoid`, `ipo` or `hinge`.
    label_smoothing: conservative-DPO eps (DPO sigmoid only).
    simpo_gamma: SimPO's target reward margin (the paper's gamma).
    cpo_alpha: weight of CPO's NLL term on the chosen answers.
    desirable_weight: KTO's lambda_D.
    undesirable_weight: KTO's lambda_U.
  """
  rlhf_type: str = "dpo"
  beta: float | None = None
  loss_type: str = "sigmoid"
  label_smoothing: float = 0.0
  simpo_gamma: float = 1.0
  cpo_alpha: float = 1.0
  desirable_weight: float = 1.0
  undesirable_weight: float = 1.0

  def __post_init__(self):
    if self.rlhf_type not in RLHF_TYPES:
      raise ValueError(f"rlhf_type {self.rlhf_type!r} is not one of {', '.join(RLHF_TYPES)}")
    if self.loss_type not in _LOSS_TYPES:
      raise ValueError(f"loss_type {self.loss_type!r} is not one of {', '.join(_LOSS_TYPES)}")
    if self.beta is None:
      object.__setattr__(self, "beta", 2.0 if self.rlhf_type == "simpo" else 0.1)
    if self.beta <= 0:
      raise ValueError(f"beta must be > 0, got {self.beta}")
    if not 0 <= self.label_smoothing < 0.5:
      raise ValueError(f"label_smoothing must be in [0, 0.5), got {self.label_smoothing}")

  @property
  def needs_reference(self) -> bool:
    return self.rlhf_type in NEEDS_REFERENCE


class SequenceLogps(NamedTuple):
  """Per-sequence log-probabilities, as `sequence_logps` returns them; each `[B]` float32."""
  sum: jax.Array
  mean: jax.Array
  num: jax.Array


def pair_loss(cfg: PreferenceConfig, chosen: SequenceLogps, rejected: SequenceLogps,
              ref_chosen: SequenceLogps | None = None,
              ref_rejected: SequenceLogps | None = None
              ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The loss `cfg.rlhf_type` names, for one chosen/rejected pair per row.

  Which log-probabilities each loss reads follows TRL: summed ones for DPO sigmoid/hinge and
  CPO, length-normalised ones for IPO, SimPO and ORPO. ORPO's and CPO's NLL term is the
  token-mean cross-entropy over the batch's chosen tokens (broadcast to every row, so the
  batch mean of the loss is NLL + mean preference term).

  Args:
    cfg: the loss and its hyper-parameters (not `kto` or `rm`: see `kto_batch_loss`,
      `reward_model_loss`).
    chosen: policy log-probabilities of the chosen answers, `[B]` each.
    rejected: of the rejected answers.
    ref_chosen: reference-model log-probabilities of the chosen answers (DPO only).
    ref_rejected: of the rejected answers (DPO only).

  Returns:
    `(loss [B], chosen_rewards [B], rejected_rewards [B])`, rewards without gradient.
  """
  kind = cfg.rlhf_type
  if kind == "dpo":
    if ref_chosen is None or ref_rejected is None:
      raise ValueError("DPO needs the reference model's log-probabilities")
    field = "mean" if cfg.loss_type == "ipo" else "sum"
    return dpo_loss(getattr(chosen, field), getattr(rejected, field),
                    getattr(ref_chosen, field), getattr(ref_rejected, field), cfg.beta,
                    cfg.loss_type, cfg.label_smoothing)
  if kind == "simpo":
    return simpo_loss(chosen.mean, rejected.mean, cfg.beta, cfg.simpo_gamma)
  nll = -jnp.sum(chosen.sum) / jnp.maximum(jnp.sum(chosen.num), 1e-9)
  if kind == "cpo":
    return cpo_loss(chosen.sum, rejected.sum, cfg.beta, cfg.cpo_alpha * nll)
  if kind == "orpo":
    loss, _, _ = orpo_loss(chosen.mean, rejected.mean, cfg.beta, nll)
    return (loss, jax.lax.stop_gradient(cfg.beta * chosen.mean),
            jax.lax.stop_gradient(cfg.beta * rejected.mean))
  raise ValueError(f"pair_loss does not compute {kind!r}")


def kto_batch_loss(cfg: PreferenceConfig, policy: jax.Array, ref: jax.Array,
                   policy_kl: jax.Array, ref_kl: jax.Array, desirable: jax.Array
                   ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """KTO over a batch: the reference point from the mismatched completions, then `kto_loss`.

  Args:
    cfg: with `rlhf_type="kto"`.
    policy: `[B]` summed policy log-probabilities of the labelled completions.
    ref: `[B]` reference log-probabilities of the same.
    policy_kl: `[B]` policy log-probabilities of mismatched (prompt, completion) pairs.
    ref_kl: `[B]` reference log-probabilities of the same.
    desirable: `[B]` bool labels.

  Returns:
    `(loss [B], rewards [B], kl [])`.
  """
  kl = kto_reference_point(policy_kl, ref_kl)
  loss, rewards = kto_loss(policy, ref, desirable, kl, cfg.beta, cfg.desirable_weight,
                           cfg.undesirable_weight)
  return loss, rewards, kl


def reward_metrics(chosen_rewards: jax.Array, rejected_rewards: jax.Array) -> dict:
  """Batch means of the rewards, their margin, and how often the chosen one is higher.

  Args:
    chosen_rewards: `[B]`.
    rejected_rewards: `[B]`.

  Returns:
    `{"rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"}`, each `[]`.
  """
  return {"rewards/chosen": jnp.mean(chosen_rewards),
          "rewards/rejected": jnp.mean(rejected_rewards),
          "rewards/margins": jnp.mean(chosen_rewards - rejected_rewards),
          "rewards/accuracies": jnp.mean((chosen_rewards > rejected_rewards).astype(jnp.float32))}
