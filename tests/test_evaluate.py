"""swiftjax.evaluate / swiftjax.eval and launch.eval: parity with transformers, perplexity
windows, padding invariance, answer extraction, readers on the real shared files, the launcher."""

import json
import math
import pathlib
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import pytest

from swiftjax import errors
from swiftjax import evaluate
from swiftjax import infer
from swiftjax.eval import answers
from swiftjax.eval import gsm8k
from swiftjax.eval import loglik
from swiftjax.eval import multiple_choice
from swiftjax.eval import perplexity
from swiftjax.eval import readers
from tests import testutil

_TMP = None
_CACHE = {}


def setUpModule():
  global _TMP
  _TMP = tempfile.TemporaryDirectory()


def tearDownModule():
  _TMP.cleanup()


def tiny():
  """(directory, swiftjax LoadedModel, torch model) of one tiny random Llama, built once."""
  if "tiny" not in _CACHE:
    path = pathlib.Path(_TMP.name) / "tiny"
    torch_model = testutil.save_tiny_llama(path)
    testutil.save_tiny_tokenizer(path)
    _CACHE["tiny"] = (path, infer.load(path), torch_model)
  return _CACHE["tiny"]


def torch_loglik(torch_model, context, continuation) -> float:
  """Direct reference: sum of the continuation's log-probs from one transformers forward."""
  import torch  # pylint: disable=g-import-not-at-top
  ids = torch.tensor([list(context) + list(continuation)])
  with torch.no_grad():
    logp = torch.log_softmax(torch_model(ids).logits[0].double(), dim=-1)
  n = len(context)
  return float(sum(logp[n - 1 + j, t] for j, t in enumerate(continuation)))


# Questions over the tiny tokenizer's corpus; the last one varies the context (WinoGrande style).
_ITEMS = [
    readers.MCItem("q0", ("the cat sat on the",) * 3, (" mat", " dog", " bone ."), 0),
    readers.MCItem("q1", ("what is the capital of france ?",) * 2, (" paris", " a bird"), 0),
    readers.MCItem("q2", ("Question: a bird can\nAnswer:",) * 4,
                   (" sing", " sing a song", " eat", " sat on the mat ."), 1),
    readers.MCItem("q3", ("the dog",) * 4, (" A", " B", " C", " D"), 2),  # one-token choices
    readers.MCItem("q4", ("the cat ate the", "the dog ate the"), (" bone .",) * 2, 1),
]


def write(path: pathlib.Path, text: str) -> pathlib.Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text)
  return path


def adapters_row(question, choices, answer) -> dict:
  opts = " ".join(f"Answer{k + 1}: {c}" for k, c in enumerate(choices))
  fmt = "/".join(f"answer{k + 1}" for k in range(len(choices)))
  return {"instruction": f"Please choose the correct answer to the question: {question}\n\n"
                         f"{opts}\n\nAnswer format: {fmt}",
          "input": "", "output": f"the correct answer is {answer}", "answer": answer}


class ParityTest(absltest.TestCase):

  def _check_parity(self, items):
    _, model, torch_model = tiny()
    metrics, records = multiple_choice.evaluate(model, items, batch_size=4)
    ref = []
    for item, reqs in zip(items, multiple_choice.requests_for(model.tokenizer, items)):
      ref.append([torch_loglik(torch_model, r.context, r.continuation) for r in reqs])
    for rec, want in zip(records, ref):
      np.testing.assert_allclose(rec["logliks"], want, atol=1e-4, rtol=0)
      self.assertEqual(rec["pred"], int(np.argmax(want)))
    ref_metrics, _ = multiple_choice.accuracy(items, ref)
    self.assertEqual(metrics["acc"], ref_metrics["acc"])
    self.assertEqual(metrics["acc_norm"], ref_metrics["acc_norm"])
    return metrics

  def test_logliks_and_accuracy_match_transformers(self):
    metrics = self._check_parity(_ITEMS)
    self.assertEqual(metrics["n"], len(_ITEMS))
    self.assertEqual(metrics["ci"], "wilson")

  def test_real_layouts_match_transformers(self):
    root = testutil.require_shared("eval_llm_adapters", "dataset")
    items = []
    for task, folder in (("arc_easy", "ARC-Easy"), ("boolq", "boolq"),
                         ("winogrande", "winogrande"), ("piqa", "piqa")):
      items += readers.read_llm_adapters(root / folder, task, limit=2)
    self._check_parity(items)

  def test_padding_does_not_change_scores(self):
    _, model, _ = tiny()
    reqs = [r for rs in multiple_choice.requests_for(model.tokenizer, _ITEMS) for r in rs]
    one = loglik.loglikelihoods(model.params, model.cfg, reqs, batch_size=1)
    many = loglik.loglikelihoods(model.params, model.cfg, reqs, batch_size=5)
    np.testing.assert_allclose([s.loglik for s in one], [s.loglik for s in many], atol=1e-5)
    self.assertEqual([s.is_greedy for s in one], [s.is_greedy for s in many])

  def test_left_truncation_keeps_the_continuation(self):
    _, model, torch_model = tiny()
    req = loglik.Request(tuple(range(5, 45)), (7, 8, 9))
    got = loglik.loglikelihoods(model.params, model.cfg, [req], max_length=10)[0].loglik
    self.assertAlmostEqual(got, torch_loglik(torch_model, req.context[-8:], req.continuation),
                           delta=1e-4)
    with self.assertRaisesRegex(errors.ConfigError, "does not fit max_length=2"):
      loglik.loglikelihoods(model.params, model.cfg, [req], max_length=2)


