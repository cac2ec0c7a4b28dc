"""Agent data: converters from ToolBench / ToolLLaMA / glaive / hermes rows, and the react /
toolbench / hermes templates rendered with the embedded SmolLM2 chat template."""

import glob
import json
import pathlib

from absl.testing import absltest
from absl.testing import parameterized

from swiftjax import errors
from swiftjax.agent import converters
from swiftjax.agent import templates
from swiftjax.data import formats
from swiftjax.data import render
from tests import testutil


def _toolbench_answers() -> list[tuple[str, dict]]:
  folder = testutil.require_shared("toolbench", "data_example", "answer")
  files = sorted(glob.glob(str(folder / "G*_answer" / "*.json")))
  return [(pathlib.Path(f).name, json.loads(pathlib.Path(f).read_text())) for f in files]


def _toolllama_rows() -> list[dict]:
  path = testutil.require_shared("toolbench", "toolllama_demo_b2384c2", "data", "toolllama",
                                 "processed_answer", "G1_demo_DFS_woFilter_w2.json")
  return json.loads(path.read_text())


def _glaive_rows() -> list[dict]:
  path = testutil.require_shared("llamafactory", "data", "glaive_toolcall_en_demo.json")
  return json.loads(path.read_text())


def _v1_rows() -> list[dict]:
  path = testutil.require_shared("llamafactory", "data", "reason_tool_use_demo_50.jsonl")
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _roles(row: dict, role: str) -> int:
  return sum(m["role"] == role for m in row["messages"])


def _calls(row: dict) -> list[dict]:
  return [json.loads(m["content"]) for m in row["messages"] if m["role"] == "tool_call"]


