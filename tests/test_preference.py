"""Preference losses: hand-computed values, gradient directions, numerics, torch parity."""

import functools

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from swiftjax import preference

# One batch of two pairs used throughout. With beta = 0.1 the DPO log-ratio difference is
# h = (pc - rc) - (pr - rr) = [(-10 + 11) - (-12 + 11), (-12 + 11) - (-11 + 11)] = [2, -1].
PC = np.array([-10.0, -12.0], np.float32)
PR = np.array([-12.0, -11.0], np.float32)
RC = np.array([-11.0, -11.0], np.float32)
RR = np.array([-11.0, -11.0], np.float32)
BETA = 0.1
# Mean log-probabilities for the length-normalised losses.
MC = np.array([-0.5, -1.0], np.float32)
MR = np.array([-1.0, -0.8], np.float32)


def _np_log_odds(x):
  return x - np.log(1.0 - np.exp(x))


class DpoTest(parameterized.TestCase):

  @parameterized.named_parameters(
      # -logsigmoid(0.2) = log(1 + e^-0.2), -logsigmoid(-0.1) = log(1 + e^0.1).
      ("sigmoid", "sigmoid", 0.0, [0.59813887, 0.74439666]),
      # 0.8 * log(1 + e^-0.2) + 0.2 * log(1 + e^0.2), 0.8 * log(1 + e^0.1) + 0.2 * log(1 + e^-0.1).
      ("sigmoid_smoothed", "sigmoid", 0.2, [0.63813887, 0.72439666]),
      # (h - 1 / (2 * 0.1))^2 = (2 - 5)^2, (-1 - 5)^2.
      ("ipo", "ipo", 0.0, [9.0, 36.0]),
      # relu(1 - 0.1 * h).
      ("hinge", "hinge", 0.0, [0.8, 1.1]),
  )
  def test_values(self, loss_type, eps, expected):
    loss, cr, rr = preference.dpo_loss(PC, PR, RC, RR, BETA, loss_type, eps)
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    np.testing.assert_allclose(cr, [0.1, -0.1], rtol=1e-5)
    np.testing.assert_allclose(rr, [-0.1, 0.0], atol=1e-6)

  def test_zero_smoothing_is_plain_sigmoid(self):
    h = PC - RC - (PR - RR)
    loss, _, _ = preference.dpo_loss(PC, PR, RC, RR, BETA, "sigmoid", 0.0)
    np.testing.assert_allclose(loss, -jax.nn.log_sigmoid(BETA * h), rtol=1e-7)

  @parameterized.parameters("sigmoid", "ipo", "hinge")
  def test_gradient_pushes_chosen_up_rejected_down(self, loss_type):
    # Pairs where every variant still has a gradient (h below the IPO target and the hinge).
    pc, pr = jnp.array([-10.0, -12.0]), jnp.array([-11.0, -11.5])
    rc = rr = jnp.array([-11.0, -11.0])

    def total(pc, pr):
      return jnp.sum(preference.dpo_loss(pc, pr, rc, rr, BETA, loss_type)[0])

    g_c, g_r = jax.grad(total, argnums=(0, 1))(pc, pr)
    # Descent moves along -grad: chosen logp up (grad < 0), rejected logp down (grad > 0).
    self.assertTrue(np.all(g_c < 0), g_c)
    self.assertTrue(np.all(g_r > 0), g_r)

  def test_ipo_minimum_at_half_inverse_beta(self):
    beta = 0.25

    def loss_at(h):
      return preference.dpo_loss(h, jnp.zeros(()), jnp.zeros(()), jnp.zeros(()), beta, "ipo")[0]

    target = 1.0 / (2.0 * beta)
    self.assertAlmostEqual(float(loss_at(jnp.float32(target))), 0.0, places=6)
    self.assertAlmostEqual(float(jax.grad(loss_at)(jnp.float32(target))), 0.0, places=6)
    self.assertGreater(float(loss_at(jnp.float32(target - 0.1))), 0.0)
    self.assertGreater(float(loss_at(jnp.float32(target + 0.1))), 0.0)

  def test_rewards_carry_no_gradient(self):
    g = jax.grad(lambda pc: jnp.sum(preference.dpo_loss(pc, PR, RC, RR, BETA)[1]))(jnp.array(PC))
    np.testing.assert_array_equal(g, 0.0)

  def test_unknown_loss_type(self):
    with self.assertRaisesRegex(ValueError, "loss_type"):
      preference.dpo_loss(PC, PR, RC, RR, BETA, "robust")


