"""swiftjax.data.loss_scale with render: weights checked token by token on rendered examples.

Expected weights are built from the decoded tokens themselves (each token's text and where it
starts in its turn), by a line-by-line reading of the react format and plain string searches,
not by calling the code under test.
"""

import json
import pathlib

from absl.testing import absltest
import numpy as np

from swiftjax import errors
from swiftjax.data import loss_scale
from swiftjax.data import render
from tests import testutil

REACT_KEYS = {"Thought:": (1.0, 1.0), "Action:": (2.0, 2.0), "Action Input:": (2.0, 2.0),
              "Final Answer:": (1.0, 1.0), "Observation:": (2.0, 0.0)}
CALL = ('Thought: I should look up the weather.\nAction: get_weather\n'
        'Action Input: {"city": "Paris"}')
FINAL = "Thought: I know the answer.\nFinal Answer: It is sunny in Paris."


def _turns(pieces):
  """Splits decoded tokens into chat turns (`<|im_start|>role\\ncontent<|im_end|>\\n`).

  Returns:
    A list of dicts: `role`, `header` (token indices of `<|im_start|>role\\n`), `content`
    (indices of the content tokens) and `end` (indices of `<|im_end|>` and the newline after).
  """
  turns, cur, part = [], None, None
  for i, p in enumerate(pieces):
    if p == "<|im_start|>":
      cur = {"role": "", "header": [i], "content": [], "end": []}
      turns.append(cur)
      part = "header"
    elif part == "header":
      cur["header"].append(i)
      if p == "\n":
        part = "content"
      else:
        cur["role"] += p
    elif p == "<|im_end|>":
      cur["end"].append(i)
      part = "end"
    elif part == "end":
      assert p == "\n", pieces[i - 3:i + 3]
      cur["end"].append(i)
      part = None
    else:
      cur["content"].append(i)
  return turns


def _starts(pieces, idx):
  """Where each token of `idx` starts inside the text the tokens of `idx` spell."""
  out, at = [], 0
  for i in idx:
    out.append(at)
    at += len(pieces[i])
  return out


def _react_expected(pieces, idx, keys=REACT_KEYS):
  """Weights of a react content's tokens, reading it line by line: a line that starts with a
  key opens a section; the key's characters take the key weight, the rest of the section
  (following lines included, up to the next key) the content weight."""
  content = "".join(pieces[i] for i in idx)
  line_weights = []  # per line: (key length, key weight, content weight)
  section = (0, 1.0, 1.0)
  for line in content.split("\n"):
    key = max((k for k in keys if line.startswith(k)), key=len, default=None)
    section = (len(key), *keys[key]) if key else (0, section[2], section[2])
    line_weights.append(section)
  out = []
  for at in _starts(pieces, idx):
    line_no = content.count("\n", 0, at)
    line_start = content.rfind("\n", 0, at) + 1  # a newline token ends its own line
    key_len, wk, wc = line_weights[line_no]
    out.append(wk if at - line_start < key_len else wc)
  return out


class LossScaleRenderTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    from swiftjax import tokenizer  # pylint: disable=g-import-not-at-top
    cls.tok = tokenizer.load_tokenizer(testutil.require_default_model())

  def _render(self, messages, spec):
    ex = render.render(self.tok, messages, loss_scale=spec)
    pieces = [self.tok.decode([int(i)]) for i in ex.input_ids]
    self.assertEqual("".join(pieces), ex.text)  # the pieces spell the text exactly
    self.assertEqual(ex.weights.dtype, np.float32)
    self.assertEqual(ex.weights.shape, ex.input_ids.shape)
    return ex, pieces, _turns(pieces)

  def _agent_row(self):
    return [{"role": "user", "content": "What is the weather in Paris?"},
            {"role": "assistant", "content": CALL},
            {"role": "tool", "content": "Observation: sunny, 21 C"},
            {"role": "assistant", "content": FINAL}]

  def test_react_token_by_token(self):
    ex, pieces, turns = self._render(self._agent_row(), "react")
    expected = np.zeros(len(pieces), np.float32)
    for t in turns:
      if t["role"] == "assistant":
        expected[t["content"]] = _react_expected(pieces, t["content"])
        expected[t["end"]] = 1.0
    np.testing.assert_array_equal(ex.weights, expected)
    # Spot checks on the token strings themselves.
    w = dict(zip(range(len(pieces)), ex.weights))
    action = [i for i, p in enumerate(pieces) if p == "Action"]
    self.assertLen(action, 2)
    self.assertTrue(all(w[i] == 2.0 and w[i + 1] == 2.0 for i in action))  # Action / ' Input'
    self.assertEqual(w[pieces.index("weather", action[0])], 2.0)  # the tool name
    self.assertEqual(w[pieces.index("Paris", action[1])], 2.0)  # the arguments
    thought = [i for i, p in enumerate(pieces) if p == "Th"]
    self.assertTrue(thought and all(w[i] == 1.0 for i in thought))
    self.assertEqual(int((ex.weights == 2.0).sum()) > 10, True)
    # The same tokens are trained as without a loss scale; only their weights differ.
    plain = render.render(self.tok, self._agent_row())
    np.testing.assert_array_equal(plain.weights > 0, ex.weights > 0)
    self.assertEqual(set(np.unique(plain.weights)), {0.0, 1.0})

  def test_observation_content_is_zero(self):
    # ms-swift's react responses carry the observation inline: key 2, its content 0.
    content = CALL + "\nObservation: sunny, 21 C\n" + FINAL
    ex, pieces, turns = self._render([{"role": "user", "content": "Weather in Paris?"},
                                      {"role": "assistant", "content": content}], "react")
    (t,) = [t for t in turns if t["role"] == "assistant"]
    np.testing.assert_array_equal(ex.weights[t["content"]],
                                  _react_expected(pieces, t["content"]))
    obs = pieces.index("Obs")
    self.assertEqual(list(ex.weights[obs:obs + 3]), [2.0, 2.0, 2.0])  # 'Obs' 'ervation' ':'
    self.assertEqual(pieces[obs + 3], " sunny")
    self.assertEqual(ex.weights[obs + 3], 0.0)
    nxt = pieces.index("Th", obs)
    self.assertTrue(np.all(ex.weights[obs + 3:nxt] == 0.0))
    self.assertEqual(ex.weights[nxt], 1.0)

  def test_all_trains_every_token(self):
    ex, pieces, turns = self._render(self._agent_row(), "all")
    np.testing.assert_array_equal(ex.weights, np.ones(len(pieces), np.float32))
    self.assertEqual(turns[0]["role"], "system")  # the template's own system prompt is trained
    # all+react: the tool turn is trained too, and its observation content is not.
    ex, pieces, turns = self._render(self._agent_row(), "all+react")
    for t in turns:
      idx = t["header"] + t["end"]
      np.testing.assert_array_equal(ex.weights[idx], np.ones(len(idx)))
      want = (_react_expected(pieces, t["content"]) if t["role"] in ("assistant", "tool")
              else [1.0] * len(t["content"]))
      np.testing.assert_array_equal(ex.weights[t["content"]], want, err_msg=t["role"])
    (tool,) = [t for t in turns if t["role"] == "tool"]
    self.assertEqual([pieces[i] for i in tool["content"] if ex.weights[i] == 0.0],
                     [" sunny", ",", " ", "2", "1", " C"])
    # A `loss: False` message stays untrained under `all`.
    rows = self._agent_row()
    rows[2] = dict(rows[2], loss=False)
    ex, pieces, turns = self._render(rows, "all")
    (tool,) = [t for t in turns if t["role"] == "tool"]
    whole = tool["header"] + tool["content"] + tool["end"]
    self.assertTrue(np.all(ex.weights[whole] == 0))
    self.assertEqual(int((ex.weights == 0).sum()), len(whole))

  def _two_rounds(self):
    return [{"role": "user", "content": "Hi, who are you?"},
            {"role": "assistant", "content": "Thought: greet back.\nFinal Answer: I am a bot."},
            *self._agent_row()]

  def test_last_round(self):
    ex, pieces, turns = self._render(self._two_rounds(), "last_round")
    asst = [t for t in turns if t["role"] == "assistant"]
    self.assertLen(asst, 3)
    first = asst[0]["header"] + asst[0]["content"] + asst[0]["end"]
    self.assertTrue(np.all(ex.weights[first] == 0))
    for t in asst[1:]:  # both turns after the last user message (call and final answer)
      self.assertTrue(np.all(ex.weights[t["content"] + t["end"]] == 1))
    default = render.render(self.tok, self._two_rounds())
    self.assertTrue(np.all(default.weights[first[len(asst[0]["header"]):]] == 1))
    # A `loss: True` still forces an earlier turn in.
    rows = self._two_rounds()
    rows[1] = dict(rows[1], loss=True)
    forced = render.render(self.tok, rows, loss_scale="last_round")
    np.testing.assert_array_equal(forced.weights, default.weights)

  def test_last_round_plus_react(self):
    ex, pieces, turns = self._render(self._two_rounds(), "last_round+react")
    asst = [t for t in turns if t["role"] == "assistant"]
    expected = np.zeros(len(pieces), np.float32)
    for t in asst[1:]:
      expected[t["content"]] = _react_expected(pieces, t["content"])
      expected[t["end"]] = 1.0
    np.testing.assert_array_equal(ex.weights, expected)
    self.assertGreater(int((ex.weights == 2.0).sum()), 10)
    # The base strategy may come anywhere in the chain.
    np.testing.assert_array_equal(
        render.render(self.tok, self._two_rounds(), loss_scale="react+last_round").weights,
        ex.weights)

  def _content_weights_by_span(self, pieces, idx, spans, inside, outside=1.0):
    """`inside` for tokens starting inside any `[a, b)` of the content text, else `outside`."""
    return [inside if any(a <= s < b for a, b in spans) else outside
            for s in _starts(pieces, idx)]

  def test_json_file_with_regex_keys(self):
    path = pathlib.Path(self.create_tempdir().full_path) / "scale.json"
    path.write_text(json.dumps({"<tool_call>.+?</tool_call>": [3.0], r" sorry\b": [0.0]}))
    content = ('Let me check, sorry.\n<tool_call>\n{"name": "get_weather", "arguments": '
               '{"city": "Paris"}}\n</tool_call>')
    rows = [{"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": content}]
    ex, pieces, turns = self._render(rows, str(path))
    (t,) = [t for t in turns if t["role"] == "assistant"]
    text = "".join(pieces[i] for i in t["content"])
    a, b = text.index("<tool_call>"), text.index("</tool_call>") + len("</tool_call>")
    want = self._content_weights_by_span(pieces, t["content"], [(a, b)], 3.0)
    s = text.index(" sorry")
    want = [0.0 if s <= at < s + 6 else w for at, w in zip(_starts(pieces, t["content"]), want)]
    np.testing.assert_array_equal(ex.weights[t["content"]], want)
    self.assertIn(0.0, want)
    self.assertEqual(want.count(3.0), sum(1 for at in _starts(pieces, t["content"])
                                          if a <= at < b))
    np.testing.assert_array_equal(ex.weights[t["end"]], [1.0, 1.0])
    # The built-in hermes strategy weighs the same block 2.
    hermes = render.render(self.tok, rows, loss_scale="hermes")
    np.testing.assert_array_equal(
        hermes.weights[t["content"]],
        self._content_weights_by_span(pieces, t["content"], [(a, b)], 2.0))

  def test_json_file_with_literal_keys_and_chain(self):
    path = pathlib.Path(self.create_tempdir().full_path) / "scale.json"
    path.write_text(json.dumps({"Final Answer:": [0.0, 3.0]}))
    rows = [{"role": "user", "content": "Weather?"}, {"role": "assistant", "content": FINAL}]
    ex, pieces, turns = self._render(rows, f"react+{path}")
    (t,) = [t for t in turns if t["role"] == "assistant"]
    react = _react_expected(pieces, t["content"])
    mine = _react_expected(pieces, t["content"], {"Final Answer:": (0.0, 3.0)})
    np.testing.assert_array_equal(ex.weights[t["content"]], np.multiply(react, mine))
    self.assertIn(3.0, ex.weights)
    self.assertIn(0.0, ex.weights[t["content"]])

  def test_ignore_empty_think(self):
    rows = [{"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "<think>\n\n</think>\n\nThe answer is 4."},
            {"role": "user", "content": "3+3?"},
            {"role": "assistant", "content": "<think>\nAdd them.\n</think>\n\nIt is 6."}]
    ex, pieces, turns = self._render(rows, "ignore_empty_think")
    empty, full = [t for t in turns if t["role"] == "assistant"]
    text = "".join(pieces[i] for i in empty["content"])
    block = len("<think>\n\n</think>\n\n")
    self.assertTrue(text.startswith("<think>\n\n</think>\n\n"))
    np.testing.assert_array_equal(
        ex.weights[empty["content"]],
        self._content_weights_by_span(pieces, empty["content"], [(0, block)], 0.0))
    self.assertIn(1.0, ex.weights[empty["content"]])
    self.assertTrue(np.all(ex.weights[full["content"] + full["end"]] == 1))

  def test_message_loss_scale_and_agentflan_query(self):
    rows = [{"role": "user", "content": "What is the tool you want to use?"},
            {"role": "assistant", "content": "get_weather", "loss_scale": 0.5}]
    ex, pieces, turns = self._render(rows, "agentflan")
    (t,) = [t for t in turns if t["role"] == "assistant"]
    np.testing.assert_array_equal(ex.weights[t["content"]], [1.5] * len(t["content"]))
    np.testing.assert_array_equal(ex.weights[t["end"]], [0.5, 0.5])
    ex = render.render(self.tok, rows)  # without a strategy only the message factor applies
    np.testing.assert_array_equal(ex.weights[t["content"] + t["end"]],
                                  [0.5] * len(t["content"] + t["end"]))
    with self.assertRaisesRegex(errors.ConfigError, "message 1 .*loss_scale"):
      render.render(self.tok, [rows[0], dict(rows[1], loss_scale="high")])

  def test_default_is_unchanged(self):
    rows = self._two_rounds()
    a = render.render(self.tok, rows)
    for spec in ("default", loss_scale.parse_spec("default")):
      b = render.render(self.tok, rows, loss_scale=spec)
      np.testing.assert_array_equal(a.weights, b.weights)
    text, spans = render.trained_spans(self.tok, rows)
    self.assertEqual(text, a.text)
    self.assertLen(spans, 3)


class ParseSpecTest(absltest.TestCase):

  def test_names_and_composition(self):
    self.assertEqual(loss_scale.parse_spec(None), loss_scale.LossScale())
    s = loss_scale.parse_spec("last_round+react+ignore_empty_think")
    self.assertEqual(s.base, "last_round")
    self.assertEqual([r.name for r in s.rules], ["react", "ignore_empty_think"])
    for name in ("default", "last_round", "all", "react", "agentflan", "hermes",
                 "ignore_empty_think"):
      self.assertIsInstance(loss_scale.parse_spec(name), loss_scale.LossScale)

  def test_errors(self):
    with self.assertRaisesRegex(errors.ConfigError,
                                "unknown strategy 'reactt'.*default, last_round, all, react"):
      loss_scale.parse_spec("last_round+reactt")
    with self.assertRaisesRegex(errors.ConfigError, "two base strategies"):
      loss_scale.parse_spec("all+last_round")
    tmp = pathlib.Path(self.create_tempdir().full_path)
    bad = tmp / "bad.json"
    bad.write_text("{not json")
    with self.assertRaisesRegex(errors.ConfigError, f"{bad}: invalid JSON"):
      loss_scale.parse_spec(str(bad))
    with self.assertRaisesRegex(errors.ConfigError, "missing.json: cannot read"):
      loss_scale.parse_spec(str(tmp / "missing.json"))
    wrong = tmp / "wrong.json"
    wrong.write_text(json.dumps({"Action:": [2.0, 2.0, 1.0]}))
    with self.assertRaisesRegex(errors.ConfigError, f"{wrong}: key 'Action:'"):
      loss_scale.parse_spec(str(wrong))
    regex = tmp / "regex.json"
    regex.write_text(json.dumps({"(unclosed": [2.0]}))
    with self.assertRaisesRegex(errors.ConfigError, f"{regex}: key '\\(unclosed' is not a valid"):
      loss_scale.parse_spec(str(regex))

  def test_rules_on_plain_text(self):
    # Text before the first key keeps 1; the longest key wins where two start together.
    r = loss_scale.rules_from_mapping("t", {"A:": [2.0, 3.0], "A: B:": [5.0, 0.0]})
    np.testing.assert_array_equal(r.weights("xA: B:yyA:z"),
                                  [1, 5, 5, 5, 5, 5, 0, 0, 2, 2, 3])


if __name__ == "__main__":
  absltest.main()
