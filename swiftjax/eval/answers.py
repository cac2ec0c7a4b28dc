"""Final numeric answers: extracting them from generated text and comparing them canonically.

From a generated answer the final number is taken, in order of preference, after the last
`####`, inside the last `\\boxed{...}`, after the last "answer is", else the last number in the
text ("Answer:" is no cue: small models write their reasoning after it). Numbers are compared
in a canonical form: thousands commas, a currency sign and a trailing period are dropped and
`18.00` equals `18`.
"""

import decimal
import re

# A sign only when the '-' does not follow a word character ("5-3" is not "-3").
_NUMBER = re.compile(r"(?:(?<![\w)])(-))?\s?\$?\s?(\d{1,3}(?:,\d{3})+(?!\d)|\d+)(\.\d+)?")
_CUES = (re.compile(r"####"), re.compile(r"\\boxed\{"),
         re.compile(r"answer is", re.IGNORECASE))


def canonical_number(text: str, last: bool = False) -> str | None:
  """The first (or `last`) number in `text` in canonical form (`"1,234.50"` -> `"1234.5"`),
  or None when there is none."""
  matches = list(_NUMBER.finditer(text))
  if not matches:
    return None
  m = matches[-1] if last else matches[0]
  value = decimal.Decimal(m.group(2).replace(",", "") + (m.group(3) or ""))
  if m.group(1):
    value = -value
  if value == value.to_integral_value():
    return str(int(value))
  return format(value.normalize(), "f")


def extract_answer(text: str) -> str | None:
  """The final numeric answer of a generated solution, canonical, or None."""
  for cue in _CUES:
    found = list(cue.finditer(text))
    if found:
      number = canonical_number(text[found[-1].end():])
      if number is not None:
        return number
  return canonical_number(text, last=True)
