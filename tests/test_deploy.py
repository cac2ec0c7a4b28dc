"""swiftjax.serve and launch.deploy: continuous batching against one-request generation (a tiny
random Mistral with a sliding window, so the cache shifts are checked where they could go
wrong), and the OpenAI API served from the real SmolLM2, driven by the real `openai` client."""

import concurrent.futures
import dataclasses
import http.client
import json
import pathlib
import tempfile
import threading
import time
from unittest import mock

from absl.testing import absltest
import jax
import numpy as np
import openai
import pytest

from swiftjax import generate as gen
from swiftjax import infer
from swiftjax import tokenizer as tok_lib
from swiftjax.models import decoder
from swiftjax.serve import engine as engine_lib
from swiftjax.serve import openai_api
from tests import testutil

_TMP = None
_TINY = {}


def setUpModule():
  global _TMP
  _TMP = tempfile.TemporaryDirectory()


def tearDownModule():
  _TMP.cleanup()


def tiny_model():
  """A tiny random Mistral (sliding window 8) with a tiny tokenizer, saved and loaded once."""
  if "model" not in _TINY:
    path = pathlib.Path(_TMP.name) / "tiny"
    testutil.save_tiny_model(path, "mistral")
    testutil.save_tiny_tokenizer(path)
    _TINY["path"], _TINY["model"] = path, infer.load(path)
  return _TINY["model"]


# Three slots over a short cache, so rows join mid-way and the cache shifts.
_BATCHING_CONFIG = dict(num_slots=3, max_seq_len=160, min_cache_len=16)


def _greedy(max_tokens):
  return engine_lib.SamplingParams(max_tokens=max_tokens, temperature=0.0)


