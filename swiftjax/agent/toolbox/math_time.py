"""Math (arithmetic, statistics, tips, quadratics) and time (local time, zones, holidays)."""

import ast
import datetime
import math
import operator
import random
import statistics

from swiftjax.agent.toolbox._base import (Tool, arr_arg, int_arg, join, num_arg, opts, plain_number,
                                          registrar, seeded, show, str_arg)
from swiftjax.agent.toolbox.world import CITIES, CITY_NAMES, TZ_OFFSET, add_minutes, random_clock

TOOLS: list[Tool] = []
_tool = registrar(TOOLS)

# ----------------------------------------------------------------------------------------------
# Math.

_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.Pow: operator.pow}


def _evaluate(node):
  """Arithmetic on number literals only (+ - * / ** and unary minus); anything else raises."""
  if isinstance(node, ast.Expression):
    return _evaluate(node.body)
  if isinstance(node, ast.Constant) and type(node.value) in (int, float):
    return node.value
  if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
    value = _evaluate(node.operand)
    return -value if isinstance(node.op, ast.USub) else value
  if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
    left, right = _evaluate(node.left), _evaluate(node.right)
    if isinstance(node.op, ast.Pow) and abs(right) > 64:
      raise ValueError("exponent too large")
    return _BINOPS[type(node.op)](left, right)
  raise ValueError("unsupported expression")



def _expression(r: random.Random) -> str:
  a, b, c = r.randint(100, 9999), r.randint(12, 999), r.randint(2, 48)
  return r.choice((f"{a} * {b}", f"({a} + {b}) * {c}", f"{a} / {c}", f"{a} - {b} * {c}",
                   f"{a} * {c} / 100", f"({a} - {b}) / {c}", f"{b} * {b} + {c}"))


@_tool("calculate", "math", "Evaluate an arithmetic expression (+, -, *, /, parentheses).",
       {"expression": str_arg("The expression, e.g. (12 + 7) * 3")}, ["expression"],
       sample=lambda r: {"expression": _expression(r)},
       questions=("Calculate {expression}.", "What is {expression}?",
                  "Can you work out {expression} for me?", "I need the exact value of "
                  "{expression}."),
       intent="evaluate {expression}",
       answers=("{expression} = {result}.", "The result is {result}."))
def _calculate(args):
  try:
    value = _evaluate(ast.parse(args["expression"], mode="eval"))
  except (SyntaxError, ValueError, ZeroDivisionError, TypeError) as e:
    return {"error": f"cannot evaluate {args['expression']!r}: {e}"}
  return {"expression": args["expression"], "result": plain_number(value)}


@_tool("compute_statistics", "math", "Summary statistics (mean, median, standard deviation, "
       "min, max) of a list of numbers.",
       {"numbers": arr_arg("The values", "number")}, ["numbers"],
       sample=lambda r: {"numbers": [r.randint(1, 100) if r.random() < 0.7
                                     else round(r.uniform(1, 50), 1)
                                     for _ in range(r.randint(4, 8))]},
       questions=("What's the mean and median of {numbers}?",
                  "Give me summary statistics for these values: {numbers}.",
                  "Compute the average and standard deviation of {numbers}.",
                  "Here are my measurements: {numbers}. What are the mean and spread?"),
       intent="compute statistics of {count_in} numbers",
       answers=("For these {count} values: mean {mean}, median {median}, standard deviation "
                "{std_dev}, from {min} to {max}.",
                "The average is {mean} and the median {median}; the standard deviation is "
                "{std_dev}."),
       view=lambda a: {"count_in": len(a["numbers"])})
def _compute_statistics(args):
  xs = args["numbers"]
  if not xs:
    return {"error": "no numbers given"}
  return {"count": len(xs), "mean": round(statistics.fmean(xs), 2),
          "median": plain_number(statistics.median(xs)),
          "std_dev": round(statistics.stdev(xs), 2) if len(xs) > 1 else 0.0,
          "min": min(xs), "max": max(xs)}


