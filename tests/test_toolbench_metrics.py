"""swiftjax.agent.actions (parsing agent turns) and swiftjax.eval.toolbench (ToolBench-Static
metrics): hand-worked examples for each definition, the readers' errors, `launch.eval
--predictions` end to end, and a tiny generation run with the embedded SmolLM2."""

import importlib.util
import itertools
import json
import pathlib

from absl.testing import absltest
from absl.testing import parameterized

from swiftjax import errors
from swiftjax import evaluate
from swiftjax.agent import actions
from swiftjax.agent import templates
from swiftjax.data import formats
from swiftjax.eval import toolbench
from tests import testutil

TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                        "unit": {"type": "string"}}}}},
    {"name": "now", "description": "The time", "parameters": {"type": "object",
                                                               "properties": {}}},
    {"name": "search", "description": "Web search",
     "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}},
]
USER = {"role": "user", "content": "What is the weather in Paris?"}


def call(name, arguments):
  return {"role": "tool_call", "content": json.dumps({"name": name, "arguments": arguments})}


# Six reference turns, one per case the metrics distinguish.
REFERENCES = [
    # R1 call with arguments (hard), as a tool_call with its thought before it.
    {"messages": [USER, {"role": "assistant", "content": "I should look it up."},
                  call("get_weather", {"city": "Paris", "unit": "C"})], "tools": TOOLS},
    # R2 call without arguments (easy), as a react assistant message.
    {"messages": [USER, {"role": "assistant",
                         "content": "Thought: time first\nAction: now\nAction Input: {}"}],
     "tools": TOOLS},
    # R3 call with arguments (hard); the tools as a JSON string (glaive stores them so).
    {"messages": [USER, call("search", {"query": "jax"})], "tools": json.dumps(TOOLS)},
    # R4 finish, a react final answer after an observation.
    {"messages": [USER, call("get_weather", {"city": "Paris"}),
                  {"role": "tool_response", "content": "sunny"},
                  {"role": "assistant", "content": "Thought: I know it\nFinal Answer: The "
                                                   "weather in Paris is sunny"}],
     "tools": TOOLS},
    # R5 give up, ToolBench's Finish.
    {"messages": [USER, call("Finish", {"return_type": "give_up_and_restart"})],
     "tools": TOOLS},
    # R6 a reference calling a tool its sample does not list: not scored.
    {"messages": [USER, call("teleport", {"to": "Paris"})], "tools": TOOLS},
]
PREDICTIONS = [
    # P1 right tool, city equal (1), unit different (0.5): recall = precision = 1.5 / 2 = 0.75,
    # F1 = 0.75.
    'Thought: weather\nAction: get_weather\nAction Input: {"city": "Paris", "unit": "F"}',
    # P2 hermes call of `now` with no arguments: easy F1 = 1.
    '<tool_call>\n{"name": "now", "arguments": {}}\n</tool_call>',
    # P3 a tool the sample does not have: Act.EM 0, F1 0 (hard), hallucinated; plan call = call.
    'Action: web_search\nAction Input: {"query": "jax"}',
    # P4 7 tokens against the reference's 6, LCS 6: P = 6/7, R = 1, F = 12/13.
    "Thought: done\nFinal Answer: The weather in Paris is sunny today",
    # P5 finishes where the reference gives up: Plan.EM 0; Finish is never a hallucination.
    'Action: Finish\nAction Input: {"return_type": "give_answer", "final_answer": "sorry"}',
    # P6 not scored (its reference is skipped), however wrong.
    "Action: teleport\nAction Input: {}",
]
# By hand over the 5 scored turns (R6 skipped):
#   Plan.EM   = (1 + 1 + 1 + 1 + 0) / 5      = 0.8
#   Act.EM    = (1 + 1 + 0) / 3 call turns   = 2/3
#   F1        = (0.75 + 1 + 0) / 3           = 7/12;  easy = 1/1,  hard = (0.75 + 0) / 2
#   HalluRate = 1 / 5                        = 0.2
#   Rouge-L   = 12/13 over the 1 finish turn
#   EvalScope's per-sample means divide by all 5: Act.EM 2/5, F1 1.75/5, Rouge-L (12/13)/5.
EXPECTED = {"Plan.EM": 0.8, "Act.EM": 2 / 3, "HalluRate": 0.2, "F1": 7 / 12,
            "Rouge-L": 12 / 13, "easy_F1": 1.0, "hard_F1": 0.375}


