"""swiftjax/agent/tooldata.py and `python -m launch.tool_data`: the generated tool-use dataset is
deterministic, its held-out tools never reach training, calls fit their schemas and their
responses, and every row reads back through `swiftjax.data.formats.normalize`."""

import collections
import json
import pathlib
import random

from absl.testing import absltest

from swiftjax import errors
from swiftjax.agent import tooldata
from swiftjax.data import formats
from tests import testutil

_TYPES = {"string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,),
          "array": (list,), "object": (dict,)}


def schema_errors(value, schema: dict, path: str = "arguments") -> list[str]:
  """What is wrong with `value` under a JSON schema (the subset tool specs use)."""
  kind = schema.get("type")
  if kind not in _TYPES:
    return [f"{path}: schema has unknown type {kind!r}"]
  if (not isinstance(value, _TYPES[kind])
      or (isinstance(value, bool) and kind in ("integer", "number"))):
    return [f"{path}: expected {kind}, got {value!r}"]
  out = []
  if "enum" in schema and value not in schema["enum"]:
    out.append(f"{path}: {value!r} not in {schema['enum']}")
  if "minimum" in schema and value < schema["minimum"]:
    out.append(f"{path}: {value} < minimum {schema['minimum']}")
  if "maximum" in schema and value > schema["maximum"]:
    out.append(f"{path}: {value} > maximum {schema['maximum']}")
  if kind == "array":
    for i, item in enumerate(value):
      out += schema_errors(item, schema["items"], f"{path}[{i}]")
  if kind == "object":
    props = schema.get("properties", {})
    out += [f"{path}: missing required {k!r}" for k in schema.get("required", ())
            if k not in value]
    for k, v in value.items():
      out += (schema_errors(v, props[k], f"{path}.{k}") if k in props
              else [f"{path}: unknown argument {k!r}"])
  return out


def calls(row: dict) -> list[dict]:
  return [json.loads(m["content"]) for m in row["messages"] if m["role"] == "tool_call"]


def leaves(value):
  if isinstance(value, list):
    for v in value:
      yield from leaves(v)
  else:
    yield value


class ToolDataTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.split = tooldata.split_tools(0)
    cls.rows = {s: tooldata.generate(n, s, seed=0)
                for s, n in (("train", 400), ("valid", 100), ("test", 300))}

  def test_schema_checker_catches_bad_arguments(self):
    spec = tooldata.TOOLS["get_weather_forecast"].spec()["function"]["parameters"]
    self.assertEqual(schema_errors({"location": "Oslo", "days": 3}, spec), [])
    self.assertNotEqual(schema_errors({"location": "Oslo"}, spec), [])  # days is required
    self.assertNotEqual(schema_errors({"location": "Oslo", "days": "3"}, spec), [])
    self.assertNotEqual(schema_errors({"location": "Oslo", "days": 3, "units": "kelvin"},
                                      spec), [])
    self.assertNotEqual(schema_errors({"location": "Oslo", "days": 9}, spec), [])
    self.assertNotEqual(schema_errors({"location": "Oslo", "days": 3, "city": "x"}, spec), [])

  def test_registry_specs_and_implementations(self):
    self.assertGreaterEqual(len(tooldata.TOOLS), 40)
    self.assertGreaterEqual(len({t.domain for t in tooldata.TOOLS.values()}), 15)
    rng = random.Random(0)
    for name, tool in tooldata.TOOLS.items():
      spec = tool.spec()
      self.assertEqual(spec["type"], "function")
      params = spec["function"]["parameters"]
      self.assertTrue(set(params["required"]) <= set(params["properties"]), name)
      self.assertGreaterEqual(len(tool.questions), 3, name)
      for _ in range(15):
        args = tool.sample(rng)
        self.assertEqual(schema_errors(args, params), [], name)
        result = tool.run(args)
        self.assertNotIn("error", result, (name, args))
        self.assertEqual(json.loads(json.dumps(result)), result)  # plain JSON
        self.assertEqual(tool.run(json.loads(json.dumps(args))), result)  # deterministic

  def test_fake_tools_agree_with_each_other(self):
    run = lambda name, **kw: tooldata.TOOLS[name].run(kw)  # pylint: disable=unnecessary-lambda-assignment
    paris = run("geocode_city", city="Paris")
    self.assertAlmostEqual(paris["latitude"], 48.8566)
    by_city = run("get_current_weather", location="Paris")
    by_point = run("get_weather_by_coordinates", latitude=paris["latitude"],
                   longitude=paris["longitude"])
    self.assertEqual(by_city["temperature"], by_point["temperature"])
    hot = run("get_current_weather", location="Paris", units="fahrenheit")["temperature"]
    self.assertEqual(hot, round(by_city["temperature"] * 9 / 5 + 32))
    self.assertEqual(run("convert_currency", amount=100, from_currency="USD",
                         to_currency="EUR")["converted_amount"], 92.0)
    self.assertEqual(run("convert_units", value=10, from_unit="miles",
                         to_unit="kilometers")["result"], 16.093)
    self.assertEqual(run("convert_temperature", value=100, from_scale="celsius",
                         to_scale="fahrenheit")["result"], 212.0)
    self.assertEqual(run("calculate", expression="(12 + 7) * 3")["result"], 57)
    self.assertIn("error", run("calculate", expression="__import__('os')"))
    self.assertEqual(run("solve_quadratic", a=1, b=-5, c=6)["roots"], [2, 3])
    self.assertEqual(run("convert_time", time="23:30", from_timezone="Europe/London",
                         to_timezone="Asia/Tokyo"), {
                             "converted_time": "08:30", "from_timezone": "Europe/London",
                             "to_timezone": "Asia/Tokyo", "day_offset": 1})
    stats = run("compute_statistics", numbers=[2, 4, 4, 4, 5, 5, 7, 9])
    self.assertEqual((stats["mean"], stats["median"], stats["std_dev"]), (5.0, 4.5, 2.14))
    found = run("search_recipes", ingredient="tofu", diet="vegan")["recipes"]
    details = run("get_recipe_details", recipe_id=found[0]["recipe_id"])
    self.assertEqual((details["name"], details["time_minutes"]),
                     (found[0]["name"], found[0]["time_minutes"]))
    place = run("search_restaurants", city="Lisbon", cuisine="thai")["restaurants"][0]
    booking = run("book_restaurant", restaurant_id=place["restaurant_id"], date="2025-05-01",
                  time="19:00", party_size=2)
    self.assertEqual(booking["restaurant"], place["name"])
    self.assertEqual(run("translate_text", text="Merci beaucoup",
                         target_language="German")["translated_text"], "Vielen Dank")

  def test_same_seed_same_rows_other_seed_other_rows(self):
    self.assertEqual(tooldata.generate(400, "train", seed=0), self.rows["train"])
    self.assertEqual(tooldata.generate(50, "test", seed=0), tooldata.generate(50, "test", 0))
    self.assertNotEqual(tooldata.generate(50, "train", seed=0),
                        tooldata.generate(50, "train", seed=1))
    self.assertNotEqual(tooldata.generate(50, "train", seed=0),
                        tooldata.generate(50, "valid", seed=0))
    self.assertNotEqual(tooldata.split_tools(0).test, tooldata.split_tools(1).test)

  def test_held_out_tools_never_reach_training(self):
    train, test = set(self.split.train), set(self.split.test)
    self.assertFalse(train & test)
    self.assertEqual(train | test, set(tooldata.TOOLS))
    self.assertAlmostEqual(len(test) / len(tooldata.TOOLS), 0.25, delta=0.03)
    self.assertGreaterEqual(len({tooldata.TOOLS[t].domain for t in test}), 8)
    for split, allowed in (("train", train), ("valid", train), ("test", test)):
      offered = {t["function"]["name"] for r in self.rows[split] for t in r["tools"]}
      called = {c["name"] for r in self.rows[split] for c in calls(r)}
      self.assertTrue(offered <= allowed, (split, offered - allowed))
      self.assertTrue(called <= allowed, (split, called - allowed))
    self.assertEqual({c["name"] for r in self.rows["test"] for c in calls(r)}, test)
    # The knowledge questions of the test split's no-tool rows are held out too.
    fact_questions = {q for qs, _, _ in tooldata.FACTS for q in qs}
    asked = {s: {r["messages"][0]["content"] for r in self.rows[s] if r["kind"] == "none"}
             & fact_questions for s in ("train", "test")}
    self.assertTrue(asked["test"])
    self.assertFalse(asked["train"] & asked["test"])

  def test_rows_are_distinct_and_valid_asks_other_questions(self):
    for split, rows in self.rows.items():
      keys = {json.dumps([r["messages"], r["tools"]]) for r in rows}
      self.assertLen(keys, len(rows), split)
    questions = {s: {r["messages"][0]["content"] for r in self.rows[s]}
                 for s in ("train", "valid")}
    self.assertFalse(questions["train"] & questions["valid"])
    self.assertTrue(all(tooldata.question_split(q) == "valid" for q in questions["valid"]))

  def test_calls_use_offered_tools_and_fit_their_schemas(self):
    for split, rows in self.rows.items():
      for i, row in enumerate(rows):
        specs = {t["function"]["name"]: t["function"]["parameters"] for t in row["tools"]}
        self.assertLen(specs, len(row["tools"]))  # no tool offered twice
        for call in calls(row):
          self.assertEqual(set(call), {"name", "arguments"})
          self.assertIn(call["name"], specs, (split, i))
          self.assertEqual(schema_errors(call["arguments"], specs[call["name"]]), [],
                           (split, i, call))

  def test_kind_mix_and_shapes(self):
    for split, rows in self.rows.items():
      counts = collections.Counter(r["kind"] for r in rows)
      for kind, share in tooldata.MIX:
        self.assertAlmostEqual(counts[kind] / len(rows), share, delta=0.02, msg=(split, kind))
      for row in rows:
        n_calls = {"single": 1, "multi": 2, "none": 0}[row["kind"]]
        self.assertLen(calls(row), n_calls)
        self.assertBetween(len(row["tools"]) - n_calls, 2, 4)
        roles = [m["role"] for m in row["messages"]]
        self.assertEqual(roles[0], "user")
        self.assertEqual(roles[-1], "assistant")
        self.assertEqual(roles.count("tool_response"), n_calls)
        for a, b in zip(roles, roles[1:]):
          if a == "tool_call":
            self.assertEqual(b, "tool_response")
    # Thoughts are there most of the time, not always; distractor counts vary.
    rows = self.rows["train"]
    thought = [r["messages"][1]["role"] == "assistant" for r in rows if r["kind"] == "single"]
    self.assertBetween(sum(thought) / len(thought), 0.75, 0.95)
    self.assertLen({len(r["tools"]) for r in rows if r["kind"] == "single"}, 3)

  def test_no_single_opening_dominates_the_assistant_turns(self):
    # Rendered with react, every assistant turn opens with "Thought: ..."; when final answers
    # had no thought of their own, half of all turns opened with the template's fixed one and a
    # LoRA run learnt to open every turn with it (and never call a tool).
    from swiftjax.agent import templates  # pylint: disable=g-import-not-at-top
    openings = collections.Counter()
    for row in self.rows["train"]:
      for m in templates.to_chat(row["messages"], row["tools"], "react"):
        if m["role"] == "assistant":
          openings[m["content"].split("\n")[0]] += 1
    top, count = openings.most_common(1)[0]
    self.assertLess(count / sum(openings.values()), 0.1, top)
    # Each kind's answer usually comes with its own thought.
    for kind in ("single", "multi", "none"):
      rows = [r for r in self.rows["train"] if r["kind"] == kind]
      share = sum(r["messages"][-2]["role"] == "assistant" for r in rows) / len(rows)
      self.assertBetween(share, 0.75, 0.95, kind)

  def test_rows_normalize_and_responses_match_calls(self):
    for split, rows in self.rows.items():
      for row in rows:
        norm = formats.normalize(json.loads(json.dumps(row, ensure_ascii=False)))
        self.assertEqual(norm["messages"], row["messages"])
        self.assertEqual(norm["tools"], row["tools"])
        msgs = row["messages"]
        for j, m in enumerate(msgs):
          if m["role"] == "tool_call":
            call = json.loads(m["content"])
            expected = tooldata.TOOLS[call["name"]].run(call["arguments"])
            self.assertEqual(json.loads(msgs[j + 1]["content"]), expected)
            self.assertNotIn("error", expected, (split, call))

  def test_arguments_come_from_the_question_or_earlier_responses(self):
    numbers = found = 0
    for rows in self.rows.values():
      for row in rows:
        context = row["messages"][0]["content"].lower()
        for m in row["messages"][1:]:
          if m["role"] == "tool_call":
            for v in (x for arg in json.loads(m["content"])["arguments"].values()
                      for x in leaves(arg)):
              if isinstance(v, str):
                self.assertTrue(v.lower() in context or v.replace("_", " ").lower() in context,
                                (v, context))
              else:
                numbers += 1
                found += tooldata._show(v) in context  # pylint: disable=protected-access
          elif m["role"] == "tool_response":
            context += " " + m["content"].lower()
    self.assertGreater(found / numbers, 0.95)

  def test_second_call_uses_the_first_response(self):
    multi = [r for r in self.rows["test"] + self.rows["train"] if r["kind"] == "multi"]
    self.assertNotEmpty(multi)
    only_there = 0
    for row in multi:
      msgs = row["messages"]
      question = msgs[0]["content"]
      first = next(m["content"] for m in msgs if m["role"] == "tool_response")
      linked = [v for arg in calls(row)[1]["arguments"].values() for v in leaves(arg)
                if json.dumps(v, ensure_ascii=False) in first]
      self.assertNotEmpty(linked, msgs)
      only_there += any(str(v) not in question for v in linked)
    # Mostly a value the question does not contain (a ticker equal to its company name can be).
    self.assertGreater(only_there / len(multi), 0.95)

  def test_question_templates_mention_every_optional_argument(self):
    for name, tool in tooldata.TOOLS.items():
      optional = set(tool.properties) - set(tool.required)
      for template in tool.questions:
        missing = [k for k in optional if "{" + k + "}" not in template]
        self.assertEqual(missing, [], (name, template))

  def test_errors(self):
    with self.assertRaisesRegex(errors.ConfigError, "unknown split 'dev'"):
      tooldata.generate(3, "dev")
    with self.assertRaisesRegex(errors.ConfigError, ">= 0"):
      tooldata.generate(-1, "train")
    self.assertEqual(tooldata.generate(0, "test"), [])
    for bad in ((3, 1), (-1, 2), (1,), (1, 2, 3), (1.0, 2), "12", None):
      with self.assertRaisesRegex(errors.ConfigError, "0 <= min <= max", msg=bad):
        tooldata.generate(3, "train", distractors=bad)

  def test_distractor_range_changes_only_the_offered_tools(self):
    # The default range draws exactly the rows drawn without the argument.
    self.assertEqual(tooldata.generate(400, "train", 0, distractors=(2, 4)), self.rows["train"])
    for lo, hi in ((0, 0), (1, 2), (5, 6)):
      for split in ("train", "test"):
        rows = tooldata.generate(120, split, seed=0, distractors=(lo, hi))
        extra = {(r["kind"] == "none", len(r["tools"]) - len(calls(r))) for r in rows}
        self.assertEqual({n for none, n in extra if not none}, set(range(lo, hi + 1)), (lo, hi))
        # A no-tool row still offers tools (at least one).
        self.assertEqual({n for none, n in extra if none}, set(range(max(lo, 1), max(hi, 1) + 1)))
        for row in rows:
          names = [t["function"]["name"] for t in row["tools"]]
          self.assertLen(set(names), len(names))
          self.assertTrue({c["name"] for c in calls(row)} <= set(names))