@_tool("calculate_tip", "math", "Work out a tip and the total of a bill, optionally split.",
       {"bill_amount": num_arg("Bill before tip"), "tip_percent": num_arg("Tip in percent"),
        "num_people": int_arg("People splitting the bill (default 1)", 1, 50)},
       ["bill_amount", "tip_percent"],
       sample=lambda r: opts(r, {"bill_amount": round(r.uniform(18, 260), 2),
                                 "tip_percent": r.choice((10, 12, 15, 18, 20, 25))},
                             num_people=lambda: r.randint(2, 6)),
       questions=("What's a {tip_percent}% tip on a ${bill_amount} bill?< We're splitting it "
                  "{num_people} ways.>",
                  "Our bill is ${bill_amount}. How much is a {tip_percent}% tip<, split between "
                  "{num_people} people>?",
                  "Calculate a {tip_percent} percent tip for ${bill_amount}< and split the total "
                  "{num_people} ways>."),
       intent="work out a {tip_percent}% tip on ${bill_amount}< split {num_people} ways>",
       answers=("A {tip_percent}% tip is ${tip:.2f}, so the total is ${total:.2f}<, or "
                "${per_person:.2f} per person>.",
                "Tip: ${tip:.2f}. Total: ${total:.2f}.< Each person pays ${per_person:.2f}.>"))
def _calculate_tip(args):
  tip = args["bill_amount"] * args["tip_percent"] / 100
  total = args["bill_amount"] + tip
  out = {"tip": round(tip, 2), "total": round(total, 2)}
  if args.get("num_people"):
    out["per_person"] = round(total / args["num_people"], 2)
  return out


def _equation(a, b, c) -> str:
  def term(k, x, first):
    if k == 0:
      return ""
    mag = "" if abs(k) == 1 and x else str(abs(k))
    sign = ("-" if k < 0 else "") if first else (" - " if k < 0 else " + ")
    return f"{sign}{mag}{x}"
  return term(a, "x^2", True) + term(b, "x", False) + term(c, "", False) + " = 0"


def _quadratic_args(r: random.Random) -> dict:
  a, r1, r2 = r.choice((1, 1, 2, 3)), r.randint(-9, 9), r.randint(-9, 9)
  return {"a": a, "b": -a * (r1 + r2), "c": a * r1 * r2}


@_tool("solve_quadratic", "math", "Find the real roots of a*x^2 + b*x + c = 0.",
       {"a": num_arg("Coefficient of x^2"), "b": num_arg("Coefficient of x"),
        "c": num_arg("Constant term")}, ["a", "b", "c"],
       sample=_quadratic_args,
       questions=("Solve {equation}.", "What are the roots of {equation}?",
                  "Find x such that {equation}.",
                  "Solve the quadratic with a = {a}, b = {b} and c = {c}."),
       intent="solve {equation}",
       answers=("The roots of {equation} are x = {roots_text}.",
                "x = {roots_text} (discriminant {discriminant})."),
       derive=lambda a, res: {"roots_text": " or x = ".join(map(show, res.get("roots", [])))
                              or "none (no real roots)"},
       view=lambda a: {"equation": _equation(a["a"], a["b"], a["c"])})
def _solve_quadratic(args):
  a, b, c = args["a"], args["b"], args["c"]
  if a == 0:
    return {"error": "a must not be 0"}
  d = b * b - 4 * a * c
  if d < 0:
    return {"discriminant": plain_number(d), "roots": []}
  roots = sorted({plain_number((-b + s * math.sqrt(d)) / (2 * a)) + 0 for s in (-1, 1)})
  return {"discriminant": plain_number(d), "roots": roots}


# ----------------------------------------------------------------------------------------------
# Time.


def _offset_text(hours: float) -> str:
  sign = "-" if hours < 0 else "+"
  minutes = int(round(abs(hours) * 60))
  return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


@_tool("get_local_time", "time", "Get the current local time in a city.",
       {"city": str_arg("City name")}, ["city"],
       sample=lambda r: {"city": r.choice(CITY_NAMES)},
       questions=("What time is it in {city} right now?", "What's the local time in {city}?",
                  "Is it late in {city}? What time is it there?",
                  "Tell me the current time in {city}."),
       intent="get the local time in {city}",
       answers=("It's {local_time} on {date} in {city} ({timezone}).",
                "The local time in {city} is {local_time} (UTC{utc_offset})."))
def _get_local_time(args):
  city = args["city"]
  if city not in CITIES:
    return {"error": f"unknown city {city}"}
  zone, offset = CITIES[city][3], CITIES[city][4]
  r = seeded("now", city)
  now = datetime.datetime(2025, 6, 15) + datetime.timedelta(minutes=r.randrange(1440) + 60
                                                            * offset)
  return {"city": city, "timezone": zone, "local_time": now.strftime("%H:%M"),
          "date": now.date().isoformat(), "utc_offset": _offset_text(offset)}


