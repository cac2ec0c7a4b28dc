"""Sharded training: on a mesh of 8 fake CPU devices, and as 2 processes (jax.distributed over
localhost, gloo CPU collectives), the trainer gives the single-device run's losses.

Tolerance: fp32, rtol 1e-5 on every step's loss (sharded contractions sum in another order;
measured differences are ~2e-7 relative). The trained adapters agree to atol 2e-5 (lr / 250):
Adam divides by the gradient's running RMS, so an entry whose gradient is nearly zero moves
by up to a step of ~lr on rounding noise alone (measured: 3e-6 on one of 384 entries).
"""

import dataclasses
import json
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile

from absl.testing import absltest
import jax
import numpy as np
from jax.sharding import PartitionSpec as P

from swiftjax import errors
from swiftjax import infer
from swiftjax import rlhf
from swiftjax import sharding
from swiftjax import trainer
from tests import testutil

_QA = [("the cat", "sat on the mat"), ("the dog", "ate the bone"),
       ("a bird", "can sing a song"), ("what is the capital", "paris is the capital")]
_PAIRS = [("the cat", "sat on the mat", "ate the bone"),
          ("the dog", "ate the bone", "can sing a song"),
          ("a bird", "can sing a song", "sat on the mat"),
          ("what is the capital", "paris is the capital", "the cat sat")]
# 16 rows, batch 8: 2 steps an epoch, so 4 steps cross an epoch boundary.
_SETTINGS = dict(lora_rank=4, learning_rate=5e-3, max_length=32, batch_size=8, max_steps=4,
                 warmup_ratio=0.0, packing=False)
_RTOL = 1e-5


def _assert_adapters_close(got: dict, want: dict) -> None:
  assert sorted(got) == sorted(want), (sorted(got), sorted(want))
  for k in want:
    np.testing.assert_allclose(got[k], want[k], rtol=1e-3, atol=2e-5, err_msg=k)


def _losses(summary: dict) -> list[float]:
  return [e["loss"] for e in summary["log"]]


def _adapters(run: pathlib.Path) -> dict[str, np.ndarray]:
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  return load_file(str(run / "adapter" / "adapter_model.safetensors"))


def _free_port() -> int:
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


class TrainerShardingTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    if jax.device_count() < 8:
      raise absltest.SkipTest("needs 8 devices (tests/conftest.py sets 8 fake CPU devices)")
    cls.tmp = pathlib.Path(tempfile.mkdtemp(prefix="trainer_sharding_"))
    cls.model = str(cls.tmp / "model")
    testutil.save_tiny_llama(cls.model)
    testutil.save_tiny_tokenizer(cls.model)
    cls.data = cls.tmp / "data.jsonl"
    cls.data.write_text("".join(json.dumps({"query": q, "response": r}) + "\n"
                                for q, r in _QA * 4))
    cls.pairs = cls.tmp / "pairs.jsonl"
    cls.pairs.write_text("".join(json.dumps({
        "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": c}],
        "rejected_response": r}) + "\n" for q, c, r in _PAIRS * 4))
    cls.lora_cfg = trainer.TrainConfig(model=cls.model, dataset=[str(cls.data)], tuner="lora",
                                       **_SETTINGS)
    cls.lora_run = cls.tmp / "lora_unsharded"
    cls.lora_base = trainer.train(cls.lora_cfg, cls.lora_run)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp, ignore_errors=True)
    super().tearDownClass()

  def _run(self, name: str) -> pathlib.Path:
    return pathlib.Path(self.create_tempdir(name).full_path)

  def test_lora_losses_match_unsharded_on_meshes(self):
    for shape in ((1, 8, 1), (2, 2, 2)):
      with self.subTest(mesh=shape):
        run = self._run("lora_" + "x".join(map(str, shape)))
        summary = trainer.train(self.lora_cfg, run, mesh=sharding.make_mesh(*shape))
        np.testing.assert_allclose(_losses(summary), _losses(self.lora_base), rtol=_RTOL)
        _assert_adapters_close(_adapters(run), _adapters(self.lora_run))

  def test_full_fine_tuning_matches_unsharded(self):
    cfg = trainer.TrainConfig(model=self.model, dataset=[str(self.data)], tuner="full",
                              **_SETTINGS)
    base = trainer.train(cfg, self._run("full_unsharded"))
    sharded = trainer.train(cfg, self._run("full_2x2x2"), mesh=sharding.make_mesh(2, 2, 2))
    np.testing.assert_allclose(_losses(sharded), _losses(base), rtol=_RTOL)
    self.assertLess(base["final_loss"], base["first_loss"])  # it trains at all

  def test_dpo_matches_unsharded(self):
    cfg = rlhf.RlhfConfig(model=self.model, dataset=[str(self.pairs)], tuner="lora",
                          rlhf_type="dpo", **_SETTINGS)
    base = rlhf.train_preference(cfg, self._run("dpo_unsharded"))
    sharded = rlhf.train_preference(cfg, self._run("dpo_1x4x2"),
                                    mesh=sharding.make_mesh(1, 4, 2))
    np.testing.assert_allclose(_losses(sharded), _losses(base), rtol=_RTOL)
    for key in ("rewards/margins", "logps/chosen"):
      np.testing.assert_allclose([e[key] for e in sharded["log"]],
                                 [e[key] for e in base["log"]], rtol=1e-4, atol=1e-6)

  def test_state_is_laid_out_by_logical_axes(self):
    mesh = sharding.make_mesh(2, 2, 2)
    job = trainer.sft_job(self.lora_cfg, infer.load(self.model, mesh=mesh))
    optimizer, _ = trainer.make_optimizer(self.lora_cfg, 4)
    trainable, const, opt_state, step_fn, place_batch = trainer.place_state(job, optimizer,
                                                                            mesh)
    q_kernel = const["layers"]["self_attn"]["q_proj"]["kernel"]   # [L, embed, heads]
    self.assertEqual(q_kernel.sharding.spec, P(None, "fsdp", "tensor"))
    q_lora = trainable["layers"]["self_attn"]["q_proj"]
    self.assertEqual(q_lora["lora_a"].sharding.spec, P(None, "fsdp", None))   # [L, in, r]
    self.assertEqual(q_lora["lora_b"].sharding.spec, P(None, None, "tensor"))  # [L, r, out]
    # Adam's moments are laid out like the adapters they follow.
    adam = opt_state[1][0]
    self.assertEqual(adam.mu["layers"]["self_attn"]["q_proj"]["lora_a"].sharding,
                     q_lora["lora_a"].sharding)
    self.assertEqual(adam.nu["layers"]["self_attn"]["q_proj"]["lora_b"].sharding,
                     q_lora["lora_b"].sharding)
    batch = place_batch(job.get_batch(np.arange(8)))
    self.assertEqual(batch["tokens"].sharding.spec, P(("data", "fsdp"), None))
    self.assertLen(batch["tokens"].addressable_shards[0].data, 2)  # 8 rows over 4 ways
    trainable, opt_state, metrics = step_fn(trainable, opt_state, batch, const)
    self.assertEqual(trainable["layers"]["self_attn"]["q_proj"]["lora_a"].sharding.spec,
                     P(None, "fsdp", None))
    self.assertTrue(metrics["loss"].sharding.is_fully_replicated)

  def test_resume_on_another_mesh_continues_the_run(self):
    cfg = trainer.TrainConfig(model=self.model, dataset=[str(self.data)], tuner="lora",
                              save_steps=2, **_SETTINGS)
    run = self._run("resume")
    trainer.train(cfg, run, stop_at_step=2, mesh=sharding.make_mesh(2, 2, 2))
    resumed = trainer.train(cfg, run, resume=True, mesh=sharding.make_mesh(1, 8, 1))
    self.assertEqual(resumed["resumed_from"], 2)
    np.testing.assert_allclose(_losses(resumed), _losses(self.lora_base)[2:], rtol=_RTOL)

  def test_batch_that_does_not_fit_the_mesh_or_the_rows_is_refused(self):
    cfg = trainer.TrainConfig(model=self.model, dataset=[str(self.data)], tuner="lora",
                              **dict(_SETTINGS, batch_size=6))
    with self.assertRaisesRegex(errors.ConfigError,
                                r"batch_size=6 \(the global batch\) is not divisible by the "
                                r"mesh's data x fsdp = 2 x 2"):
      trainer.train(cfg, self._run("bad_batch"), mesh=sharding.make_mesh(2, 2, 2))
    # 16 rows; a global batch of 32 is 8 per device over data x fsdp = 4.
    cfg = dataclasses.replace(cfg, batch_size=32)
    with self.assertRaisesRegex(errors.ConfigError,
                                r"16 rows are fewer than batch_size=32 \(the global batch: 8 "
                                r"per device x data x fsdp = 4\)"):
      trainer.train(cfg, self._run("big_batch"), mesh=sharding.make_mesh(2, 2, 2))

  def test_two_processes_match_the_single_process_run(self):
    run = self._run("two_processes")
    port = _free_port()
    # Each process has 2 CPU devices; the 1x2x2 mesh puts fsdp across the processes (params and
    # optimizer state split between them) and tensor within each. 4 rows per device x data x
    # fsdp (1 x 2) is the single-process run's global batch of 8.
    env = dict(testutil.subprocess_env(), JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=2")
    args = [f"--model={self.model}", f"--dataset={self.data}", "--tuner_type=lora",
            "--lora_rank=4", "--learning_rate=5e-3", "--max_length=32",
            "--per_device_train_batch_size=4",
            "--max_steps=4", "--warmup_ratio=0", "--packing=false", "--save_steps=2",
            f"--output_dir={run}", "--mesh_data=1", "--mesh_fsdp=2", "--mesh_tensor=2",
            "--distributed", f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2"]
    procs = [subprocess.Popen([sys.executable, "-m", "launch.sft", *args, f"--process_id={i}"],
                              cwd=testutil.REPO_ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = []
    try:
      for proc in procs:
        outs.append(proc.communicate(timeout=400))
    finally:
      for proc in procs:
        if proc.poll() is None:
          proc.kill()
          proc.communicate()
    for i, (proc, (_, err)) in enumerate(zip(procs, outs)):
      self.assertEqual(proc.returncode, 0, f"process {i}:\n{err[-4000:]}")
    printed = [json.loads(out[out.index("{"):]) for out, _ in outs]
    self.assertIsNone(printed[1]["output"])  # only process 0 writes the adapters
    summary = json.loads((run / "summary.json").read_text())
    np.testing.assert_allclose(_losses(summary), _losses(self.lora_base), rtol=_RTOL)
    self.assertEqual(printed[1]["final_loss"], summary["final_loss"])
    _assert_adapters_close(_adapters(run), _adapters(self.lora_run))
    self.assertLen(list((run / "tensorboard").glob("events.out.tfevents.*")), 1)
    self.assertEqual(sorted(int(p.name) for p in (run / "checkpoints").iterdir()
                            if p.name.isdigit()), [2, 4])


if __name__ == "__main__":
  absltest.main()