class LaunchToolDataTest(absltest.TestCase):

  def _assert_one_line_error(self, r, pattern):
    self.assertEqual(r.returncode, 2, r.stderr)
    self.assertNotIn("Traceback", r.stderr)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    self.assertLen(lines, 1, r.stderr)
    self.assertRegex(lines[0], pattern)

  def test_writes_splits_refuses_non_empty_dir_and_overwrites(self):
    tmp = pathlib.Path(self.create_tempdir().full_path)
    args = ["--train=40", "--valid=10", "--test=20", "--seed=3"]
    r = testutil.run_module("launch.tool_data", f"--output_dir={tmp / 'a'}", *args)
    self.assertEqual(r.returncode, 0, r.stderr)
    self.assertEqual(json.loads(r.stdout)["test"], 20)
    self.assertEqual(sorted(p.name for p in (tmp / "a").iterdir()), sorted(tooldata.FILES))
    for name, n in (("train", 40), ("valid", 10), ("test", 20)):
      rows, _ = formats.read_rows(tmp / "a" / f"{name}.jsonl")
      self.assertLen(rows, n)
    meta = json.loads((tmp / "a" / "tools.json").read_text())
    self.assertEqual(meta["seed"], 3)
    self.assertEqual(meta["test"], list(tooldata.split_tools(3).test))
    self.assertFalse(set(meta["train"]) & set(meta["test"]))
    before = {p.name: p.read_bytes() for p in (tmp / "a").iterdir()}
    # Same seed, library call into another directory: byte-identical files.
    tooldata.write_splits(tmp / "b", 40, 10, 20, seed=3)
    self.assertEqual({p.name: p.read_bytes() for p in (tmp / "b").iterdir()}, before)
    # A non-empty directory is refused in one line, then replaced with --overwrite.
    self._assert_one_line_error(
        testutil.run_module("launch.tool_data", f"--output_dir={tmp / 'a'}", *args),
        r"^error: output directory .*a is not empty; pass --overwrite")
    r = testutil.run_module("launch.tool_data", f"--output_dir={tmp / 'a'}", "--train=5",
                            "--valid=0", "--test=5", "--seed=3", "--overwrite")
    self.assertEqual(r.returncode, 0, r.stderr)
    self.assertLen((tmp / "a" / "train.jsonl").read_text().splitlines(), 5)
    self.assertEqual((tmp / "a" / "valid.jsonl").read_text(), "")
    self.assertFalse(list((tmp / "a").glob("*.tmp")))

  def test_distractors_flag_makes_shorter_rows_that_still_validate(self):
    tmp = pathlib.Path(self.create_tempdir().full_path)
    args = ["--train=120", "--valid=0", "--test=60", "--seed=0"]
    r = testutil.run_module("launch.tool_data", f"--output_dir={tmp / 'short'}",
                            "--distractors=1,2", *args)
    self.assertEqual(r.returncode, 0, r.stderr)
    self.assertEqual(json.loads(r.stdout)["distractors"], [1, 2])
    self.assertEqual(json.loads((tmp / "short" / "tools.json").read_text())["distractors"],
                     [1, 2])
    tooldata.write_splits(tmp / "default", 120, 0, 60, seed=0)
    for split in ("train", "test"):
      rows, _ = formats.read_rows(tmp / "short" / f"{split}.jsonl")
      self.assertLen(rows, {"train": 120, "test": 60}[split])
      offered = collections.Counter((len(calls(r)), len(r["tools"])) for r in rows)
      single = {n for n_calls, n in offered if n_calls == 1}
      self.assertEqual(single, {2, 3}, offered)  # the called tool plus 1 or 2 others
      self.assertEqual({n for n_calls, n in offered if n_calls == 2}, {3, 4}, offered)
      self.assertEqual({n for n_calls, n in offered if n_calls == 0}, {1, 2}, offered)
      for row in rows:
        specs = {t["function"]["name"]: t["function"]["parameters"] for t in row["tools"]}
        for call in calls(row):
          self.assertEqual(schema_errors(call["arguments"], specs[call["name"]]), [], call)
          self.assertNotIn("error", tooldata.TOOLS[call["name"]].run(call["arguments"]))
      short = (tmp / "short" / f"{split}.jsonl").stat().st_size
      self.assertLess(short, 0.85 * (tmp / "default" / f"{split}.jsonl").stat().st_size)
    self._assert_one_line_error(
        testutil.run_module("launch.tool_data", f"--output_dir={tmp / 'bad'}",
                            "--distractors=3,1", *args),
        r"^error: --distractors must be MIN,MAX with 0 <= MIN <= MAX, got '3,1'")
    self.assertFalse((tmp / "bad").exists())


if __name__ == "__main__":
  absltest.main()