def write_jsonl(path: pathlib.Path, rows) -> pathlib.Path:
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return path


class ParseTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("react_call", "Thought: look\nAction: get_weather\nAction Input: {\"city\": \"Rome\"}",
       None, ("look", "get_weather", '{"city": "Rome"}', None, "call")),
      ("react_final", "Thought: I know\nFinal Answer: Rome is sunny", "react",
       ("I know", None, None, "Rome is sunny", "finish")),
      ("observation_cut", "Thought: t\nAction: now\nAction Input: {}\nObservation: 12:00",
       None, ("t", "now", "{}", None, "call")),
      # The first step is the turn (EvalScope reads the last one).
      ("answer_after_action", "Action: now\nAction Input: {}\nFinal Answer: noon", None,
       ("", "now", "{}", None, "call")),
      ("answer_before_action", "Final Answer: noon\nAction: now\nAction Input: {}", None,
       ("", None, None, "noon\nAction: now\nAction Input: {}", "finish")),
      ("parallel_react", "Thought: both\nAction: now\nAction Input: {}\nAction: search\n"
       "Action Input: {\"query\": \"q\"}", "react", ("both", "now", "{}", None, "call")),
      ("action_without_input", "Action: now\nAction: search\nAction Input: {}", None,
       ("", "now", None, None, "call")),
      ("toolbench_finish", "Thought: done\nAction: Finish\nAction Input: {\"return_type\": "
       "\"give_answer\", \"final_answer\": \"42\"}", "toolbench",
       ("done", "Finish", '{"return_type": "give_answer", "final_answer": "42"}', "42",
        "finish")),
      ("toolbench_give_up", "Action: Finish\nAction Input: {\"return_type\": "
       "\"give_up_and_restart\"}", "toolbench",
       ("", "Finish", '{"return_type": "give_up_and_restart"}', None, "give up")),
      # EvalScope: Finish with arguments that are not JSON is a give-up.
      ("finish_bad_json", "Action: Finish\nAction Input: {oops", None,
       ("", "Finish", "{oops", None, "give up")),
      ("hermes", "Let me check.\n<tool_call>\n{\"name\": \"search\", \"arguments\": "
       "{\"query\": \"q\"}}\n</tool_call>", "hermes",
       ("Let me check.", "search", '{"query": "q"}', None, "call")),
      ("hermes_unclosed_bad_json", "<tool_call>\n{\"name\": \"search\", \"arguments\": {\"q",
       None, ("", "search", '{"name": "search", "arguments": {"q', None, "call")),
      ("hermes_plain_answer", "It is sunny.", "hermes",
       ("", None, None, "It is sunny.", "finish")),
      ("swift_tool_call", '{"name": "now", "arguments": "{}"}', None,
       ("", "now", "{}", None, "call")),
      ("plain_text", "Paris is sunny.", None, ("", None, None, "Paris is sunny.", "finish")),
  )
  def test_parse(self, text, template, want):
    a = actions.parse(text, template)
    self.assertEqual((a.thought, a.name, a.arguments, a.final_answer, a.plan), want)

  def test_real_toolllama_turns(self):
    path = testutil.require_shared("toolbench", "toolllama_demo_b2384c2", "data", "toolllama",
                                   "processed_answer", "G1_demo_DFS_woFilter_w2.json")
    rows = json.loads(path.read_text())
    turns = [c["value"] for c in rows[-1]["conversations"] if c["from"] == "assistant"]
    parsed = [actions.parse(t) for t in turns]
    self.assertEqual([a.name for a in parsed[:3]],
                     ["love_quote_for_olato_quotes", "success_quote_for_olato_quotes",
                      "motivation_quote_for_olato_quotes"])
    self.assertTrue(all(a.plan == "call" and a.arguments == "{}" for a in parsed[:3]))
    # The last turn finishes with ToolBench's Finish; its JSON spans several lines.
    self.assertEqual((parsed[3].name, parsed[3].plan), ("Finish", "finish"))
    self.assertTrue(parsed[3].thought.startswith("For your surprise party"))
    self.assertTrue(parsed[3].final_answer.startswith("Here are some meaningful quotes"))
    self.assertTrue(parsed[3].final_answer.endswith("Enjoy the celebration!"))

  def test_unknown_template(self):
    with self.assertRaisesRegex(ValueError, "unknown agent template 'bogus'"):
      actions.parse("x", "bogus")

  def test_reference_action(self):
    a = actions.reference_action(REFERENCES[0]["messages"])
    self.assertEqual((a.thought, a.name, json.loads(a.arguments), a.plan),
                     ("I should look it up.", "get_weather", {"city": "Paris", "unit": "C"},
                      "call"))
    # Parallel calls: the turn's first call is the reference; the prompt ends before the thought.
    msgs = [USER, {"role": "assistant", "content": "Both."}, call("now", {}),
            call("search", {"query": "x"})]
    self.assertEqual(actions.turn_start(msgs), 1)
    self.assertEqual(actions.reference_action(msgs).name, "now")
    finish = actions.reference_action(
        [USER, call("Finish", {"return_type": "give_answer", "final_answer": "Done."})])
    self.assertEqual((finish.plan, finish.final_answer), ("finish", "Done."))
    with self.assertRaisesRegex(ValueError, "must be the last message.*'tool_response'"):
      actions.reference_action([USER, call("now", {}), {"role": "tool_response",
                                                        "content": "12:00"}])
    with self.assertRaisesRegex(ValueError, "JSON object with a string 'name'"):
      actions.reference_action([USER, {"role": "tool_call", "content": "now()"}])