class ReferenceFreeTest(absltest.TestCase):

  def test_simpo(self):
    # -logsigmoid(2 * (mc - mr) - 0.5): arguments 2 * 0.5 - 0.5 = 0.5 and 2 * -0.2 - 0.5 = -0.9.
    loss, cr, rr = preference.simpo_loss(MC, MR, beta=2.0, gamma=0.5)
    np.testing.assert_allclose(loss, [0.47407698, 1.24115387], rtol=1e-6)
    np.testing.assert_allclose(cr, 2.0 * MC)
    np.testing.assert_allclose(rr, 2.0 * MR)

  def test_cpo(self):
    # Sigmoid DPO without reference on logp differences [2, -1], beta 0.1, plus NLL 0.7.
    loss, _, _ = preference.cpo_loss(PC, PR, BETA, nll_chosen=jnp.float32(0.7))
    np.testing.assert_allclose(loss, [0.59813887 + 0.7, 0.74439666 + 0.7], rtol=1e-6)
    g_c, g_r = jax.grad(lambda c, r: jnp.sum(preference.cpo_loss(c, r, BETA, 0.0)[0]),
                        argnums=(0, 1))(jnp.array(PC), jnp.array(PR))
    self.assertTrue(np.all(g_c < 0) and np.all(g_r > 0))

  def test_orpo_values(self):
    # log odds(-0.5) = 0.43275, log odds(-1) = -0.54132, log odds(-0.8) = -0.23662:
    # ratios 0.97407698 and -0.33794253, or_loss = 0.1 * log(1 + e^-ratio).
    np.testing.assert_allclose(preference.orpo_log_odds_ratio(MC, MR), [0.97407698, -0.33794253],
                               rtol=1e-5)
    loss, nll, or_loss = preference.orpo_loss(MC, MR, lam=0.1)
    np.testing.assert_allclose(or_loss, [0.03202998, 0.08763267], rtol=1e-5)
    np.testing.assert_allclose(nll, [0.5, 1.0])
    np.testing.assert_allclose(loss, nll + or_loss)
    _, nll, _ = preference.orpo_loss(MC, MR, lam=0.1, nll_chosen=jnp.float32(2.0))
    np.testing.assert_allclose(nll, [2.0, 2.0])

  def test_orpo_stable_log_odds_matches_naive(self):
    x = np.array([-1e-3, -0.1, -0.5, -0.69, -0.7, -1.0, -5.0, -20.0], np.float64)
    stable = preference.orpo_log_odds_ratio(jnp.asarray(x, jnp.float32), jnp.full(x.shape, -1.0))
    np.testing.assert_allclose(stable, _np_log_odds(x) - _np_log_odds(-1.0), rtol=2e-4)

  def test_orpo_finite_at_extremes(self):
    x = jnp.array([-1e-8, -80.0], jnp.float32)
    # The naive float32 formula is already -inf/inf at -1e-8: exp(-1e-8) rounds to 1.
    naive = x - jnp.log1p(-jnp.exp(x))
    self.assertFalse(np.isfinite(np.asarray(naive)[0]))
    lo = preference.orpo_log_odds_ratio(x, jnp.full((2,), -1.0))
    self.assertTrue(np.all(np.isfinite(lo)), lo)
    # log odds(-1e-8) = -1e-8 - log(1e-8) ~= 18.42; log odds(-80) ~= -80.
    np.testing.assert_allclose(lo, [18.420681 + 0.541325, -80.0 + 0.541325], rtol=1e-5)

    def f(c):
      return jnp.sum(preference.orpo_loss(c, jnp.full((2,), -1.0), 0.1)[0])

    g = jax.grad(f)(x)
    self.assertTrue(np.all(np.isfinite(g)), g)


class KtoTest(absltest.TestCase):

  def test_values(self):
    # r = [1, -1], z0 = 0.5, beta 0.1: desirable 1 - sigmoid(0.05); undesirable 1.5 *
    # (1 - sigmoid(0.15)).
    loss, rewards = preference.kto_loss(PC, RC, jnp.array([True, False]), jnp.float32(0.5), BETA,
                                        desirable_weight=1.0, undesirable_weight=1.5)
    np.testing.assert_allclose(loss, [0.48750260, 0.69385523], rtol=1e-6)
    np.testing.assert_allclose(rewards, [0.1, -0.1], rtol=1e-5)

  def test_negative_kl_clamped(self):
    des = jnp.array([True, False])
    a, _ = preference.kto_loss(PC, RC, des, jnp.float32(-3.0), BETA)
    b, _ = preference.kto_loss(PC, RC, des, jnp.float32(0.0), BETA)
    np.testing.assert_allclose(a, b)

  def test_reference_point_is_constant(self):
    des = jnp.array([True, False])

    def f(pol, kl):
      return jnp.sum(preference.kto_loss(pol, jnp.array(RC), des, kl, BETA)[0])

    g_pol, g_kl = jax.grad(f, argnums=(0, 1))(jnp.array(PC), jnp.float32(0.5))
    self.assertEqual(float(g_kl), 0.0)
    # Desirable pushed up, undesirable pushed down.
    self.assertLess(float(g_pol[0]), 0.0)
    self.assertGreater(float(g_pol[1]), 0.0)
    z_grad = jax.grad(lambda p: preference.kto_reference_point(p, jnp.zeros(2)))(jnp.ones(2))
    np.testing.assert_array_equal(z_grad, 0.0)
    self.assertEqual(float(preference.kto_reference_point(jnp.array([1.0, -3.0]), jnp.zeros(2))),
                     0.0)
    self.assertEqual(float(preference.kto_reference_point(jnp.array([1.0, 2.0]), jnp.zeros(2))),
                     1.5)