class PerplexityTest(parameterized.TestCase):

  @parameterized.parameters((10, 4, 3), (10, 10, 1), (7, 3, 3), (1, 4, 2), (9, 4, 4))
  def test_windows_score_each_token_once(self, n, window, stride):
    scored = [i for _, end, first in perplexity.windows(n, window, stride)
              for i in range(first, end)]
    # Overlapping windows score every token but the first; disjoint ones skip each window's
    # first token.
    want = [i for i in range(1, n) if stride < window or i % window]
    self.assertEqual(sorted(scored), want)
    self.assertLen(set(scored), len(scored))
    for begin, end, first in perplexity.windows(n, window, stride):
      self.assertLessEqual(end - begin, window)
      self.assertGreater(first, begin)

  def test_bad_stride(self):
    with self.assertRaisesRegex(errors.ConfigError, "stride"):
      perplexity.windows(10, 4, 5)

  def test_sliding_window_equals_direct_computation(self):
    _, model, torch_model = tiny()
    rng = np.random.default_rng(0)
    docs = [rng.integers(3, 128, size=n).tolist() for n in (23, 9, 2)]
    window, stride = 8, 3
    got = perplexity.sliding_nll(model.params, model.cfg, docs, max_length=window,
                                 stride=stride, batch_size=3)
    for ids, (nll, count) in zip(docs, got):
      # Token i is predicted from its window's tokens before it; its window is the first one
      # (starts 0, stride, 2*stride, ...) that reaches past i.
      want = 0.0
      for i in range(1, len(ids)):
        begin = next(b for b in range(0, len(ids), stride) if min(b + window, len(ids)) > i)
        want -= torch_loglik(torch_model, ids[begin:i], [ids[i]])
      self.assertEqual(count, len(ids) - 1)
      self.assertAlmostEqual(nll, want, delta=1e-4)
    # A window longer than the document: one plain forward pass.
    (whole, _), = perplexity.sliding_nll(model.params, model.cfg, docs[:1], max_length=64,
                                         stride=32)
    self.assertAlmostEqual(whole, -torch_loglik(torch_model, docs[0][:1], docs[0][1:]),
                           delta=1e-4)
    # stride == window: the independent chunks, each chunk's first token unscored.
    (chunked, count), = perplexity.sliding_nll(model.params, model.cfg, docs[:1],
                                               max_length=window, stride=window)
    want = sum(-torch_loglik(torch_model, docs[0][b:b + 1], docs[0][b + 1:b + window])
               for b in range(0, len(docs[0]), window) if len(docs[0][b:b + window]) > 1)
    self.assertAlmostEqual(chunked, want, delta=1e-4)
    self.assertEqual(count, sum(len(docs[0][b:b + window]) - 1
                                for b in range(0, len(docs[0]), window)))

  def test_perplexity_of_files(self):
    path, model, _ = tiny()
    tmp = pathlib.Path(self.create_tempdir().full_path)
    txt = write(tmp / "a.txt", "the cat sat on the mat . the dog ate the bone .")
    metrics, _ = perplexity.perplexity(model, readers.read_documents(txt), max_length=8)
    n = len(model.tokenizer("the cat sat on the mat . the dog ate the bone .")["input_ids"])
    self.assertEqual(metrics["tokens"], n - 1)
    self.assertAlmostEqual(metrics["ppl"], math.exp(metrics["nll"]))
    rows = [{"text": "the cat sat on the mat ."},
            {"messages": [{"role": "user", "content": "the dog"},
                          {"role": "assistant", "content": "ate the bone ."}]}]
    jsonl = write(tmp / "b.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    docs = readers.read_documents(jsonl)
    self.assertIsNone(docs[0].messages)
    self.assertEqual(docs[1].messages[1]["content"], "ate the bone .")
    result = evaluate.evaluate(model, f"ppl:{jsonl}", evaluate.Options(max_length=16))
    metrics, records = result.metrics, result.records
    self.assertLen(records, 2)
    self.assertEqual(metrics["tokens"], sum(r["tokens"] for r in records))
    self.assertGreater(metrics["ppl"], 1.0)
    del path


class AnswerTest(parameterized.TestCase):

  @parameterized.parameters(
      ("Janet sells 9 eggs.\n#### 18", "18"),
      ("She makes 9 * 2 = $18 every day.", "18"),
      ("The answer is $1,234.", "1234"),
      ("So the total is 1,000,000 dollars.", "1000000"),
      ("It costs $18.00.", "18"),
      ("The answer is 18. Then 3 more steps follow.", "18"),
      ("He has 5-3=2 apples left.", "2"),
      ("The temperature is -7 degrees.", "-7"),
      ("Half of it is 0.5", "0.5"),
      ("The result is \\boxed{42}, not 7.", "42"),
      ("I cannot answer that.", None),
  )
  def test_extract_answer(self, text, want):
    self.assertEqual(answers.extract_answer(text), want)

  def test_wilson_interval(self):
    lo, hi = multiple_choice.wilson_interval(8, 10)
    self.assertAlmostEqual(lo, 0.4902, places=4)
    self.assertAlmostEqual(hi, 0.9433, places=4)
    self.assertEqual(multiple_choice.wilson_interval(0, 0), (0.0, 1.0))

  def test_gsm8k_on_tiny_model(self):
    _, model, _ = tiny()
    items = [readers.GenItem("a", "what is the capital of france ?", "3"),
             readers.GenItem("b", "the cat sat on the", "1")]
    metrics, records = gsm8k.evaluate(model, items, max_new_tokens=4, batch_size=4)
    self.assertEqual(metrics["n"], 2)
    self.assertLen(records, 2)
    for r in records:
      self.assertEqual(r["correct"], r["prediction"] == r["reference"])


class ReadersTest(parameterized.TestCase):

  @parameterized.parameters(
      ("arc_easy", "ARC-Easy", 2376), ("arc_challenge", "ARC-Challenge", 1172),
      ("boolq", "boolq", 3270), ("openbookqa", "openbookqa", 500), ("piqa", "piqa", 1838),
      ("social_iqa", "social_i_qa", 1954), ("winogrande", "winogrande", 1267))
  def test_llm_adapters_sets(self, task, folder, count):
    path = testutil.require_shared("eval_llm_adapters", "dataset", folder)
    items = readers.read_llm_adapters(path, task)
    self.assertLen(items, count)
    self.assertTrue(items[1].where.endswith("test.json:8"), items[1].where)
    for item in items:
      self.assertLen(item.contexts, len(item.continuations))
      self.assertIn(len(item.continuations), (2, 3, 4, 5))
      self.assertLess(item.label, len(item.continuations))

  def test_llm_adapters_first_items(self):
    root = testutil.require_shared("eval_llm_adapters", "dataset")
    arc = readers.read_llm_adapters(root / "ARC-Easy", "arc_easy", limit=1)[0]
    self.assertEqual(arc.label, 0)
    self.assertEqual(arc.continuations[0],
                     " Sunlight is the source of energy for nearly all ecosystems.")
    self.assertTrue(arc.contexts[0].startswith("Question: Which statement best explains"))
    self.assertTrue(arc.contexts[0].endswith("food webs?\nAnswer:"))
    wino = readers.read_llm_adapters(root / "winogrande", "winogrande", limit=1)[0]
    self.assertEqual(wino.contexts, ("Sarah was a much better surgeon than Maria so Sarah",
                                     "Sarah was a much better surgeon than Maria so Maria"))
    self.assertEqual(wino.continuations[0], " always got the easier cases.")
    self.assertEqual(wino.label, 1)
    boolq = readers.read_llm_adapters(root / "boolq", "boolq", limit=1)[0]
    self.assertEqual(boolq.continuations, (" yes", " no"))
    self.assertEqual(boolq.label, 1)

  def test_mmlu(self):
    path = testutil.require_shared("mmlu_qlora", "zero_shot_mmlu_val.json")
    items = readers.read_mmlu(path)
    self.assertLen(items, 1531)
    self.assertEqual(items[0].continuations, (" A", " B", " C", " D"))
    self.assertEqual(items[0].label, 0)
    self.assertEqual(items[0].group, "abstract_algebra")
    self.assertTrue(items[0].contexts[0].endswith("D. 6\nAnswer:"))
    self.assertTrue(items[2].where.endswith("zero_shot_mmlu_val.json:3"))

  def test_gsm8k(self):
    path = testutil.require_shared("gsm8k", "test.jsonl")
    items = readers.read_gsm8k(path)
    self.assertLen(items, 1319)
    self.assertEqual(items[0].reference, "18")
    self.assertTrue(all(answers.canonical_number(i.reference) == i.reference for i in items))

  def test_malformed_rows_name_file_and_line(self):
    tmp = pathlib.Path(self.create_tempdir().full_path)
    good = adapters_row("Which is wet?", ["water", "sand"], "answer1")
    bad = dict(good, answer="answer7")
    listing = write(tmp / "arc" / "test.json", json.dumps([good, good, bad], indent=4))
    line = 1 + 2 * (json.dumps(good, indent=4).count("\n") + 1) + 1
    with self.assertRaisesRegex(readers.RowError, rf"test\.json:{line}: answer 'answer7'"):
      readers.read_llm_adapters(listing.parent, "arc_easy")
    jsonl = write(tmp / "g.jsonl", '{"question": "q", "answer": "#### 3"}\n\n{"question": 1,\n')
    with self.assertRaisesRegex(readers.RowError, r"g\.jsonl:3: invalid JSON"):
      readers.read_gsm8k(jsonl)
    nohash = write(tmp / "h.jsonl", '{"question": "q", "answer": "3"}\n')
    with self.assertRaisesRegex(readers.RowError, r"h\.jsonl:1: answer has no '####"):
      readers.read_gsm8k(nohash)
    with self.assertRaisesRegex(readers.RowError, r"h\.jsonl:1: missing key 'instruction'"):
      readers.read_llm_adapters(nohash, "arc_easy")

  def test_bad_specs(self):
    with self.assertRaisesRegex(errors.ConfigError, "unknown evaluation kind 'toolbenchx'"):
      evaluate.parse_spec("toolbenchx:/tmp")
    with self.assertRaisesRegex(errors.ConfigError, "expected KIND:PATH"):
      evaluate.parse_spec("arc_easy")
    with self.assertRaisesRegex(errors.SwiftJaxError, "does not exist"):
      evaluate.parse_spec("gsm8k:/nonexistent/test.jsonl")


class LaunchEvalTest(absltest.TestCase):

  def test_tiny_run_matches_library(self):
    path, model, _ = tiny()
    tmp = pathlib.Path(self.create_tempdir().full_path)
    rows = [adapters_row("the cat sat on the", ["mat", "dog", "bone"], "answer1"),
            adapters_row("what is the capital of france ?", ["paris", "a bird"], "answer1"),
            adapters_row("the dog ate the", ["bone", "song", "cat"], "answer3")]
    data = write(tmp / "test.json", json.dumps(rows, indent=2))
    out = tmp / "out" / "results.json"
    r = testutil.run_module("launch.eval", f"--model={path}", f"--eval_dataset=arc_easy:{tmp}",
                            "--batch_size=4", f"--output={out}")
    self.assertEqual(r.returncode, 0, r.stderr)
    metrics = json.loads(r.stdout.strip().splitlines()[-1])
    want = evaluate.evaluate(model, f"arc_easy:{data}", evaluate.Options(batch_size=4))
    self.assertEqual(metrics["n"], 3)
    self.assertEqual(metrics["acc"], want.metrics["acc"])
    saved = json.loads(out.read_text())
    self.assertLen(saved["records"], 3)
    np.testing.assert_allclose(saved["records"][0]["logliks"], want.records[0]["logliks"],
                               atol=1e-5)

  def test_user_errors_are_one_line(self):
    r = testutil.run_module("launch.eval", "--eval_dataset=toolbenchx:/tmp")
    self.assertEqual(r.returncode, 2, r.stderr)
    self.assertNotIn("Traceback", r.stderr)
    self.assertRegex(r.stderr.strip(), r"^error: unknown evaluation kind 'toolbenchx'")
    r = testutil.run_module("launch.eval", "--eval_dataset=mmlu:/nonexistent/mmlu.json")
    self.assertEqual(r.returncode, 2, r.stderr)
    self.assertEqual(r.stderr.strip(), "error: evaluation file /nonexistent/mmlu.json does not "
                                       "exist")


@pytest.mark.slow
class SmolLM2Test(absltest.TestCase):

  def test_prefers_obvious_answers(self):
    testutil.require_default_model()
    model = infer.load()
    items = [
        readers.MCItem("paris", ("The capital of France is",) * 3,
                       (" Paris.", " Berlin.", " a banana."), 0),
        readers.MCItem("sky", ("Question: What color is a clear daytime sky?\nAnswer:",) * 3,
                       (" green", " blue", " striped"), 1),
        readers.MCItem("count", ("One, two, three, four,",) * 3, (" seven", " banana", " five"),
                       2),
    ]
    metrics, _ = multiple_choice.evaluate(model, items)
    self.assertEqual(metrics["acc"], 1.0)


if __name__ == "__main__":
  absltest.main()