class RoundTripTest(parameterized.TestCase):
  """What the agent templates render, `parse` reads back as the reference turn."""

  @parameterized.parameters("react", "toolbench", "hermes")
  def test_rendered_glaive_turns_parse_back(self, template):
    path = testutil.require_shared("llamafactory", "data", "glaive_toolcall_en_demo.json")
    n_calls = 0
    for i, row in enumerate(json.loads(path.read_text())[:60]):
      turns = toolbench.split_turns(row)
      want = [toolbench.reference_of(f"glaive[{i}]", t).action for t in turns]
      chat = templates.to_chat(formats.messages_of(row), formats.tools_of(row), template)
      got = [actions.parse(m["content"], template) for m in chat if m["role"] == "assistant"]
      self.assertLen(got, len(want), f"glaive[{i}]")
      for g, w in zip(got, want):
        self.assertEqual((g.plan, g.name if w.plan == "call" else None), (w.plan, w.name))
        if w.plan == "call":
          n_calls += 1
          self.assertEqual(json.loads(g.arguments), json.loads(w.arguments))
        else:
          self.assertEqual(g.final_answer.strip(), w.final_answer.strip())
    self.assertGreater(n_calls, 10)


class MetricsTest(parameterized.TestCase):

  @parameterized.named_parameters(
      # Per reference key: equal value 1, different value 0.5, missing 0; precision over the
      # prediction's keys.
      ("all_equal", {"a": 1, "b": 2}, {"a": 1, "b": 2}, 1.0, "hard"),
      ("one_differs", {"a": 1, "b": 2}, {"a": "1", "b": 2}, 0.75, "hard"),  # 1.5/2 both ways
      ("one_missing_one_extra", {"a": 1, "b": 2}, {"a": 1, "c": 3}, 0.5, "hard"),  # R=P=1/2
      ("extra_keys", {"a": 1}, {"a": 1, "b": 2, "c": 3}, 0.5, "hard"),  # R=1, P=1/3 -> 1/2
      ("none_predicted", {"a": 1}, {}, 0.0, "hard"),
      ("not_an_object", {"a": 1}, [1], 0.0, "hard"),
      ("easy_right", {}, {}, 1.0, "easy"),
      ("easy_wrong", {}, {"x": 1}, 0.0, "easy"),
  )
  def test_argument_f1(self, ref, pred, want, kind):
    f1, got_kind = toolbench.argument_f1(json.dumps(ref), json.dumps(pred))
    self.assertAlmostEqual(f1, want)
    self.assertEqual(got_kind, kind)

  def test_argument_f1_unreadable(self):
    self.assertEqual(toolbench.argument_f1('{"a": 1}', "{a: 1"), (0.0, "hard"))
    self.assertEqual(toolbench.argument_f1("{}", "{a: 1"), (0.0, "easy"))
    self.assertEqual(toolbench.argument_f1(None, None), (1.0, "easy"))  # no Action Input: {}
    # A reference whose arguments are not JSON is not scored.
    self.assertEqual(toolbench.argument_f1("{bad", "{}"), (None, "hard"))

  def test_rouge_l(self):
    # LCS of "a b c d" and "a c x d" is "a c d": P = R = 3/4.
    self.assertAlmostEqual(toolbench.rouge_l("a c x d", "a b c d"), 0.75)
    # Case and punctuation are kept (whitespace tokens): "Paris." is not "paris".
    self.assertAlmostEqual(toolbench.rouge_l("Paris.", "paris"), 0.0)
    self.assertEqual(toolbench.rouge_l("", "x"), 0.0)

  def test_rouge_l_matches_rouge_score(self):
    if importlib.util.find_spec("rouge_score") is None:
      self.skipTest("rouge-score is not installed")
    from rouge_score import rouge_scorer  # pylint: disable=g-import-not-at-top

    class Split:
      def tokenize(self, text):
        return text.split()

    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=Split())
    path = testutil.require_shared("llamafactory", "data", "glaive_toolcall_en_demo.json")
    answers = [m["content"] for row in json.loads(path.read_text())[:40]
               for m in formats.messages_of(row) if m["role"] == "assistant"]
    for pred, ref in zip(answers, answers[1:]):
      want = scorer.score(ref, pred)["rougeL"].fmeasure
      self.assertAlmostEqual(toolbench.rouge_l(pred, ref), want, places=12)

  def test_score_hand_worked(self):
    refs = [toolbench.reference_of(f"row{i}", r) for i, r in enumerate(REFERENCES)]
    m = toolbench.score(refs, PREDICTIONS)
    for key, want in EXPECTED.items():
      self.assertAlmostEqual(m[key], want, msg=key)
    self.assertEqual((m["n"], m["skipped"], m["n_call"], m["n_finish"], m["n_give_up"]),
                     (5, 1, 3, 1, 1))
    self.assertEqual((m["n_easy"], m["n_hard"], m["hallucinated"]), (1, 2, 1))
    self.assertEqual(m["pred_plans"], {"call": 3, "finish": 2})
    es = m["evalscope_mean"]
    self.assertAlmostEqual(es["Act.EM"], 2 / 5)
    self.assertAlmostEqual(es["F1"], 1.75 / 5)
    self.assertAlmostEqual(es["Rouge-L"], 12 / 13 / 5)

  def test_perfect_predictions_score_one(self):
    refs = [toolbench.reference_of(f"row{i}", r) for i, r in enumerate(REFERENCES[:4])]
    # Each reference, written back as the model would (react text, a tool_call JSON).
    perfect = ['Action: get_weather\nAction Input: {"unit": "C", "city": "Paris"}',
               "Action: now\nAction Input: {}", REFERENCES[2]["messages"][-1]["content"],
               "Final Answer: The weather in Paris is sunny"]
    m = toolbench.score(refs, perfect)
    self.assertEqual([m[k] for k in toolbench.METRIC_KEYS], [1.0, 1.0, 0.0, 1.0, 1.0])

  def test_count_mismatch(self):
    refs = [toolbench.reference_of("row0", REFERENCES[0])]
    with self.assertRaisesRegex(errors.SwiftJaxError, "2 predictions for 1 references"):
      toolbench.score(refs, ["a", "b"])