class EngineTest(absltest.TestCase):

  def test_continuous_batching_matches_one_request_at_a_time(self):
    self._check_continuous_batching(tiny_model())

  def test_continuous_batching_with_unstacked_layers_and_a_per_layer_cache(self):
    model = tiny_model()
    flat = dataclasses.replace(model, params=decoder.unstack_layers(model.params))
    self.assertTrue(decoder.cache_uses_layers(flat.params))
    self._check_continuous_batching(flat)

  def test_prompts_prefilled_inside_decode_steps_match_one_request_at_a_time(self):
    # Prompts of <= 24 tokens (5, 12, 3, 20, 9) ride in the decode steps, two at a time when
    # they fit; 37 and 70 tokens are prefilled alone, between them in arrival order.
    for model in (tiny_model(), dataclasses.replace(
        tiny_model(), params=decoder.unstack_layers(tiny_model().params))):
      stats = self._check_continuous_batching(model, mixed_prefill_tokens=24)
      self.assertEqual((stats["prefills"], stats["packed_prefills"]), (7, 5))

  def test_packed_block_is_no_wider_than_a_request(self):
    model = tiny_model()
    eng = engine_lib.Engine(model, engine_lib.EngineConfig(
        num_slots=2, max_seq_len=16, min_cache_len=16, mixed_prefill_tokens=64)).start()
    try:
      got = eng.generate([5, 6, 7, 8, 9], _greedy(8))
      stats = eng.stats()
    finally:
      eng.stop()
    want = gen.generate(model.params, model.cfg, [[5, 6, 7, 8, 9]],
                        gen.SamplingConfig(max_new_tokens=8), eos_ids=model.eos_ids)[0]
    self.assertEqual(got.output_ids, want)
    self.assertEqual(stats["packed_prefills"], 1)
    self.assertLessEqual(stats["cache_len"], 32)  # 2 x max_seq_len at most

  def test_a_failed_step_fails_its_packed_prompts_and_serving_goes_on(self):
    eng = engine_lib.Engine(tiny_model(), engine_lib.EngineConfig(num_slots=2,
                                                                  mixed_prefill_tokens=24))
    eng.start()
    try:
      with mock.patch.object(engine_lib, "_decode_prefill",
                             side_effect=RuntimeError("device lost")):
        request = eng.submit([5, 6, 7], _greedy(4))
        with self.assertRaisesRegex(engine_lib.ServeError, "device lost") as cm:
          request.text()
      self.assertEqual(cm.exception.status, 500)
      # A prompt too long to pack is prefilled alone; its failure fails it too.
      with mock.patch.object(engine_lib, "_prefill", side_effect=RuntimeError("out of memory")):
        request = eng.submit(list(range(3, 40)), _greedy(4))
        with self.assertRaisesRegex(engine_lib.ServeError, "out of memory"):
          request.text()
      self.assertLen(eng.generate([5, 6, 7], _greedy(3)).output_ids, 3)
    finally:
      eng.stop()
    with self.assertRaisesRegex(ValueError, "max_len >= 1"):
      engine_lib.Engine(tiny_model(), engine_lib.EngineConfig()).precompile(0)

  def test_precompile_covers_what_serving_runs(self):
    model = tiny_model()
    config = _BATCHING_CONFIG | dict(max_seq_len=100, mixed_prefill_tokens=24)
    eng = engine_lib.Engine(model, engine_lib.EngineConfig(**config))
    self.assertGreater(eng.precompile(1000), 10)
    jitted = [engine_lib._prefill, engine_lib._insert, engine_lib._decode,  # pylint: disable=W0212
              engine_lib._decode_prefill, engine_lib._insert_packed,  # pylint: disable=W0212
              engine_lib._relayout]  # pylint: disable=W0212
    compiled = [f._cache_size() for f in jitted]  # pylint: disable=W0212
    eng.start()
    try:
      with self.assertRaisesRegex(RuntimeError, "before start"):
        eng.precompile(100)
    finally:
      eng.stop()
    stats = self._check_continuous_batching(model, max_seq_len=100, mixed_prefill_tokens=24)
    self.assertGreater(stats["relayouts"], 0)
    # Serving (prompts up to 70 tokens, rows up to 95) compiled nothing new.
    self.assertEqual([f._cache_size() for f in jitted], compiled)  # pylint: disable=W0212

  def _check_continuous_batching(self, model, **config):
    rng = np.random.default_rng(0)
    # Prompt lengths across buckets (16, 32, 64, 96) and outputs long enough to fill the cache,
    # so rows join mid-way, leave at different steps and the cache gets shifted.
    jobs = [(rng.integers(3, 128, size=n).tolist(), k)
            for n, k in [(5, 40), (37, 9), (12, 70), (70, 25), (3, 33), (20, 60), (9, 3)]]
    eng = engine_lib.Engine(model, engine_lib.EngineConfig(**(_BATCHING_CONFIG | config)))
    eng.start()
    try:
      requests = [eng.submit(ids, _greedy(k)) for ids, k in jobs]
      for r in requests:
        r.text()
      stats = eng.stats()
    finally:
      eng.stop()
    self.assertGreater(stats["relayouts"], 0)
    # Every prompt bucket compiled a prefill, and decode / insert / relayout shapes come on top.
    if not config:
      buckets = {engine_lib.prompt_bucket(len(ids)) for ids, _ in jobs}
      self.assertGreater(stats["compiled_shapes"], len(buckets))
    self.assertLess(stats["steps"], sum(k for _, k in jobs))  # rows did share steps
    for (ids, k), r in zip(jobs, requests):
      want = gen.generate(model.params, model.cfg, [ids], gen.SamplingConfig(max_new_tokens=k),
                          eos_ids=model.eos_ids)[0]
      self.assertEqual(r.output_ids, want)
      self.assertEqual(r.finish_reason, "length" if len(want) == k else "stop")
    return stats

  def test_bfloat16_kv_cache(self):
    model = tiny_model()
    rng = np.random.default_rng(3)
    jobs = [rng.integers(3, 128, size=n).tolist() for n in (5, 37, 12, 70)]
    outputs = {}
    for dtype in (None, "bfloat16"):
      eng = engine_lib.Engine(model, engine_lib.EngineConfig(
          num_slots=2, max_seq_len=160, min_cache_len=16, kv_cache_dtype=dtype)).start()
      try:
        requests = [eng.submit(ids, _greedy(20)) for ids in jobs]
        outputs[dtype] = [(r.text(), r.output_ids)[1] for r in requests]
        stored = eng.cache["k"].dtype
      finally:
        eng.stop()
      self.assertEqual(stored, jax.numpy.bfloat16 if dtype else model.params[
          "embed_tokens"]["embedding"].dtype)
    # Only the stored keys and values are rounded: greedy tokens mostly agree (exact agreement
    # would pin rounding, not behaviour).
    pairs = [(a, b) for x, y in zip(outputs[None], outputs["bfloat16"]) for a, b in zip(x, y)]
    self.assertGreater(len(pairs), 40)
    self.assertGreaterEqual(np.mean([a == b for a, b in pairs]), 0.8)
    with self.assertRaisesRegex(Exception, "kv_cache_dtype must be"):
      engine_lib.EngineConfig(kv_cache_dtype="int8")

  def test_seeded_sampling_does_not_depend_on_the_other_rows(self):
    model = tiny_model()
    params = engine_lib.SamplingParams(max_tokens=12, temperature=0.9, top_p=0.8, top_k=20,
                                       repetition_penalty=1.3, seed=7)
    prompt = [5, 6, 7, 8, 9]
    eng = engine_lib.Engine(model, engine_lib.EngineConfig(num_slots=4)).start()
    try:
      alone = eng.generate(prompt, params).output_ids
      others = [eng.submit([9, 9, 3], dataclasses.replace(params, seed=s)) for s in range(3)]
      shared = eng.submit(prompt, params)
      shared.text()
      other_ids = [o.text() and o.output_ids for o in others]
    finally:
      eng.stop()
    self.assertEqual(shared.output_ids, alone)
    self.assertLen(alone, 12)
    self.assertGreater(len({tuple(o) for o in other_ids}), 1)  # seeds do change the sample

  def test_sample_rows_follows_generate_rules(self):
    logits = jax.random.normal(jax.random.key(0), (3, 50)) * 3
    seen = np.zeros((3, 50), bool)
    seen[:, :10] = True
    rows = dict(temperature=np.array([0.0, 0.0, 0.0], np.float32),
                top_p=np.ones(3, np.float32), top_k=np.zeros(3, np.int32),
                penalty=np.array([1.0, 1.5, 3.0], np.float32),
                seeds=np.zeros(3, np.uint32), counters=np.zeros(3, np.int32))
    got, _ = engine_lib.sample_rows(logits, seen.copy(), **rows, greedy_only=True,
                                    filtered=False, penalized=True)
    for b, p in enumerate([1.0, 1.5, 3.0]):
      want = gen.sample_logits(logits[b:b + 1], jax.random.key(0), seen[b:b + 1],
                               gen.SamplingConfig(repetition_penalty=p))
      self.assertEqual(int(got[b]), int(want[0]))
    # top_k=1 and a tiny top_p both leave only the arg-max to sample.
    rows.update(temperature=np.full(3, 1.5, np.float32), top_k=np.array([1, 0, 0], np.int32),
                top_p=np.array([1.0, 1e-6, 1.0], np.float32), seeds=np.arange(3, dtype=np.uint32))
    got, _ = engine_lib.sample_rows(logits, seen.copy(), **rows, greedy_only=False,
                                    filtered=True, penalized=False)
    top = np.asarray(logits).argmax(-1)
    self.assertEqual(got[:2].tolist(), top[:2].tolist())

  def test_admission_limits(self):
    model = tiny_model()
    eng = engine_lib.Engine(model, engine_lib.EngineConfig(num_slots=1, max_queue=2,
                                                           max_seq_len=64))
    eng.submit([5, 6], _greedy(4))
    eng.submit([5, 6], _greedy(4))
    with self.assertRaises(engine_lib.ServeError) as cm:  # not started: nothing drains
      eng.submit([5, 6], _greedy(4))
    self.assertEqual(cm.exception.status, 429)
    with self.assertRaisesRegex(engine_lib.ServeError, "maximum context length is 64") as cm:
      eng.submit(list(range(3, 40)), _greedy(30))
    self.assertEqual(cm.exception.status, 400)
    with self.assertRaisesRegex(engine_lib.ServeError, "top_p"):
      eng.submit([5], engine_lib.SamplingParams(top_p=0.0))
    eng.stop()

  def test_expired_request_gets_504(self):
    eng = engine_lib.Engine(tiny_model(), engine_lib.EngineConfig(num_slots=1))
    late = eng.submit([5, 6, 7], _greedy(4), timeout_s=1e-3)
    time.sleep(0.01)
    eng.start()
    try:
      with self.assertRaises(engine_lib.ServeError) as cm:
        late.text()
      self.assertEqual(cm.exception.status, 504)
      self.assertLen(eng.generate([5, 6, 7], _greedy(3)).output_ids, 3)  # and it goes on
    finally:
      eng.stop()

  def test_launcher_serves_and_stops(self):
    tiny_model()
    r = testutil.run_module("launch.deploy", f"--model={_TINY['path']}", "--port=0",
                            "--max_seconds=0.5", "--num_slots=2", "--max_seq_len=128",
                            timeout=240)
    self.assertEqual(r.returncode, 0, r.stderr[-2000:])
    self.assertRegex(r.stdout, r"serving tiny on http://127\.0\.0\.1:\d+/v1 \(2 slots")
    # --precompile_len (default 512) is capped at --max_seq_len.
    self.assertRegex(r.stdout, r"precompiled \d+ programs for requests of up to 128 tokens")
    self.assertIn("stopped", r.stdout)

  def test_launcher_refuses_missing_adapters_in_one_line(self):
    tiny_model()
    r = testutil.run_module("launch.deploy", f"--model={_TINY['path']}", "--port=0",
                            f"--adapters={_TINY['path']}/no_such_adapter", timeout=240)
    testutil.assert_one_line_error(self, r, "no_such_adapter")


