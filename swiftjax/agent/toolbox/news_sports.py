"""News headlines and sports: match results, league standings, player statistics."""

import random

from swiftjax.agent.toolbox._base import Tool, int_arg, join, opts, registrar, seeded, str_arg
from swiftjax.agent.toolbox.world import (CITIES, CITY_NAMES, COMPANIES, LEAGUE_OF, MOVIES, PLAYERS,
                                          TEAMS, random_date)

TOOLS: list[Tool] = []
_tool = registrar(TOOLS)


_HEADLINES = {
    "business": ("{company} shares rise after strong quarterly results",
                 "Central bank holds interest rates steady", "Retail sales climb in {city}",
                 "{company} announces a new factory near {city}"),
    "technology": ("{company} unveils an AI assistant for developers",
                   "Researchers demonstrate faster battery charging",
                   "{city} launches city-wide free Wi-Fi",
                   "New smartphone chips promise longer battery life"),
    "sports": ("{team} win a late thriller", "Marathon record falls in {city}",
               "{team} extend their winning streak", "{team} sign a young striker"),
    "science": ("Astronomers spot water vapour on a distant exoplanet",
                "New deep-sea species found off {country}", "Study links sleep to memory",
                "Telescope captures its sharpest image of a star nursery"),
    "health": ("Study finds daily walks cut heart risk", "{city} hospitals trial shorter waits",
               "New guidelines recommend less added sugar", "Flu season arrives early in "
               "{country}"),
    "entertainment": ("'{movie}' tops the weekend box office",
                      "Film festival in {city} announces its lineup",
                      "Veteran band announces a reunion tour",
                      "Streaming series breaks viewing records"),
}
_NEWS_COUNTRIES = ("United States", "United Kingdom", "Canada", "Australia", "India")


@_tool("get_news_headlines", "news", "Get the top news headlines in a category.",
       {"category": str_arg("News category", sorted(_HEADLINES)),
        "country": str_arg("Country edition, e.g. Canada"),
        "limit": int_arg("Number of headlines (default 3)", 1, 4)}, ["category"],
       sample=lambda r: opts(r, {"category": r.choice(sorted(_HEADLINES))},
                             country=lambda: r.choice(_NEWS_COUNTRIES),
                             limit=lambda: r.randint(1, 4)),
       questions=("What are the top {category} headlines< in {country}> today?< Just "
                  "{limit}.>",
                  "Give me the latest {category} news< from {country}><, {limit} headlines>.",
                  "Any big {category} stories< in {country}> right now?< Show {limit}.>",
                  "Catch me up on {category} news<, {country} edition><: top {limit}>."),
       intent="fetch the top {category} headlines< for {country}>",
       answers=("Top {category} headlines: {headlines_text}.",
                "Here's what's happening in {category}: {headlines_text}."),
       derive=lambda a, res: {"headlines_text": "; ".join(res["headlines"])})
def _get_news_headlines(args):
  r = seeded("news", args["category"], args.get("country"))
  pool = list(_HEADLINES.get(args["category"], _HEADLINES["business"]))
  picked = r.sample(pool, min(args.get("limit", 3), len(pool)))
  city = r.choice(CITY_NAMES)
  fills = {"company": r.choice(sorted(COMPANIES)), "city": city,
           "country": CITIES[city][0], "team": r.choice(sorted(LEAGUE_OF)),
           "movie": r.choice(MOVIES)}
  return {"category": args["category"], "headlines": [h.format(**fills) for h in picked]}


def _score(r: random.Random, league: str) -> tuple[int, int]:
  if league == "NBA":
    return r.randint(92, 128), r.randint(92, 128)
  return r.randint(0, 4), r.randint(0, 3)