class RewardModelTest(absltest.TestCase):

  def test_bradley_terry(self):
    rc, rr = jnp.array([1.0, -0.5]), jnp.array([0.0, 0.5])
    # log(1 + e^-1), log(1 + e^1).
    np.testing.assert_allclose(preference.reward_model_loss(rc, rr), [0.31326169, 1.31326169],
                               rtol=1e-6)
    # With margins [0.5, 1]: log(1 + e^-0.5), log(1 + e^2).
    np.testing.assert_allclose(preference.reward_model_loss(rc, rr, jnp.array([0.5, 1.0])),
                               [0.47407698, 2.12692801], rtol=1e-6)


class SequenceLogpsTest(absltest.TestCase):

  def test_matches_torch_log_softmax_gather(self):
    import torch  # pylint: disable=g-import-not-at-top
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 7, 11)).astype(np.float32) * 3
    labels = rng.integers(0, 11, size=(3, 7))
    weights = (rng.random((3, 7)) > 0.3).astype(np.float32)
    weights[2] = 0.0  # a row with nothing counted
    labels = np.where(weights > 0, labels, -100)  # HF's ignore index under weight 0
    s, m, n = preference.sequence_logps(jnp.asarray(logits, jnp.bfloat16).astype(jnp.float32),
                                        jnp.asarray(labels), jnp.asarray(weights))
    t_logits = torch.tensor(np.asarray(jnp.asarray(logits, jnp.bfloat16).astype(jnp.float32)))
    t_labels = torch.tensor(np.where(weights > 0, labels, 0))
    tok = torch.gather(torch.log_softmax(t_logits, -1), 2, t_labels[..., None])[..., 0]
    t_w = torch.tensor(weights)
    t_sum = (tok * t_w).sum(-1)
    t_n = t_w.sum(-1)
    np.testing.assert_allclose(s, t_sum.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(n, t_n.numpy())
    np.testing.assert_allclose(m[:2], (t_sum / t_n)[:2].numpy(), rtol=1e-5)
    self.assertEqual(float(s[2]), 0.0)
    self.assertEqual(float(m[2]), 0.0)

  def test_bf16_logits_computed_in_float32(self):
    logits = jnp.asarray(np.random.default_rng(1).normal(size=(2, 5, 7)), jnp.bfloat16)
    labels = jnp.zeros((2, 5), jnp.int32)
    s, m, n = preference.sequence_logps(logits, labels, jnp.ones((2, 5)))
    self.assertEqual(s.dtype, jnp.float32)
    self.assertEqual(m.dtype, jnp.float32)
    ref = jnp.sum(jax.nn.log_softmax(logits.astype(jnp.float32))[..., 0], -1)
    np.testing.assert_allclose(s, ref, rtol=1e-6)
    np.testing.assert_allclose(n, [5.0, 5.0])


class JitTest(parameterized.TestCase):

  @parameterized.parameters("sigmoid", "ipo", "hinge")
  def test_dpo_jits(self, loss_type):
    f = jax.jit(functools.partial(preference.dpo_loss, beta=BETA, loss_type=loss_type,
                                  label_smoothing=0.1))
    eager = preference.dpo_loss(PC, PR, RC, RR, BETA, loss_type, 0.1)
    for a, b in zip(f(PC, PR, RC, RR), eager):
      np.testing.assert_allclose(a, b, rtol=1e-6)

  def test_others_jit(self):
    des = jnp.array([True, False])
    cases = [
        (functools.partial(preference.simpo_loss, beta=2.0, gamma=0.5), (MC, MR)),
        (functools.partial(preference.cpo_loss, beta=BETA, nll_chosen=jnp.float32(0.7)), (PC, PR)),
        (functools.partial(preference.orpo_loss, lam=0.1), (MC, MR)),
        (functools.partial(preference.kto_loss, beta=BETA), (PC, RC, des, jnp.float32(0.5))),
        (preference.reward_model_loss, (MC, MR)),
        (preference.sequence_logps, (jnp.ones((2, 3, 4)), jnp.zeros((2, 3), jnp.int32),
                                     jnp.ones((2, 3)))),
        (preference.kto_reference_point, (PC, RC)),
    ]
    for fn, args in cases:
      jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6),
                   jax.jit(fn)(*args), fn(*args))


if __name__ == "__main__":
  absltest.main()