@pytest.mark.slow
class OpenAIServerTest(absltest.TestCase):
  """The real SmolLM2 behind the HTTP API, through the `openai` client."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.model = infer.load(testutil.require_default_model())
    cls.server = openai_api.Server(
        cls.model, engine_lib.EngineConfig(num_slots=4, max_seq_len=512, max_queue=16),
        openai_api.ApiConfig(model_name="smollm2", api_key="test-key", max_tokens=64,
                             max_request_bytes=4096),
        port=0, warmup=False)
    cls.client = openai.OpenAI(base_url=cls.server.url, api_key="test-key", max_retries=0,
                               timeout=300)

  @classmethod
  def tearDownClass(cls):
    cls.server.close()
    super().tearDownClass()

  def chat(self, prompt, max_tokens=16, **kwargs):
    return self.client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": prompt}], temperature=0,
        max_tokens=max_tokens, **kwargs)

  def raw_post(self, path, body: bytes, key="test-key"):
    conn = http.client.HTTPConnection(self.server.host, self.server.port, timeout=60)
    conn.request("POST", path, body, {"Authorization": f"Bearer {key}",
                                      "Content-Type": "application/json"})
    resp = conn.getresponse()
    out = resp.status, json.loads(resp.read())
    conn.close()
    return out

  def test_models_lists_the_model(self):
    self.assertEqual([m.id for m in self.client.models.list().data], ["smollm2"])

  def test_greedy_chat_equals_infer_chat(self):
    prompt = "What is the capital of France?"
    got = self.chat(prompt, max_tokens=24)
    want = infer.chat(self.model, [prompt], gen.SamplingConfig(max_new_tokens=24))[0]
    self.assertEqual(got.choices[0].message.content, want)
    self.assertIn("Paris", want)
    n_prompt = len(tok_lib.encode(self.model.tokenizer,
                                  tok_lib.render_chat(self.model.tokenizer, prompt)))
    self.assertEqual(got.usage.prompt_tokens, n_prompt)

  def test_streaming_concatenation_equals_non_streaming(self):
    prompt = "Name three colours."
    whole = self.chat(prompt, max_tokens=20)
    pieces, reasons, usage = [], [], None
    for chunk in self.chat(prompt, max_tokens=20, stream=True,
                           stream_options={"include_usage": True}):
      if chunk.usage is not None:
        usage = chunk.usage
      for c in chunk.choices:
        pieces.append(c.delta.content or "")
        reasons.append(c.finish_reason)
    self.assertGreater(sum(bool(p) for p in pieces), 2)  # really streamed in pieces
    self.assertEqual("".join(pieces), whole.choices[0].message.content)
    self.assertEqual(reasons[-1], whole.choices[0].finish_reason)
    self.assertEqual(usage.completion_tokens, whole.usage.completion_tokens)
    streamed = "".join(c.choices[0].text for c in self.client.completions.create(
        model="smollm2", prompt="The capital of France is", temperature=0, max_tokens=8,
        stream=True) if c.choices)
    plain = self.client.completions.create(model="smollm2", prompt="The capital of France is",
                                           temperature=0, max_tokens=8).choices[0].text
    self.assertEqual(streamed, plain)

  def test_concurrent_requests_equal_their_one_by_one_answers(self):
    jobs = [("What is 2 + 2?", 6), ("Write a short poem about the moon.", 30),
            ("What is the capital of France?", 12), ("List the planets of the solar system.", 24)]
    one_by_one = [self.chat(p, k).choices[0].message.content for p, k in jobs]
    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
      together = list(pool.map(lambda job: self.chat(*job).choices[0].message.content, jobs))
    self.assertEqual(together, one_by_one)
    self.assertLen(set(one_by_one), len(jobs))

  def test_stop_string_ends_the_answer_before_it(self):
    got = self.chat("What is the capital of France?", max_tokens=24, stop=["Paris"])
    self.assertEqual(got.choices[0].finish_reason, "stop")
    self.assertNotIn("Paris", got.choices[0].message.content)
    self.assertTrue(got.choices[0].message.content.startswith("The capital of France"))

  def test_malformed_json_and_bad_fields_get_400(self):
    status, body = self.raw_post("/v1/chat/completions", b'{"model": "smollm2", "messages": [')
    self.assertEqual(status, 400)
    self.assertIn("invalid JSON", body["error"]["message"])
    with self.assertRaises(openai.BadRequestError) as cm:
      self.client.chat.completions.create(model="gpt-nope",
                                          messages=[{"role": "user", "content": "Hi"}])
    self.assertEqual(cm.exception.status_code, 400)
    self.assertEqual(cm.exception.body["code"], "model_not_found")
    with self.assertRaisesRegex(openai.BadRequestError, "max_tokens must be in"):
      self.chat("Hi", max_tokens=65)
    with self.assertRaisesRegex(openai.BadRequestError, "logprobs is not supported"):
      self.chat("Hi", logprobs=True)
    status, body = self.raw_post("/v1/completions", json.dumps(
        {"model": "smollm2", "prompt": "x" * 5000}).encode())
    self.assertEqual(status, 413)

  def test_wrong_api_key_gets_401(self):
    bad = openai.OpenAI(base_url=self.server.url, api_key="wrong", max_retries=0)
    with self.assertRaises(openai.AuthenticationError) as cm:
      bad.models.list()
    self.assertEqual(cm.exception.status_code, 401)
    status, _ = self.raw_post("/v1/chat/completions", b"{}", key="wrong")
    self.assertEqual(status, 401)

  def test_full_queue_gets_429(self):
    # An engine that is never started keeps whatever is queued: the queue stays full.
    eng = engine_lib.Engine(self.model, engine_lib.EngineConfig(num_slots=1, max_queue=1))
    api = openai_api.OpenAIApi(eng, self.model.tokenizer,
                               openai_api.ApiConfig(model_name="smollm2"))
    httpd = openai_api.make_http_server(api, port=0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
      eng.submit([1, 2, 3], _greedy(2))
      client = openai.OpenAI(base_url=f"http://127.0.0.1:{httpd.server_address[1]}/v1",
                             api_key="none", max_retries=0)
      with self.assertRaises(openai.RateLimitError) as cm:
        client.chat.completions.create(model="smollm2",
                                       messages=[{"role": "user", "content": "Hi"}])
      self.assertEqual(cm.exception.status_code, 429)
      self.assertIn("retry later", cm.exception.body["message"])
    finally:
      httpd.shutdown()
      httpd.server_close()
      eng.stop()

  def test_tools_are_rendered_and_calls_parsed(self):
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "Current weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    messages = [{"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"}]
    api = self.server.api
    text, template = api.render_chat({"messages": messages, "tools": tools})
    self.assertEqual(template, "hermes")
    self.assertIn('"name": "get_weather"', text)  # the tool list
    self.assertIn("<tool_call>", text)  # the earlier call
    self.assertIn("<tool_response>\nsunny, 21 C", text)  # its result
    message, reason = api._message(  # pylint: disable=protected-access
        'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}'
        "\n</tool_call>", "stop", "hermes")
    self.assertEqual(reason, "tool_calls")
    self.assertEqual(message["tool_calls"][0]["function"],
                     {"name": "get_weather", "arguments": '{"city": "Rome"}'})
    # A real request with tools answers in a well-formed message either way.
    got = self.client.chat.completions.create(model="smollm2", messages=messages[:1],
                                              tools=tools, temperature=0, max_tokens=24)
    choice = got.choices[0]
    self.assertIn(choice.finish_reason, ("tool_calls", "stop", "length"))
    self.assertTrue(choice.message.tool_calls or choice.message.content)


if __name__ == "__main__":
  absltest.main()