class ReadersTest(absltest.TestCase):

  def test_split_turns(self):
    row = {"messages": [{"role": "system", "content": "Be brief."}, USER,
                        {"role": "assistant", "content": "Checking."},
                        call("get_weather", {"city": "Paris"}), call("now", {}),
                        {"role": "tool_response", "content": "sunny"},
                        {"role": "tool_response", "content": "noon"},
                        {"role": "assistant", "content": "Sunny at noon."}], "tools": TOOLS}
    turns = toolbench.split_turns(row)
    self.assertEqual([len(t["messages"]) for t in turns], [5, 8])
    refs = [toolbench.reference_of("x", t) for t in turns]
    self.assertEqual([r.action.name for r in refs], ["get_weather", None])
    self.assertEqual([len(r.prompt) for r in refs], [2, 7])
    self.assertEqual(refs[1].action.final_answer, "Sunny at noon.")

  def test_a_thought_before_the_answer_is_part_of_the_answer_turn(self):
    row = {"messages": [USER, call("get_weather", {"city": "Paris"}),
                        {"role": "tool_response", "content": "sunny"},
                        {"role": "assistant", "content": "get_weather answered it."},
                        {"role": "assistant", "content": "It is sunny."}], "tools": TOOLS}
    turns = toolbench.split_turns(row)
    self.assertEqual([len(t["messages"]) for t in turns], [2, 5])
    ref = toolbench.reference_of("x", turns[1])
    self.assertLen(ref.prompt, 3)  # the thought is the model's to write, not the prompt's
    self.assertIsNone(ref.action.name)
    self.assertEqual(ref.action.final_answer, "It is sunny.")

  def test_split_turns_real_glaive(self):
    path = testutil.require_shared("llamafactory", "data", "glaive_toolcall_en_demo.json")
    rows = json.loads(path.read_text())
    n_turns, n_calls = 0, 0
    for i, row in enumerate(rows):
      messages = formats.messages_of(row)
      turns = toolbench.split_turns(row)
      # One turn per run of tool_calls, and one per answer (an assistant message that is not
      # the thought before a call).
      runs = [k for k, _ in itertools.groupby(m["role"] for m in messages)]
      want = runs.count("tool_call") + sum(
          k == "assistant" and (j + 1 == len(runs) or runs[j + 1] != "tool_call")
          for j, k in enumerate(runs))
      self.assertLen(turns, want)
      self.assertEqual(turns[-1]["messages"], messages)  # glaive rows end with an answer
      for t in turns:
        ref = toolbench.reference_of(f"glaive[{i}]", t)
        n_turns += 1
        if ref.action.plan == "call":
          n_calls += 1
          self.assertIn(ref.action.name, ref.tool_names)
          self.assertIsInstance(json.loads(ref.action.arguments), dict)
    self.assertGreater(n_calls, 100)
    self.assertGreater(n_turns, len(rows))

  def test_bad_rows_are_named(self):
    tmp = pathlib.Path(self.create_tempdir().full_path)
    path = tmp / "refs.jsonl"
    path.write_text(json.dumps(REFERENCES[0]) + "\n{not json\n")
    with self.assertRaisesRegex(toolbench.RowError, rf"^{path}:2: invalid JSON"):
      toolbench.read_references(path)
    write_jsonl(path, [REFERENCES[0], {"messages": [USER], "tools": TOOLS}])
    with self.assertRaisesRegex(toolbench.RowError, rf"^{path}:2: the reference turn must be"):
      toolbench.read_references(path)
    write_jsonl(path, [{"messages": [USER, call("now", {})], "tools": [{"description": "x"}]}])
    with self.assertRaisesRegex(toolbench.RowError, rf"^{path}:1: tool 0 has no string 'name'"):
      toolbench.read_references(path)
    preds = write_jsonl(tmp / "preds.jsonl", [{"response": "a"}, {"text": "b"}])
    with self.assertRaisesRegex(toolbench.RowError, rf"^{preds}:2: expected "):
      toolbench.read_predictions(preds)
    write_jsonl(preds, [{"response": "a"}, {"response": "b"}])
    with self.assertRaisesRegex(toolbench.RowError, rf"^{preds}: 2 predictions for 3 "):
      toolbench.read_predictions(preds, expected=3)

  def test_evaluate_predictions_with_limit(self):
    tmp = pathlib.Path(self.create_tempdir().full_path)
    refs = write_jsonl(tmp / "refs.jsonl", REFERENCES)
    preds = write_jsonl(tmp / "preds.jsonl", [{"response": p} for p in PREDICTIONS])
    r = evaluate.evaluate(None, f"toolbench:{refs}", evaluate.Options(limit=2),
                          predictions=preds)
    # The first two turns: both calls, both right: P1 F1 0.75, P2 F1 1.
    self.assertEqual((r.metrics["n"], r.metrics["Act.EM"]), (2, 1.0))
    self.assertAlmostEqual(r.metrics["F1"], 0.875)
    self.assertEqual(r.records[1]["where"], f"{refs}:2")
    with self.assertRaisesRegex(errors.ConfigError, "toolbench only"):
      evaluate.evaluate(None, f"gsm8k:{refs}", predictions=preds)