@_tool("get_match_results", "sports", "Get a team's most recent match result.",
       {"team": str_arg("Team name"), "date": str_arg("Match date, YYYY-MM-DD (default: latest)")},
       ["team"],
       sample=lambda r: opts(r, {"team": r.choice(sorted(LEAGUE_OF))},
                             date=lambda: random_date(r)),
       questions=("How did {team} do< on {date}>?", "What was the score of the {team} game< on "
                  "{date}>?", "Did {team} win their last match<, the one on {date}>?",
                  "Give me the result of {team}'s game< on {date}>."),
       intent="get the latest result for {team}< on {date}>",
       answers=("{team} {verb} {opponent} {score} on {date} ({competition}).",
                "On {date}, {team} played {opponent}: {score}, a {result}."),
       derive=lambda a, res: {"verb": {"win": "beat", "loss": "lost to",
                                       "draw": "drew with"}[res["result"]]})
def _get_match_results(args):
  team = args["team"]
  r = seeded("match", team, args.get("date"))
  league = LEAGUE_OF.get(team, "Premier League")
  opponent = r.choice([t for t in TEAMS[league] if t != team])
  ours, theirs = _score(r, league)
  if ours == theirs and league == "NBA":
    ours += 3
  result = "win" if ours > theirs else "loss" if ours < theirs else "draw"
  return {"team": team, "opponent": opponent, "score": f"{ours}-{theirs}", "result": result,
          "competition": league, "date": args.get("date", random_date(r))}


@_tool("get_league_standings", "sports", "Get the current standings of a league.",
       {"league": str_arg("League", sorted(TEAMS)),
        "limit": int_arg("Number of top teams (default 4)", 1, 6)}, ["league"],
       sample=lambda r: opts(r, {"league": r.choice(sorted(TEAMS))},
                             limit=lambda: r.randint(2, 5)),
       questions=("Show me the {league} standings<, top {limit}>.",
                  "Who's leading the {league}?< Give me the top {limit}.>",
                  "What does the {league} table look like<, top {limit} teams>?"),
       intent="get the {league} standings",
       answers=("{leader} lead the {league}. Top of the table: {table_text}.",
                "{league} standings: {table_text}."),
       derive=lambda a, res: {"leader": res["standings"][0]["team"], "table_text": join(
           f"{s['position']}. {s['team']} ({s['record']})" for s in res["standings"])})
def _get_league_standings(args):
  league = args["league"]
  r = seeded("standings", league)
  teams = r.sample(TEAMS[league], len(TEAMS[league]))[:args.get("limit", 4)]
  rows = []
  top = r.randint(55, 70) if league != "NBA" else r.randint(45, 55)
  for i, t in enumerate(teams):
    value = top - 3 * i - r.randint(0, 2)
    record = f"{value} wins, {67 - value} losses" if league == "NBA" else f"{value} pts"
    rows.append({"position": i + 1, "team": t, "record": record})
  return {"league": league, "standings": rows}


@_tool("get_player_stats", "sports", "Get a player's statistics for a season.",
       {"player": str_arg("Player name"),
        "season": str_arg("Season, e.g. 2023-24 (default current)")},
       ["player"],
       sample=lambda r: opts(r, {"player": r.choice(sorted(PLAYERS))},
                             season=lambda: r.choice(("2021-22", "2022-23", "2023-24"))),
       questions=("What are {player}'s stats< for {season}>?",
                  "How has {player} performed< in the {season} season>?",
                  "Give me {player}'s numbers< from {season}>."),
       intent="look up {player}'s statistics< for {season}>",
       answers=("In {season}, {player} ({sport}) recorded {stats_text}.",
                "{player}'s {season} season: {stats_text}."),
       derive=lambda a, res: {"stats_text": join(f"{v} {k.replace('_', ' ')}"
                                                 for k, v in res.get("stats", {}).items())})
def _get_player_stats(args):
  player, season = args["player"], args.get("season", "2023-24")
  if player not in PLAYERS:
    return {"error": f"no player named {player}"}
  r = seeded("player", player, season)
  if PLAYERS[player] == "basketball":
    stats = {"games": r.randint(50, 82), "points_per_game": round(r.uniform(12, 31), 1),
             "rebounds_per_game": round(r.uniform(3, 12), 1),
             "assists_per_game": round(r.uniform(2, 9), 1)}
  else:
    stats = {"appearances": r.randint(20, 38), "goals": r.randint(2, 30),
             "assists": r.randint(1, 14)}
  return {"player": player, "sport": PLAYERS[player], "season": season, "stats": stats}