class ConvertersTest(absltest.TestCase):

  def _check_calls(self, row: dict, where: str, known_unlisted=frozenset()):
    """Every call is `{"name", "arguments": dict}` naming a listed tool."""
    names = set(converters.tool_names(row["tools"]))
    for call in _calls(row):
      self.assertEqual(set(call), {"name", "arguments"}, where)
      self.assertIsInstance(call["arguments"], dict, where)
      if call["name"] not in known_unlisted:
        self.assertIn(call["name"], names, where)

  def test_toolbench_answer_files(self):
    converted, unlisted = 0, set()
    for name, data in _toolbench_answers():
      gen = data["answer_generation"]
      if "train_messages" not in gen:
        self.assertFalse(gen["valid_data"])
        with self.assertRaisesRegex(ValueError, "no train_messages"):
          converters.to_messages(data)
        continue
      self.assertEqual(converters.detect_agent_format(data), "toolbench")
      row = converters.to_messages(data)
      raw = gen["train_messages"][-1]
      calls = [m["function_call"] for m in raw if m.get("function_call")]
      answers = [c for c in calls if c["name"] == "Finish" and
                 json.loads(c["arguments"]).get("return_type") == "give_answer"]
      self.assertEqual(_roles(row, "tool_call"), len(calls) - len(answers), name)
      self.assertEqual(_roles(row, "tool_response"),
                       sum(m["role"] == "function" for m in raw), name)
      self.assertEqual(_roles(row, "system"), 0, name)  # DFSDT prompt left to the template.
      self.assertEqual(converters.tool_names(row["tools"]), [f["name"] for f in gen["function"]])
      if answers:  # give_answer is the final assistant message.
        self.assertEqual(row["messages"][-1],
                         {"role": "assistant",
                          "content": json.loads(answers[-1]["arguments"])["final_answer"]})
      self.assertFalse(any(m["content"].endswith("Begin!") for m in row["messages"]))
      unlisted |= {c["name"] for c in _calls(row)} - set(converters.tool_names(row["tools"]))
      self._check_calls(row, name, known_unlisted=unlisted)
      converted += 1
    self.assertGreaterEqual(converted, 10)
    # The sample holds one real hallucinated call (a tool name, not a function): kept as is.
    self.assertLessEqual(len(unlisted), 1)

  def test_toolbench_query_rows(self):
    path = testutil.require_shared("stabletoolbench", "solvable_queries", "test_instruction",
                                   "G1_instruction.json")
    queries = json.loads(path.read_text())[:20]
    for q in queries:
      row = converters.to_messages(q)
      self.assertEqual([m["role"] for m in row["messages"]], ["user"])
      names = converters.tool_names(row["tools"])
      self.assertEqual(len(names), len(q["api_list"]) + 1)
      self.assertEqual(names[-1], "Finish")
      for api, tool in zip(q["api_list"], row["tools"]):
        params = tool["function"]["parameters"]
        self.assertLen(params["required"], len(api["required_parameters"]))
        self.assertLen(params["properties"],
                       len({p["name"] for p in api["required_parameters"] +
                            api["optional_parameters"]}))
    # ToolBench's own naming, checked on an answer file that lists its functions.
    self.assertEqual(converters.toolbench_tools([{
        "tool_name": "transitaires", "api_name": "Transitaire", "api_description": "x",
        "required_parameters": [{"name": "id", "type": "STRING", "description": "",
                                 "default": "A"}]}])[0]["function"]["parameters"]["required"],
                     ["is_id"])
    _, data = _toolbench_answers()[0]
    self.assertIn("transitaire_for_transitaires",
                  [f["name"] for f in data["answer_generation"]["function"]])

  def test_toolllama_conversations(self):
    rows = _toolllama_rows()
    for i, raw in enumerate(rows):
      self.assertEqual(converters.detect_agent_format(raw), "toolllama")
      self.assertEqual(formats.detect(raw), "toolllama")
      row = converters.to_messages(raw)
      actions = [m["value"] for m in raw["conversations"]
                 if m["from"] == "assistant" and "\nAction: " in m["value"]]
      finishes = [a for a in actions if "\nAction: Finish" in a]
      self.assertEqual(_roles(row, "tool_call"), len(actions) - len(finishes), i)
      self.assertEqual(_roles(row, "tool_response"),
                       sum(m["from"] == "function" for m in raw["conversations"]), i)
      self.assertIn("Finish", converters.tool_names(row["tools"]))
      self._check_calls(row, f"row {i}")
    # The last step finishes: its answer is the final assistant message.
    self.assertEqual(row["messages"][-1]["role"], "assistant")
    last = rows[-1]["conversations"][-1]["value"]
    self.assertEqual(row["messages"][-1]["content"],
                     json.loads(last.split("Action Input:", 1)[1])["final_answer"])
    got, skipped = formats.read_rows(testutil.require_shared(
        "toolbench", "toolllama_demo_b2384c2", "data", "toolllama", "processed_answer",
        "G1_demo_DFS_woFilter_w2.json"))
    self.assertEqual((len(got), skipped), (len(rows), 0))

  def test_glaive(self):
    rows = _glaive_rows()
    with_calls = 0
    for i, raw in enumerate(rows):
      self.assertEqual(formats.detect(raw), "sharegpt")  # The plain reader still takes them.
      row = converters.to_messages(raw)
      speakers = [m["from"] for m in raw["conversations"]]
      self.assertEqual(_roles(row, "tool_call"), speakers.count("function_call"), i)
      self.assertEqual(_roles(row, "tool_response"), speakers.count("observation"), i)
      self.assertEqual(converters.tool_names(row["tools"]),
                       [t["name"] for t in json.loads(raw["tools"])] if raw["tools"] else [])
      self._check_calls(row, f"row {i}")
      with_calls += "function_call" in speakers
    self.assertGreater(with_calls, 100)

  def test_hermes_parts_and_tool_turns(self):
    rows = _v1_rows()
    for i, raw in enumerate(rows):
      self.assertEqual(formats.detect(raw), "hermes")
      row = converters.to_messages(raw)
      parts = [p for m in raw["messages"] if isinstance(m["content"], list)
               for p in m["content"]]
      self.assertEqual(_roles(row, "tool_call"), sum(p["type"] == "tool_call" for p in parts))
      self.assertEqual(_roles(row, "tool_response"),
                       sum(m["role"] == "tool" for m in raw["messages"]))
      self._check_calls(row, f"row {i}")
    got, skipped = formats.read_rows(testutil.require_shared(
        "llamafactory", "data", "reason_tool_use_demo_50.jsonl"))
    self.assertEqual((len(got), skipped), (len(rows), 0))

  def test_hermes_text_round_trip(self):
    # Real glaive rows rendered as hermes chat text read back to the same calls and results.
    for raw in _glaive_rows()[:40]:
      row = converters.to_messages(raw)
      chat = templates.to_chat(row["messages"], row["tools"], "hermes")
      self.assertEqual(converters.detect_agent_format({"messages": chat}),
                       "hermes" if _roles(row, "tool_call") else None)
      back = converters.to_messages({"messages": chat}, "hermes")
      for role in ("tool_call", "tool_response", "user"):
        self.assertEqual([m for m in back["messages"] if m["role"] == role],
                         [m for m in row["messages"] if m["role"] == role])

  def test_openai_tool_calls_and_loss(self):
    row = converters.to_messages({"messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": "Let me look.", "loss": False, "tool_calls": [
            {"type": "function", "function": {"name": "w", "arguments": "{\"city\": \"Oslo\"}"}}]},
        {"role": "tool", "content": "rain"},
        {"role": "assistant", "content": "It rains."}], "tools": [{"name": "w"}]})
    self.assertEqual([m["role"] for m in row["messages"]],
                     ["user", "assistant", "tool_call", "tool_response", "assistant"])
    self.assertEqual(_calls(row), [{"name": "w", "arguments": {"city": "Oslo"}}])
    self.assertEqual([m.get("loss") for m in row["messages"]], [None, False, False, None, None])
    self.assertEqual(row["tools"][0]["type"], "function")

  def test_errors_name_the_place(self):
    with self.assertRaisesRegex(ValueError, r"message 1: .*Action Input of 'f'"):
      converters.to_messages({"conversations": [
          {"from": "user", "value": "q"},
          {"from": "assistant", "value": "Thought: t\nAction: f\nAction Input: [1, 2]"}]})
    with self.assertRaisesRegex(ValueError, r"message 1: .*no string 'name'"):
      converters.to_messages({"conversations": [
          {"from": "human", "value": "q"}, {"from": "function_call", "value": "{\"a\": 1}"},
          {"from": "gpt", "value": "x"}]}, "glaive")
    with self.assertRaisesRegex(ValueError, r"tools\[1\] has no string 'name'"):
      converters.normalize_tools([{"name": "a"}, {"description": "b"}])
    with self.assertRaisesRegex(ValueError, r"train_messages\[-1\] message 0: unknown role"):
      converters.to_messages({"answer_generation": {"train_messages": [[{"role": "bot"}]]}})
    with self.assertRaisesRegex(ValueError, "format 'nope'"):
      converters.to_messages({"messages": []}, "nope")
    path = pathlib.Path(self.create_tempdir().full_path) / "d.jsonl"
    good = {"conversations": [{"from": "user", "value": "q"},
                              {"from": "assistant", "value": "Thought: t\nAction: f\n"
                                                             "Action Input: {}"}]}
    bad = {"conversations": [{"from": "user", "value": "q"},
                             {"from": "assistant", "value": "Action: f\nAction Input: {oops"}]}
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with self.assertRaisesRegex(formats.RowError, rf"{path}:2: message 1: Action Input"):
      formats.read_rows(path)


class TemplatesTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    from swiftjax import assets  # pylint: disable=g-import-not-at-top
    from swiftjax import tokenizer  # pylint: disable=g-import-not-at-top
    testutil.require_default_model()
    cls.tok = tokenizer.load_tokenizer(assets.default_model_path())

  def _rows(self) -> list[dict]:
    answers = [d for _, d in _toolbench_answers() if "train_messages" in d["answer_generation"]]
    raws = answers[:2] + _toolllama_rows()[-1:] + _glaive_rows()[:12] + _v1_rows()[:4]
    return [converters.to_messages(r) for r in raws]

  @parameterized.parameters(*templates.TEMPLATES)
  def test_render_trains_exactly_the_assistant_text(self, template):
    for row in self._rows():
      chat = templates.to_chat(row["messages"], row["tools"], template)
      self.assertTrue({m["role"] for m in chat} <= {"system", "user", "assistant", "tool"})
      if row["tools"]:
        self.assertEqual(chat[0]["role"], "system")
        for name in converters.tool_names(row["tools"]):
          if name != "Finish" or template == "toolbench":
            self.assertIn(name, chat[0]["content"])
      ex = render.render(self.tok, chat)
      want = "".join(m["content"] + "<|im_end|>\n" for m in chat if m["role"] == "assistant")
      self.assertEqual(self.tok.decode(ex.input_ids[ex.weights > 0]), want)
      self.assertEqual(set(ex.weights.tolist()) - {0.0, 1.0}, set())
      # Every call and tool result made it into the text, in order.
      calls = _calls(row)
      text = "\n".join(m["content"] for m in chat)
      at = 0
      for call in calls:
        at = text.index(call["name"], at)
      self.assertEqual(sum(m["role"] == "tool" for m in chat), _roles(row, "tool_response"))

  @parameterized.parameters(*templates.TEMPLATES)
  def test_rows_without_tools_are_unchanged(self, template):
    rows = [converters.to_messages(r) for r in _glaive_rows()]
    plain = [r for r in rows if not r["tools"]]
    plain.append({"messages": [{"role": "system", "content": "Be brief."},
                               {"role": "user", "content": "Hi"},
                               {"role": "assistant", "content": "Hello.", "loss": True}],
                  "tools": None})
    for row in plain:
      chat = templates.to_chat(row["messages"], row["tools"], template)
      self.assertEqual(chat, row["messages"])
      self.assertIsNot(chat[0], row["messages"][0])
    ex = render.render(self.tok, templates.to_chat(plain[-1]["messages"], None, template))
    self.assertEqual(ex.text, render.render(self.tok, plain[-1]["messages"]).text)

  def test_react_shapes(self):
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Weather in Oslo and Rome?"},
                {"role": "assistant", "content": "Two cities."},
                {"role": "tool_call", "content": '{"name": "w", "arguments": {"city": "Oslo"}}'},
                {"role": "tool_call", "content": '{"name": "w", "arguments": {"city": "Rome"}}',
                 "loss": False},
                {"role": "tool_response", "content": "rain"},
                {"role": "tool_response", "content": "sun"},
                {"role": "assistant", "content": "Rain in Oslo, sun in Rome."}]
    tools = json.dumps([{"name": "w", "description": "Weather\nnow.",
                         "parameters": {"type": "object", "properties": {}, "optional": []}}])
    chat = templates.to_chat(messages, tools, "react")
    self.assertEqual([m["role"] for m in chat],
                     ["system", "user", "assistant", "tool", "tool", "assistant"])
    self.assertTrue(chat[0]["content"].startswith("Be brief.\n\n"))
    tool_lines = [ln for ln in chat[0]["content"].splitlines() if ln.startswith("w: ")]
    self.assertEqual(tool_lines, ['w: Weather now. | parameters: {"type": "object", '
                                  '"properties": {}}'])
    self.assertEqual(chat[2], {"role": "assistant", "loss": False, "content":
                               'Thought: Two cities.\nAction: w\nAction Input: {"city": "Oslo"}'
                               '\nAction: w\nAction Input: {"city": "Rome"}'})
    self.assertEqual(chat[3]["content"], "Observation: rain")
    self.assertEqual(chat[5]["content"],
                     "Thought: I now know the final answer\nFinal Answer: Rain in Oslo, sun in "
                     "Rome.")
    finish = templates.to_chat(messages, tools, "toolbench")[-1]["content"]
    self.assertEqual(json.loads(finish.split("Action Input: ", 1)[1]),
                     {"return_type": "give_answer", "final_answer": "Rain in Oslo, sun in Rome."})
    with self.assertRaisesRegex(errors.ConfigError, "agent template 'qwen'"):
      templates.to_chat(messages, tools, "qwen")
    with self.assertRaisesRegex(ValueError, "message 3: "):
      templates.to_chat(messages[:3] + [{"role": "tool_call", "content": "oops"}], tools, "react")