class LaunchTest(absltest.TestCase):

  def test_predictions_end_to_end(self):
    tmp = pathlib.Path(self.create_tempdir().full_path)
    refs = write_jsonl(tmp / "refs.jsonl", REFERENCES)
    preds = write_jsonl(tmp / "preds.jsonl", [{"response": p} for p in PREDICTIONS])
    out = tmp / "out" / "metrics.json"
    r = testutil.run_module("launch.eval", f"--eval_dataset=toolbench:{refs}",
                            f"--predictions={preds}", f"--output={out}")
    self.assertEqual(r.returncode, 0, r.stderr)
    metrics = json.loads(r.stdout.strip().splitlines()[-1])
    for key, want in EXPECTED.items():
      self.assertAlmostEqual(metrics[key], want, msg=key)
    self.assertTrue(all(0 <= metrics[k] <= 1 for k in toolbench.METRIC_KEYS))
    saved = json.loads(out.read_text())
    self.assertEqual(saved["metrics"]["Act.EM"], metrics["Act.EM"])
    self.assertLen(saved["records"], 6)
    self.assertTrue(saved["records"][2]["hallucinated"])
    # A predictions file for other references is a one-line error, before any model loads.
    write_jsonl(preds, [{"response": p} for p in PREDICTIONS[:4]])
    r = testutil.run_module("launch.eval", f"--eval_dataset=toolbench:{refs}",
                            f"--predictions={preds}")
    self.assertEqual(r.returncode, 2, r.stderr)
    self.assertNotIn("Traceback", r.stderr)
    self.assertEqual(r.stderr.strip(),
                     f"error: {preds}: 4 predictions for 6 references (one "
                     '{"response": ...} line per reference, in order)')


class GenerateTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    from swiftjax import infer  # pylint: disable=g-import-not-at-top
    testutil.require_default_model()
    cls.model = infer.load(None)

  def test_two_glaive_turns(self):
    from swiftjax import generate  # pylint: disable=g-import-not-at-top
    from swiftjax import infer  # pylint: disable=g-import-not-at-top
    path = testutil.require_shared("llamafactory", "data", "glaive_toolcall_en_demo.json")
    row = json.loads(path.read_text())[0]
    # Two turns, the longer prompt first: the answer after an observation, then the call.
    refs = [toolbench.reference_of(f"glaive[0]#{i}", t)
            for i, t in enumerate(toolbench.split_turns(row))][1:3][::-1]
    self.assertEqual([r.action.plan for r in refs], ["finish", "call"])
    outs = toolbench.generate_predictions(self.model, refs, "react", max_new_tokens=12,
                                          batch_size=2)
    self.assertLen(outs, 2)
    self.assertTrue(all(isinstance(o, str) and "Observation:" not in o for o in outs))
    # Batches are sorted by prompt length; the answers must come back in reference order.
    sampling = generate.SamplingConfig(max_new_tokens=12, temperature=0.0)
    want = infer.chat(self.model, [templates.to_chat(r.prompt, r.tools, "react") for r in refs],
                      sampling, stop=toolbench.STOP["react"])
    self.assertEqual(outs, want)
    self.assertNotEqual(outs[0], outs[1])
    m = toolbench.score(refs, outs)
    self.assertEqual(m["n"], 2)
    self.assertTrue(all(0 <= m[k] <= 1 for k in toolbench.METRIC_KEYS))


if __name__ == "__main__":
  absltest.main()
