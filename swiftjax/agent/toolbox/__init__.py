"""The fake tools behind `swiftjax.agent.tooldata`: one registry gathered from domain modules.

  TOOLS: name -> `Tool`, 49 tools over 18 domains, in module order (weather and maps; travel,
    finance and stocks; calendar and email; recipes, units and language; news and sports;
    shipping, shopping, restaurants and cinema; math and time).
  CHAINS: the two-call `Chain`s (the second call's arguments come from the first's response).
  FACTS: questions that need no tool, as (question variants, answer variants, domains not to
    offer), and `arithmetic(rng)` for small sums answered directly.

Each tool's schema, fake implementation and question/answer templates live together in its
domain module; shared world data (cities, rates, companies, people) in `world`; the `Tool` and
`Chain` records, templating (`fill`) and schema helpers in `_base`.
"""

from swiftjax.agent.toolbox import food_language
from swiftjax.agent.toolbox import math_time
from swiftjax.agent.toolbox import news_sports
from swiftjax.agent.toolbox import office
from swiftjax.agent.toolbox import shopping_dining
from swiftjax.agent.toolbox import travel_finance
from swiftjax.agent.toolbox import weather_maps
from swiftjax.agent.toolbox._base import Chain, Tool, fill, join, show
from swiftjax.agent.toolbox.chains import CHAINS
from swiftjax.agent.toolbox.facts import FACTS, arithmetic

DOMAIN_MODULES = (weather_maps, travel_finance, office, food_language, news_sports,
                  shopping_dining, math_time)


def _registry() -> dict[str, Tool]:
  tools = {}
  for module in DOMAIN_MODULES:
    for tool in module.TOOLS:
      if tool.name in tools:
        raise ValueError(f"tool {tool.name!r} is defined twice ({module.__name__})")
      tools[tool.name] = tool
  for chain in CHAINS:
    for name in (chain.first, chain.second):
      if name not in tools:
        raise ValueError(f"chain {chain.first} -> {chain.second} names unknown tool {name!r}")
  return tools


TOOLS: dict[str, Tool] = _registry()

__all__ = ["CHAINS", "Chain", "DOMAIN_MODULES", "FACTS", "TOOLS", "Tool", "arithmetic", "fill",
           "join", "show"]
