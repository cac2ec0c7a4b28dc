"""The chat prompts the serving benchmarks send: alpaca instructions from the shared data."""

import json
import pathlib

REPO = pathlib.Path(__file__).resolve().parent.parent
# Used when ../shared is absent.
FALLBACK = [
    "What is the capital of France?", "Give three tips for staying healthy.",
    "Explain photosynthesis in one paragraph.", "Write a haiku about autumn.",
    "What are the primary colours?", "Describe the water cycle.",
    "Name five animals that live in the ocean.", "How do airplanes fly?"]


def prompts() -> list[str]:
  """Alpaca instructions (plus their input) from
  `../shared/data/llamafactory/data/alpaca_en_demo.json` in file order, or `FALLBACK`."""
  path = REPO.parent / "shared" / "data" / "llamafactory" / "data" / "alpaca_en_demo.json"
  if not path.is_file():
    return list(FALLBACK)
  rows = json.loads(path.read_text())
  return [(r["instruction"] + ("\n" + r["input"] if r.get("input") else "")).strip()
          for r in rows if r.get("instruction")]