class RoundTripTest(parameterized.TestCase):
  """`format_call` / `format_final` read back by `swiftjax.agent.actions.parse`."""

  @parameterized.product(template=templates.TEMPLATES, thought=["", "Need the weather."])
  def test_call(self, template, thought):
    from swiftjax.agent import actions  # pylint: disable=g-import-not-at-top
    args = {"city": "São Paulo", "quote": 'say "hi"\nnow', "days": [1, 2], "opts": {"x": None}}
    text = templates.format_call(template, "get_weather", args, thought)
    act = actions.parse(text, template)
    self.assertEqual((act.plan, act.name), ("call", "get_weather"))
    self.assertEqual(json.loads(act.arguments), args)
    self.assertEqual(act.thought, thought)
    self.assertEqual(actions.parse(text).name, "get_weather")  # Detected without the template.

  @parameterized.parameters(*templates.TEMPLATES)
  def test_final_and_give_up(self, template):
    from swiftjax.agent import actions  # pylint: disable=g-import-not-at-top
    act = actions.parse(templates.format_final(template, "It is 4.\nDone."), template)
    self.assertEqual((act.plan, act.final_answer), ("finish", "It is 4.\nDone."))
    give_up = templates.format_call(template, "Finish", {"return_type": "give_up_and_restart"})
    self.assertEqual(actions.parse(give_up, template).plan, "give up")


if __name__ == "__main__":
  absltest.main()