@_tool("get_timezone", "time", "Get the IANA time zone and UTC offset of a city.",
       {"city": str_arg("City name")}, ["city"],
       sample=lambda r: {"city": r.choice(CITY_NAMES)},
       questions=("Which time zone is {city} in?", "What's the UTC offset of {city}?",
                  "Tell me {city}'s time zone."),
       intent="look up the time zone of {city}",
       answers=("{city} is in {timezone} (UTC{utc_offset}).",
                "The time zone for {city} is {timezone}, UTC{utc_offset}."))
def _get_timezone(args):
  city = args["city"]
  if city not in CITIES:
    return {"error": f"unknown city {city}"}
  return {"city": city, "timezone": CITIES[city][3], "utc_offset": _offset_text(CITIES[city][4])}


@_tool("convert_time", "time", "Convert a clock time from one time zone to another.",
       {"time": str_arg("Time, HH:MM (24-hour)"),
        "from_timezone": str_arg("IANA time zone of the time, e.g. Europe/Paris"),
        "to_timezone": str_arg("IANA time zone to convert to")},
       ["time", "from_timezone", "to_timezone"],
       sample=lambda r: dict(zip(("from_timezone", "to_timezone"), r.sample(sorted(TZ_OFFSET),
                                                                            2)),
                             time=random_clock(r, 0, 23)),
       questions=("What time is {time} {from_timezone} in {to_timezone}?",
                  "Convert {time} from {from_timezone} to {to_timezone}.",
                  "If it's {time} in {from_timezone}, what time is it in {to_timezone}?"),
       intent="convert {time} from {from_timezone} to {to_timezone}",
       answers=("{time} in {from_timezone} is {converted_time} in {to_timezone}< "
                "({day_note})>.",
                "That's {converted_time} {to_timezone} time< ({day_note})>."),
       derive=lambda a, res: ({"day_note": {1: "the next day", -1: "the previous day"}[
           res["day_offset"]]} if res.get("day_offset") else {}))
def _convert_time(args):
  src, dst = args["from_timezone"], args["to_timezone"]
  if src not in TZ_OFFSET or dst not in TZ_OFFSET:
    return {"error": f"unknown time zone {src if src not in TZ_OFFSET else dst}"}
  converted, day = add_minutes(args["time"], (TZ_OFFSET[dst] - TZ_OFFSET[src]) * 60)
  return {"converted_time": converted, "from_timezone": src, "to_timezone": dst,
          "day_offset": day}


HOLIDAYS = {  # fixed-date national holidays (month-day, name)
    "United States": (("01-01", "New Year's Day"), ("07-04", "Independence Day"),
                      ("11-11", "Veterans Day"), ("12-25", "Christmas Day")),
    "France": (("05-01", "Labour Day"), ("07-14", "Bastille Day"), ("11-11", "Armistice Day")),
    "Germany": (("05-01", "Labour Day"), ("10-03", "German Unity Day"),
                ("12-25", "Christmas Day")),
    "Japan": (("02-11", "National Foundation Day"), ("05-03", "Constitution Memorial Day"),
              ("11-03", "Culture Day")),
    "India": (("01-26", "Republic Day"), ("08-15", "Independence Day"),
              ("10-02", "Gandhi Jayanti")),
    "Brazil": (("04-21", "Tiradentes Day"), ("09-07", "Independence Day"),
               ("11-15", "Republic Proclamation Day")),
    "Canada": (("07-01", "Canada Day"), ("11-11", "Remembrance Day"),
               ("12-25", "Christmas Day")),
    "Mexico": (("09-16", "Independence Day"), ("11-20", "Revolution Day"),
               ("12-25", "Christmas Day")),
}


@_tool("get_public_holidays", "time", "List the public holidays of a country in a year.",
       {"country": str_arg("Country name"), "year": int_arg("Year", 1900, 2100)},
       ["country", "year"],
       sample=lambda r: {"country": r.choice(sorted(HOLIDAYS)), "year": r.choice((2024, 2025,
                                                                                  2026))},
       questions=("What are the public holidays in {country} in {year}?",
                  "List {country}'s national holidays for {year}.",
                  "Which days are holidays in {country} in {year}?"),
       intent="list the public holidays of {country} in {year}",
       answers=("Public holidays in {country} in {year} include {holidays_text}.",
                "{country} ({year}): {holidays_text}."),
       derive=lambda a, res: {"holidays_text": join(f"{h['name']} ({h['date']})"
                                                    for h in res.get("holidays", []))})
def _get_public_holidays(args):
  days = HOLIDAYS.get(args["country"])
  if days is None:
    return {"error": f"no holiday data for {args['country']}"}
  return {"country": args["country"], "year": args["year"],
          "holidays": [{"date": f"{args['year']}-{md}", "name": n} for md, n in days]}
