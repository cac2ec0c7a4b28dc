"""A tool-use dataset that the project generates itself, deterministic from a seed.

`TOOLS` holds 49 fake tools over 18 domains (weather, maps, flights, currency, stocks, calendar,
email, recipes, units, translation, news, sports, shipping, restaurants, math, time zones,
shopping, cinema). Each has an OpenAI-style JSON schema and a fake implementation whose output
depends only on its arguments, so a tool response always agrees with the call that produced it.
Samples come in three kinds (`MIX`):

  * `single`: question -> [assistant thought] -> tool_call -> tool_response -> answer;
  * `multi`: two dependent calls (the second call's arguments come from the first's response);
  * `none`: general knowledge, arithmetic or chit-chat answered directly, with tools offered.

`split_tools(seed)` holds out about a quarter of the tools, spread over domains, for `test`;
`train` and `valid` use only the rest, and every sample offers its needed tools plus 2-4
distractors from its own split. Rows are `{"messages", "tools", "kind"}` in the normalised form of
`swiftjax.data.formats` (see the agent data contract): roles user, assistant, tool_call (JSON
`{"name", "arguments"}`), tool_response (JSON text).
"""

import ast
import dataclasses
import datetime
import hashlib
import json
import math
import operator
import os
import pathlib
import random
import re
import statistics
import string
from typing import Callable

from swiftjax import errors
# ----------------------------------------------------------------------------------------------
# Templates: `{slot}` fields, and `<...>` segments dropped when a slot they name is missing
# (optional arguments). Lists print comma-separated, whole floats without ".0".


def _show(value) -> str:
  if isinstance(value, bool):
    return "yes" if value else "no"
  if isinstance(value, float):
    return str(int(value)) if value.is_integer() else repr(value)
  if isinstance(value, (list, tuple)):
    return ", ".join(_show(v) for v in value)
  return str(value)


class _Formatter(string.Formatter):

  def format_field(self, value, format_spec):
    return super().format_field(value, format_spec) if format_spec else _show(value)


_FORMATTER = _Formatter()


def fill(template: str, slots: dict) -> str:
  """`template` with `slots` filled in; an optional `<...>` segment naming a missing slot is
  dropped (a missing slot outside one raises KeyError)."""
  out = []
  for i, part in enumerate(re.split(r"<([^<>]*)>", template)):
    try:
      out.append(_FORMATTER.vformat(part, (), slots))
    except KeyError:
      if i % 2 == 0:
        raise
  return "".join(out)


def join(items) -> str:
  """`a`, `a and b`, `a, b and c`."""
  items = [_show(i) for i in items]
  return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _seeded(*parts) -> random.Random:
  """A generator that depends only on `parts`: fake tools answer the same call the same way."""
  key = json.dumps(parts, sort_keys=True, default=str).encode()
  return random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "big"))


def _str(description: str, enum=None) -> dict:
  out = {"type": "string", "description": description}
  if enum:
    out["enum"] = list(enum)
  return out


def _num(description: str) -> dict:
  return {"type": "number", "description": description}


def _int(description: str, lo: int | None = None, hi: int | None = None) -> dict:
  out = {"type": "integer", "description": description}
  if lo is not None:
    out["minimum"] = lo
  if hi is not None:
    out["maximum"] = hi
  return out


def _arr(description: str, item_type: str) -> dict:
  return {"type": "array", "items": {"type": item_type}, "description": description}


@dataclasses.dataclass(frozen=True)
class Tool:
  """A fake tool: its schema, its implementation, and how people ask for it.

  Attributes:
    name, domain, description: as offered to the model (`domain` only groups tools for splits).
    properties, required: the JSON schema of the arguments.
    run: `arguments -> result` (a JSON object); deterministic.
    sample: `rng -> arguments`, optional arguments included some of the time.
    questions: user question templates over the argument slots.
    intent: what a thought says the call does (`check the weather in {location}`).
    answers: final answer templates over arguments, result and `derive(args, result)` slots.
    view: extra question slots computed from the arguments (e.g. a city for an airport code).
  """
  name: str
  domain: str
  description: str
  properties: dict
  required: tuple
  run: Callable[[dict], dict]
  sample: Callable[[random.Random], dict]
  questions: tuple
  intent: str
  answers: tuple
  derive: Callable[[dict, dict], dict] | None = None
  view: Callable[[dict], dict] | None = None

  def spec(self) -> dict:
    """The OpenAI-style tool spec."""
    return {"type": "function", "function": {
        "name": self.name, "description": self.description,
        "parameters": {"type": "object", "properties": self.properties,
                       "required": list(self.required)}}}

  def slots(self, args: dict) -> dict:
    """Question slots: the arguments (enum values with spaces for `_`) plus `view`."""
    out = {k: v.replace("_", " ") if isinstance(v, str) and "enum" in self.properties[k] else v
           for k, v in args.items()}
    if self.view:
      out.update(self.view(args))
    return out

  def answer_slots(self, args: dict, result: dict) -> dict:
    out = {**self.slots(args), **result}
    if self.derive:
      out.update(self.derive(args, result))
    return out


@dataclasses.dataclass(frozen=True)
class Chain:
  """Two dependent calls: `link(first_args, first_result, rng)` gives the second call's arguments.

  `questions` use both calls' argument slots; `bridge` (first tool's answer slots) says what the
  first call found; `answers` see the two calls' answer slots as `{a[...]}` and `{b[...]}`.
  `sample` gives the first call's arguments (default: its required arguments only).
  """
  first: str
  second: str
  link: Callable[[dict, dict, random.Random], dict]
  questions: tuple
  bridge: str
  answers: tuple
  sample: Callable[[random.Random], dict] | None = None


TOOLS: dict[str, Tool] = {}
CHAINS: list[Chain] = []


def _tool(name, domain, description, properties, required, **kwargs):
  """Registers the decorated function as the implementation of a tool."""
  def register(run):
    TOOLS[name] = Tool(name=name, domain=domain, description=description,
                       properties=properties, required=tuple(required), run=run, **kwargs)
    return run
  return register


def _opts(rng: random.Random, required: dict, p: float = 0.4, **optional) -> dict:
  """`required` plus each optional argument (a thunk) with probability `p`."""
  out = dict(required)
  for key, make in optional.items():
    if rng.random() < p:
      out[key] = make()
  return out


# ----------------------------------------------------------------------------------------------
# World data the fake tools share (so chained calls agree with each other).

# name: (country, latitude, longitude, IANA zone, UTC offset (standard time), airport, currency)
CITIES = {
    "Paris": ("France", 48.8566, 2.3522, "Europe/Paris", 1, "CDG", "EUR"),
    "London": ("United Kingdom", 51.5074, -0.1278, "Europe/London", 0, "LHR", "GBP"),
    "New York": ("United States", 40.7128, -74.006, "America/New_York", -5, "JFK", "USD"),
    "Tokyo": ("Japan", 35.6762, 139.6503, "Asia/Tokyo", 9, "HND", "JPY"),
    "Sydney": ("Australia", -33.8688, 151.2093, "Australia/Sydney", 10, "SYD", "AUD"),
    "Berlin": ("Germany", 52.52, 13.405, "Europe/Berlin", 1, "BER", "EUR"),
    "Madrid": ("Spain", 40.4168, -3.7038, "Europe/Madrid", 1, "MAD", "EUR"),
    "Rome": ("Italy", 41.9028, 12.4964, "Europe/Rome", 1, "FCO", "EUR"),
    "Toronto": ("Canada", 43.6532, -79.3832, "America/Toronto", -5, "YYZ", "CAD"),
    "Mumbai": ("India", 19.076, 72.8777, "Asia/Kolkata", 5.5, "BOM", "INR"),
    "Cairo": ("Egypt", 30.0444, 31.2357, "Africa/Cairo", 2, "CAI", "EGP"),
    "Sao Paulo": ("Brazil", -23.5505, -46.6333, "America/Sao_Paulo", -3, "GRU", "BRL"),
    "Mexico City": ("Mexico", 19.4326, -99.1332, "America/Mexico_City", -6, "MEX", "MXN"),
    "Seoul": ("South Korea", 37.5665, 126.978, "Asia/Seoul", 9, "ICN", "KRW"),
    "Singapore": ("Singapore", 1.3521, 103.8198, "Asia/Singapore", 8, "SIN", "SGD"),
    "Dubai": ("United Arab Emirates", 25.2048, 55.2708, "Asia/Dubai", 4, "DXB", "AED"),
    "Istanbul": ("Turkey", 41.0082, 28.9784, "Europe/Istanbul", 3, "IST", "TRY"),
    "Amsterdam": ("Netherlands", 52.3676, 4.9041, "Europe/Amsterdam", 1, "AMS", "EUR"),
    "Chicago": ("United States", 41.8781, -87.6298, "America/Chicago", -6, "ORD", "USD"),
    "San Francisco": ("United States", 37.7749, -122.4194, "America/Los_Angeles", -8, "SFO",
                      "USD"),
    "Lisbon": ("Portugal", 38.7223, -9.1393, "Europe/Lisbon", 0, "LIS", "EUR"),
    "Nairobi": ("Kenya", -1.2921, 36.8219, "Africa/Nairobi", 3, "NBO", "KES"),
    "Bangkok": ("Thailand", 13.7563, 100.5018, "Asia/Bangkok", 7, "BKK", "THB"),
    "Stockholm": ("Sweden", 59.3293, 18.0686, "Europe/Stockholm", 1, "ARN", "SEK"),
    "Zurich": ("Switzerland", 47.3769, 8.5417, "Europe/Zurich", 1, "ZRH", "CHF"),
    "Buenos Aires": ("Argentina", -34.6037, -58.3816, "America/Argentina/Buenos_Aires", -3,
                     "EZE", "ARS"),
    "Cape Town": ("South Africa", -33.9249, 18.4241, "Africa/Johannesburg", 2, "CPT", "ZAR"),
    "Vancouver": ("Canada", 49.2827, -123.1207, "America/Vancouver", -8, "YVR", "CAD"),
    "Oslo": ("Norway", 59.9139, 10.7522, "Europe/Oslo", 1, "OSL", "NOK"),
}
_CITY_NAMES = sorted(CITIES)
_AIRPORTS = {v[5]: k for k, v in CITIES.items()}
_TZ_OFFSET = {v[3]: v[4] for v in CITIES.values()}
# Units of each currency per US dollar.
RATES = {"USD": 1.0, "EUR": 0.92, "GBP": 0.79, "JPY": 151.0, "AUD": 1.52, "CAD": 1.36,
         "CHF": 0.9, "INR": 83.3, "BRL": 5.05, "MXN": 17.0, "KRW": 1350.0, "SGD": 1.35,
         "SEK": 10.6, "NOK": 10.7, "ZAR": 18.7, "CNY": 7.2, "AED": 3.67, "THB": 36.5}
_CURRENCIES = sorted(RATES)
COMPANIES = {  # name: (symbol, exchange, typical price in USD)
    "Apple": ("AAPL", "NASDAQ", 189.0), "Microsoft": ("MSFT", "NASDAQ", 415.0),
    "Alphabet": ("GOOGL", "NASDAQ", 152.0), "Amazon": ("AMZN", "NASDAQ", 178.0),
    "Tesla": ("TSLA", "NASDAQ", 175.0), "NVIDIA": ("NVDA", "NASDAQ", 880.0),
    "Meta Platforms": ("META", "NASDAQ", 495.0), "Netflix": ("NFLX", "NASDAQ", 610.0),
    "Coca-Cola": ("KO", "NYSE", 60.0), "Nike": ("NKE", "NYSE", 93.0),
    "Intel": ("INTC", "NASDAQ", 42.0), "IBM": ("IBM", "NYSE", 190.0),
    "Walt Disney": ("DIS", "NYSE", 112.0), "Visa": ("V", "NYSE", 280.0),
    "Walmart": ("WMT", "NYSE", 60.0), "Pfizer": ("PFE", "NYSE", 28.0),
}
_SYMBOLS = {v[0]: (k,) + v for k, v in COMPANIES.items()}
CONTACTS = ("Maria Garcia", "John Smith", "Aisha Khan", "Wei Chen", "Lucas Silva", "Emma Johnson",
            "Olivia Brown", "Noah Williams", "Yuki Tanaka", "Priya Patel", "Ahmed Hassan",
            "Sofia Rossi", "Carlos Mendez", "Fatima Ali", "Daniel Kim", "Chloe Martin",
            "Ivan Petrov", "Grace Lee")
_EMAILS = (("Lunch on Friday", "Are you free for lunch on Friday at 12:30?"),
           ("Project update", "The first draft of the report is ready for your review."),
           ("Meeting moved", "Our meeting has moved to Thursday at 3 pm."),
           ("Thank you", "Thanks again for your help with the presentation."),
           ("Invoice for March", "Please find the invoice for March attached."),
           ("Weekend plans", "Do you want to go hiking on Saturday morning?"),
           ("Flight details", "My flight lands at 6:40 pm, see you at the airport."),
           ("Quick question", "Could you send me the slides from yesterday?"))
_EVENTS = ("Team standup", "Dentist appointment", "Lunch with Sofia", "Quarterly review",
           "Yoga class", "Project kickoff", "Call with the bank", "Book club", "Budget meeting",
           "Parent-teacher meeting", "Design review", "Coffee with Daniel")
TEAMS = {"Premier League": ("Arsenal", "Liverpool", "Chelsea", "Manchester City", "Tottenham",
                            "Newcastle"),
         "La Liga": ("Real Madrid", "Barcelona", "Atletico Madrid", "Sevilla", "Valencia",
                     "Real Sociedad"),
         "Serie A": ("Juventus", "Inter", "AC Milan", "Napoli", "Roma", "Lazio"),
         "NBA": ("Lakers", "Celtics", "Warriors", "Bulls", "Heat", "Knicks")}
_LEAGUE_OF = {t: lg for lg, ts in TEAMS.items() for t in ts}
# Fictional players: the fake stats describe nobody real.
PLAYERS = {"Leo Varga": "football", "Tomas Reyes": "football", "Kenji Sato": "football",
           "Nico Albers": "football", "Jamal Carter": "basketball", "Marcus Hill": "basketball",
           "Andre Costa": "basketball", "Dario Conti": "football", "Ryan Okafor": "basketball"}
MOVIES = ("The Last Orbit", "Midnight in Lisbon", "Paper Tigers", "Echoes of Summer",
          "The Glass Harbor", "Northern Lights", "A Quiet Storm")
LANGUAGES = ("English", "Spanish", "French", "German", "Italian", "Portuguese")
PHRASES = (  # the same phrase in each of LANGUAGES
    ("Good morning", "Buenos días", "Bonjour", "Guten Morgen", "Buongiorno", "Bom dia"),
    ("Thank you very much", "Muchas gracias", "Merci beaucoup", "Vielen Dank", "Grazie mille",
     "Muito obrigado"),
    ("Where is the train station?", "¿Dónde está la estación de tren?", "Où est la gare?",
     "Wo ist der Bahnhof?", "Dov'è la stazione?", "Onde fica a estação de trem?"),
    ("How much does this cost?", "¿Cuánto cuesta esto?", "Combien ça coûte?",
     "Wie viel kostet das?", "Quanto costa questo?", "Quanto custa isso?"),
    ("I would like a coffee, please", "Quisiera un café, por favor",
     "Je voudrais un café, s'il vous plaît", "Ich hätte gern einen Kaffee, bitte",
     "Vorrei un caffè, per favore", "Eu gostaria de um café, por favor"),
    ("See you tomorrow", "Hasta mañana", "À demain", "Bis morgen", "A domani", "Até amanhã"),
    ("Happy birthday", "Feliz cumpleaños", "Joyeux anniversaire", "Alles Gute zum Geburtstag",
     "Buon compleanno", "Feliz aniversário"),
    ("The meeting starts at nine", "La reunión empieza a las nueve",
     "La réunion commence à neuf heures", "Das Meeting beginnt um neun Uhr",
     "La riunione inizia alle nove", "A reunião começa às nove"),
    ("I don't understand", "No entiendo", "Je ne comprends pas", "Ich verstehe nicht",
     "Non capisco", "Não entendo"),
    ("Where is the bathroom?", "¿Dónde está el baño?", "Où sont les toilettes?",
     "Wo ist die Toilette?", "Dov'è il bagno?", "Onde fica o banheiro?"),
)
_PHRASE_INDEX = {text: (i, LANGUAGES[j]) for i, row in enumerate(PHRASES)
                 for j, text in enumerate(row)}


def _date(rng: random.Random, year: int = 2025) -> str:
  return (datetime.date(year, 1, 1) + datetime.timedelta(days=rng.randrange(365))).isoformat()


def _clock(rng: random.Random, lo: int = 7, hi: int = 21) -> str:
  return f"{rng.randint(lo, hi):02d}:{rng.choice((0, 15, 30, 45)):02d}"


def _add_minutes(clock: str, minutes: float) -> tuple[str, int]:
  """`HH:MM` plus minutes, and the day offset (-1, 0, 1)."""
  h, m = map(int, clock.split(":"))
  total = h * 60 + m + int(round(minutes))
  return f"{total % 1440 // 60:02d}:{total % 60:02d}", total // 1440


def _coords(place: str) -> tuple[float, float]:
  if place in CITIES:
    return CITIES[place][1], CITIES[place][2]
  r = _seeded("coords", place.lower())
  return round(r.uniform(-50, 60), 4), round(r.uniform(-120, 140), 4)


def _km(a: tuple[float, float], b: tuple[float, float]) -> float:
  """Great-circle distance (haversine, Earth radius 6371 km)."""
  la1, lo1, la2, lo2 = map(math.radians, (*a, *b))
  h = (math.sin((la2 - la1) / 2) ** 2
       + math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2)
  return 2 * 6371 * math.asin(math.sqrt(h))


def _weather(lat: float, lon: float, units: str) -> dict:
  """Current weather at a point: the same point always has the same weather."""
  r = _seeded("weather", round(lat, 1), round(lon, 1))
  celsius = round(27 - 0.4 * abs(lat) + r.uniform(-5, 5))
  condition = r.choice(("sunny", "partly cloudy", "cloudy", "light rain", "rain", "windy",
                        "foggy", "clear"))
  if celsius < 1 and "rain" in condition:
    condition = "snow"
  temp = round(celsius * 9 / 5 + 32) if units == "fahrenheit" else celsius
  return {"temperature": temp, "units": units, "condition": condition,
          "humidity": r.randint(30, 90), "wind_kph": r.randint(3, 35)}


def _symbol(args, result):
  del args
  return {"sym": "°F" if result.get("units") == "fahrenheit" else "°C"}


def _duration(minutes: float) -> str:
  h, m = divmod(int(round(minutes)), 60)
  return f"{h} h {m} min" if h else f"{m} min"


def _cheapest(items: list[dict], key: str) -> dict:
  return min(items, key=lambda i: i[key]) if items else {}


# ----------------------------------------------------------------------------------------------
# Weather and maps.

_UNITS = ("celsius", "fahrenheit")


@_tool("get_current_weather", "weather", "Get the current weather conditions in a city.",
       {"location": _str("City name, e.g. Paris"),
        "units": _str("Temperature units (default celsius)", _UNITS)}, ["location"],
       sample=lambda r: _opts(r, {"location": r.choice(_CITY_NAMES)},
                              units=lambda: r.choice(_UNITS)),
       questions=("What's the weather like in {location} right now?< Please use {units}.>",
                  "How's the weather in {location} today<, in {units}>?",
                  "Current weather in {location}< in {units}>, please.",
                  "I'm about to go out in {location}. What's it like outside?< Give me the "
                  "temperature in {units}.>",
                  "Tell me the current conditions in {location}< (in {units})>."),
       intent="check the current weather in {location}< in {units}>",
       answers=("It's currently {temperature}{sym} in {location} ({condition}), with "
                "{humidity}% humidity.",
                "Right now in {location}: {condition}, {temperature}{sym}, wind at "
                "{wind_kph} km/h.",
                "The weather in {location}: {condition}, {temperature}{sym}, humidity {humidity}%."),
       derive=_symbol)
def _get_current_weather(args):
  return {"location": args["location"],
          **_weather(*_coords(args["location"]), args.get("units", "celsius"))}


def _forecast_slots(args, result):
  sym = _symbol(args, result)["sym"]
  days = result["forecast"]
  out = {"sym": sym, "summary": "; ".join(
      f"day {d['day']}: {d['condition']}, {d['high']}/{d['low']}{sym}" for d in days)}
  rain = [f"day {d['day']}" for d in days if "rain" in d["condition"]]
  if rain:
    out["rain_days"] = join(rain)
  return out


@_tool("get_weather_forecast", "weather", "Get a daily weather forecast for a city.",
       {"location": _str("City name"), "days": _int("Number of days to forecast", 1, 7),
        "units": _str("Temperature units (default celsius)", _UNITS)}, ["location", "days"],
       sample=lambda r: _opts(r, {"location": r.choice(_CITY_NAMES), "days": r.randint(2, 5)},
                              units=lambda: r.choice(_UNITS)),
       questions=("What's the forecast for {location} for the next {days} days?< Use {units}.>",
                  "Give me a {days}-day forecast for {location}< in {units}>.",
                  "I'm traveling to {location}. What will the weather be like over the next "
                  "{days} days<, in {units}>?",
                  "Will it rain in {location} in the next {days} days?< Temperatures in "
                  "{units}, please.>"),
       intent="get the {days}-day forecast for {location}< in {units}>",
       answers=("Here's the {days}-day forecast for {location}: {summary}.",
                "Forecast for {location}: {summary}.< Rain is expected on {rain_days}.>",
                "Over the next {days} days {location} can expect {summary}."),
       derive=_forecast_slots)
def _get_weather_forecast(args):
  lat, lon = _coords(args["location"])
  r = _seeded("forecast", round(lat, 1), round(lon, 1))
  units = args.get("units", "celsius")
  base = round(27 - 0.4 * abs(lat))
  days = []
  for d in range(args["days"]):
    high = base + r.randint(-4, 4)
    low = high - r.randint(5, 10)
    to = (lambda c: round(c * 9 / 5 + 32)) if units == "fahrenheit" else (lambda c: c)
    days.append({"day": d + 1, "high": to(high), "low": to(low), "condition": r.choice(
        ("sunny", "partly cloudy", "cloudy", "light rain", "rain", "clear", "thunderstorms"))})
  return {"location": args["location"], "units": units, "forecast": days}


def _aqi_category(aqi: int) -> str:
  for bound, name in ((50, "good"), (100, "moderate"), (150, "unhealthy for sensitive groups"),
                      (200, "unhealthy")):
    if aqi <= bound:
      return name
  return "very unhealthy"


@_tool("get_air_quality", "weather", "Get the current air quality index (AQI) for a city.",
       {"city": _str("City name")}, ["city"],
       sample=lambda r: {"city": r.choice(_CITY_NAMES)},
       questions=("How's the air quality in {city} today?", "What is the AQI in {city}?",
                  "Is the air in {city} clean enough for a run this morning?",
                  "Check the pollution level in {city}."),
       intent="look up the air quality index for {city}",
       answers=("The air quality index in {city} is {aqi} ({category}), with PM2.5 at "
                "{pm25} µg/m³.",
                "{city} has an AQI of {aqi}, rated {category}; the main pollutant is "
                "{dominant_pollutant}."))
def _get_air_quality(args):
  r = _seeded("aqi", args["city"].lower())
  aqi = r.randint(12, 180)
  return {"city": args["city"], "aqi": aqi, "category": _aqi_category(aqi),
          "pm25": round(aqi * 0.35 + r.uniform(0, 5), 1),
          "dominant_pollutant": r.choice(("pm2.5", "ozone", "no2", "pm10"))}


@_tool("get_weather_by_coordinates", "weather", "Get the current weather at a latitude and "
       "longitude.",
       {"latitude": _num("Latitude in degrees"), "longitude": _num("Longitude in degrees"),
        "units": _str("Temperature units (default celsius)", _UNITS)}, ["latitude", "longitude"],
       sample=lambda r: _opts(r, dict(zip(("latitude", "longitude"),
                                          _coords(r.choice(_CITY_NAMES)))),
                              units=lambda: r.choice(_UNITS)),
       questions=("What's the weather at latitude {latitude}, longitude {longitude}?< Use "
                  "{units}.>",
                  "Current conditions at coordinates {latitude}, {longitude}<, in {units}>?",
                  "I'm at {latitude}, {longitude}. What's the weather like here<, in {units}>?"),
       intent="get the weather at {latitude}, {longitude}< in {units}>",
       answers=("At {latitude}, {longitude} it's {temperature}{sym} and {condition}.",
                "The weather there is {condition}, {temperature}{sym}, with {humidity}% "
                "humidity."),
       derive=_symbol)
def _get_weather_by_coordinates(args):
  lat, lon = args["latitude"], args["longitude"]
  return {"latitude": lat, "longitude": lon, **_weather(lat, lon, args.get("units", "celsius"))}


@_tool("geocode_city", "maps", "Look up the latitude and longitude of a city.",
       {"city": _str("City name"), "country": _str("Country, to disambiguate")}, ["city"],
       sample=lambda r: (lambda c: _opts(r, {"city": c}, country=lambda: CITIES[c][0]))(
           r.choice(_CITY_NAMES)),
       questions=("What are the coordinates of {city}<, {country}>?",
                  "Find the latitude and longitude of {city}< in {country}>.",
                  "I need the GPS coordinates of {city}<, {country}>.",
                  "Geocode {city}< ({country})> for me."),
       intent="look up the coordinates of {city}<, {country}>",
       answers=("{city}, {country} is at latitude {latitude}, longitude {longitude}.",
                "The coordinates of {city} are {latitude}, {longitude}."))
def _geocode_city(args):
  city = args["city"]
  lat, lon = _coords(city)
  country = CITIES[city][0] if city in CITIES else args.get("country", "unknown")
  return {"city": city, "country": country, "latitude": lat, "longitude": lon}


_MODES = ("driving", "walking", "cycling", "transit")
_SPEED = {"driving": 80, "walking": 5, "cycling": 18, "transit": 60}
_NEAR_PAIRS = [(a, b) for a in _CITY_NAMES for b in _CITY_NAMES
               if a != b and _km(_coords(a), _coords(b)) < 1500]


@_tool("get_distance", "maps", "Get the travel distance and time between two places.",
       {"origin": _str("Starting place"), "destination": _str("Destination"),
        "mode": _str("Travel mode (default driving)", _MODES)}, ["origin", "destination"],
       sample=lambda r: (lambda p: _opts(r, {"origin": p[0], "destination": p[1]},
                                         mode=lambda: r.choice(_MODES)))(r.choice(_NEAR_PAIRS)),
       questions=("How far is it from {origin} to {destination}< by {mode}>?",
                  "What's the distance between {origin} and {destination}?< I'll be {mode}.>",
                  "How long does it take to get from {origin} to {destination}< by {mode}>?",
                  "Distance from {origin} to {destination}<, {mode}>?"),
       intent="get the distance from {origin} to {destination}< by {mode}>",
       answers=("It's about {distance_km} km from {origin} to {destination}, roughly "
                "{duration} by {mode}.",
                "{origin} to {destination} is {distance_km} km; {mode} takes about {duration}."),
       derive=lambda a, res: {"duration": _duration(res["duration_minutes"])})
def _get_distance(args):
  mode = args.get("mode", "driving")
  km = round(_km(_coords(args["origin"]), _coords(args["destination"])) * 1.25, 1)
  return {"origin": args["origin"], "destination": args["destination"], "mode": mode,
          "distance_km": km, "duration_minutes": round(km / _SPEED[mode] * 60)}


_PLACES = {"cafe": ("Blue Bottle Corner", "Bean There", "Café Central", "The Daily Grind"),
           "restaurant": ("The Olive Tree", "Harbor Kitchen", "Golden Wok", "Casa Verde"),
           "pharmacy": ("City Pharmacy", "HealthPlus", "Green Cross Pharmacy", "MediCare"),
           "atm": ("Central Bank ATM", "Metro Bank ATM", "Station ATM", "Mall ATM"),
           "hotel": ("Park Hotel", "Hotel Aurora", "The Grand", "Riverside Inn"),
           "park": ("Riverside Park", "Central Gardens", "Oak Hill Park", "Harbor Green"),
           "gas_station": ("QuickFuel", "Shell Station", "City Gas", "Highway Fuel")}


@_tool("find_nearby_places", "maps", "Find places of a given category near a location.",
       {"location": _str("City or address"), "category": _str("Kind of place", sorted(_PLACES)),
        "radius_m": _int("Search radius in meters (default 1000)", 100, 20000)},
       ["location", "category"],
       sample=lambda r: _opts(r, {"location": r.choice(_CITY_NAMES),
                                  "category": r.choice(sorted(_PLACES))},
                              radius_m=lambda: r.choice((500, 800, 1500, 2000, 3000))),
       questions=("Find a {category} near {location}< within {radius_m} meters>.",
                  "Is there a {category} close to {location}?< Search within {radius_m} m.>",
                  "I need a {category} in {location}<, no more than {radius_m} meters away>.",
                  "Show me {category} options around {location}< within {radius_m} m>."),
       intent="search for a {category} near {location}< within {radius_m} m>",
       answers=("The closest {category} options near {location} are {places_text}.",
                "I found {places_text} near {location}."),
       derive=lambda a, res: {"places_text": join(
           f"{p['name']} ({p['distance_m']} m)" for p in res["places"])})
def _find_nearby_places(args):
  r = _seeded("places", args["location"].lower(), args["category"])
  radius = args.get("radius_m", 1000)
  names = r.sample(_PLACES[args["category"]], 3)
  dists = sorted(r.randint(radius // 10, radius) for _ in names)
  return {"location": args["location"], "category": args["category"],
          "places": [{"name": n, "distance_m": d} for n, d in zip(names, dists)]}


# ----------------------------------------------------------------------------------------------
# Travel.

_CABINS = ("economy", "premium_economy", "business", "first")
_CABIN_FACTOR = {"economy": 1.0, "premium_economy": 1.6, "business": 3.2, "first": 5.0}
_AIRLINES = (("Air France", "AF"), ("British Airways", "BA"), ("Lufthansa", "LH"),
             ("Delta", "DL"), ("United", "UA"), ("Emirates", "EK"), ("Singapore Airlines", "SQ"),
             ("KLM", "KL"), ("Iberia", "IB"), ("Qantas", "QF"), ("Japan Airlines", "JL"),
             ("Turkish Airlines", "TK"))


def _two_airports(r: random.Random) -> dict:
  a, b = r.sample(sorted(_AIRPORTS), 2)
  return {"origin": a, "destination": b}


@_tool("search_flights", "travel", "Search flights between two airports on a date.",
       {"origin": _str("Departure airport IATA code, e.g. JFK"),
        "destination": _str("Arrival airport IATA code"),
        "date": _str("Departure date, YYYY-MM-DD"),
        "cabin_class": _str("Cabin class (default economy)", _CABINS),
        "passengers": _int("Number of passengers (default 1)", 1, 9)},
       ["origin", "destination", "date"],
       sample=lambda r: _opts(r, {**_two_airports(r), "date": _date(r)},
                              cabin_class=lambda: r.choice(_CABINS[1:]),
                              passengers=lambda: r.randint(2, 5)),
       questions=("Find flights from {origin} to {destination} on {date}< in {cabin_class}>"
                  "< for {passengers} passengers>.",
                  "I need to fly from {origin_city} ({origin}) to {destination_city} "
                  "({destination}) on {date}.< There are {passengers} of us.>< We'd like "
                  "{cabin_class}.>",
                  "What flights are there from {origin} to {destination} on {date}?< We are "
                  "{passengers} passengers.>< We want {cabin_class} class.>",
                  "Search {origin} to {destination} flights for {date}< in {cabin_class}>"
                  "< for {passengers} people>."),
       intent="search flights from {origin} to {destination} on {date}",
       answers=("The cheapest flight from {origin} to {destination} on {date} is "
                "{cheap_airline} {cheap_number} departing at {cheap_departure}, for "
                "${cheap_price} per person.",
                "I found {n_flights} flights: {flights_text}. The best price is {cheap_number} "
                "at ${cheap_price}."),
       derive=lambda a, res: (lambda c: {
           "cheap_airline": c["airline"], "cheap_number": c["flight_number"],
           "cheap_departure": c["departure"], "cheap_price": c["price_usd"],
           "n_flights": len(res["flights"]),
           "flights_text": join(f"{f['flight_number']} at {f['departure']} (${f['price_usd']})"
                                for f in res["flights"])})(_cheapest(res["flights"],
                                                                     "price_usd")),
       view=lambda a: {"origin_city": _AIRPORTS.get(a["origin"], a["origin"]),
                       "destination_city": _AIRPORTS.get(a["destination"],
                                                         a["destination"])})
def _search_flights(args):
  r = _seeded("flights", args["origin"], args["destination"], args["date"],
              args.get("cabin_class", "economy"))
  a, b = (_coords(_AIRPORTS.get(args[k], args[k])) for k in ("origin", "destination"))
  base = (60 + 0.09 * _km(a, b)) * _CABIN_FACTOR[args.get("cabin_class", "economy")]
  flights = []
  for airline, code in r.sample(_AIRLINES, 3):
    flights.append({"flight_number": f"{code}{r.randint(10, 2999)}", "airline": airline,
                    "departure": _clock(r, 6, 22),
                    "price_usd": round(base * r.uniform(0.8, 1.3))})
  return {"origin": args["origin"], "destination": args["destination"], "date": args["date"],
          "flights": sorted(flights, key=lambda f: f["departure"])}


@_tool("get_flight_status", "travel", "Get the live status of a flight by its flight number.",
       {"flight_number": _str("Flight number, e.g. BA117"),
        "date": _str("Flight date, YYYY-MM-DD (default today)")}, ["flight_number"],
       sample=lambda r: _opts(r, {"flight_number": r.choice(_AIRLINES)[1]
                                                   + str(r.randint(10, 2999))},
                              date=lambda: _date(r)),
       questions=("Is flight {flight_number} on time< on {date}>?",
                  "What's the status of {flight_number}< for {date}>?",
                  "Has {flight_number} been delayed< on {date}>?",
                  "Check flight {flight_number}< on {date}> for me."),
       intent="check the status of flight {flight_number}< on {date}>",
       answers=("Flight {flight_number} from {departure_airport} to {arrival_airport} is "
                "{status}: scheduled at {scheduled_departure}, expected at "
                "{estimated_departure}, gate {gate}.",
                "{flight_number} is {status}. It should leave {departure_airport} at "
                "{estimated_departure} (scheduled {scheduled_departure}) from gate {gate}."))
def _get_flight_status(args):
  r = _seeded("status", args["flight_number"].upper(), args.get("date"))
  dep, arr = r.sample(sorted(_AIRPORTS), 2)
  scheduled = _clock(r, 6, 22)
  status = r.choice(("on time", "on time", "delayed", "boarding", "in the air"))
  delay = r.choice((25, 40, 75, 120)) if status == "delayed" else 0
  return {"flight_number": args["flight_number"], "status": status, "departure_airport": dep,
          "arrival_airport": arr, "scheduled_departure": scheduled,
          "estimated_departure": _add_minutes(scheduled, delay)[0],
          "gate": f"{r.choice('ABCDE')}{r.randint(1, 40)}"}


_HOTELS = ("Grand Central Hotel", "The City Inn", "Hotel Aurora", "Riverside Suites",
           "Park View Lodge", "Harbor Lights Hotel", "Old Town Residence", "Skyline Hotel")


@_tool("search_hotels", "travel", "Search hotels in a city for given dates.",
       {"city": _str("City name"), "check_in": _str("Check-in date, YYYY-MM-DD"),
        "nights": _int("Number of nights", 1, 30), "guests": _int("Guests (default 2)", 1, 8),
        "max_price": _num("Highest nightly price in USD")}, ["city", "check_in", "nights"],
       sample=lambda r: _opts(r, {"city": r.choice(_CITY_NAMES), "check_in": _date(r),
                                  "nights": r.randint(1, 7)},
                              guests=lambda: r.randint(1, 4),
                              max_price=lambda: r.choice((120, 150, 200, 250))),
       questions=("Find me a hotel in {city} from {check_in} for {nights} nights< for {guests} "
                  "guests>< under ${max_price} a night>.",
                  "I need accommodation in {city}: check-in {check_in}, {nights} nights<, "
                  "{guests} guests><, max ${max_price} per night>.",
                  "Any hotels available in {city} on {check_in} for {nights} nights?< We're "
                  "{guests}.>< Budget is ${max_price} a night.>"),
       intent="search hotels in {city} from {check_in} for {nights} nights",
       answers=("The best-value option is {cheap_name} at ${cheap_price} a night (rated "
                "{cheap_rating}), ${cheap_total} for {nights} nights.",
                "I found {hotels_text} in {city}. {cheap_name} is the cheapest at "
                "${cheap_price} per night."),
       derive=lambda a, res: (lambda c: {
           "cheap_name": c["name"], "cheap_price": c["price_per_night_usd"],
           "cheap_rating": c["rating"], "cheap_total": c["price_per_night_usd"] * a["nights"],
           "hotels_text": join(f"{h['name']} (${h['price_per_night_usd']}/night)"
                               for h in res["hotels"])})(
                                   _cheapest(res["hotels"], "price_per_night_usd")))
def _search_hotels(args):
  r = _seeded("hotels", args["city"].lower(), args["check_in"])
  top = int(args.get("max_price", 400))
  hotels = [{"name": n, "price_per_night_usd": r.randint(min(60, top), top),
             "rating": round(r.uniform(3.5, 4.9), 1)} for n in r.sample(_HOTELS, 3)]
  return {"city": args["city"], "check_in": args["check_in"], "nights": args["nights"],
          "hotels": hotels}


# ----------------------------------------------------------------------------------------------
# Currency and finance.


def _convert(amount: float, src: str, dst: str) -> tuple[float, float]:
  rate = RATES[dst] / RATES[src]
  return round(rate, 4), round(amount * rate, 2)


def _currency_pair(r: random.Random) -> tuple[str, str]:
  a, b = r.sample(_CURRENCIES, 2)
  return a, b


@_tool("convert_currency", "finance", "Convert an amount of money from one currency to another.",
       {"amount": _num("Amount to convert"),
        "from_currency": _str("ISO 4217 code of the source currency, e.g. USD"),
        "to_currency": _str("ISO 4217 code of the target currency, e.g. EUR")},
       ["amount", "from_currency", "to_currency"],
       sample=lambda r: (lambda p: {"amount": r.choice((20, 45, 75, 100, 250, 500, 1200, 3000)),
                                    "from_currency": p[0], "to_currency": p[1]})(
                                        _currency_pair(r)),
       questions=("Convert {amount} {from_currency} to {to_currency}.",
                  "How much is {amount} {from_currency} in {to_currency}?",
                  "I have {amount} {from_currency}. What's that in {to_currency}?",
                  "What would {amount} {from_currency} be worth in {to_currency}?"),
       intent="convert {amount} {from_currency} to {to_currency}",
       answers=("{amount} {from_currency} is about {converted_amount:,.2f} {to_currency} "
                "(rate {rate}).",
                "That comes to {converted_amount:,.2f} {to_currency} at a rate of {rate} "
                "{to_currency} per {from_currency}."))
def _convert_currency(args):
  src, dst = args["from_currency"].upper(), args["to_currency"].upper()
  if src not in RATES or dst not in RATES:
    return {"error": f"unsupported currency {src if src not in RATES else dst}"}
  rate, converted = _convert(args["amount"], src, dst)
  return {"amount": args["amount"], "from_currency": src, "to_currency": dst, "rate": rate,
          "converted_amount": converted}


@_tool("get_exchange_rate", "finance", "Get the current exchange rate between two currencies.",
       {"base": _str("ISO 4217 code of the base currency"),
        "target": _str("ISO 4217 code of the quote currency")}, ["base", "target"],
       sample=lambda r: dict(zip(("base", "target"), _currency_pair(r))),
       questions=("What's the exchange rate from {base} to {target}?",
                  "How many {target} does one {base} buy today?",
                  "{base} to {target} rate, please.",
                  "What is the current {base}/{target} exchange rate?"),
       intent="get the {base} to {target} exchange rate",
       answers=("1 {base} = {rate} {target} right now.",
                "The current rate is {rate} {target} per {base}."))
def _get_exchange_rate(args):
  base, target = args["base"].upper(), args["target"].upper()
  if base not in RATES or target not in RATES:
    return {"error": f"unsupported currency {base if base not in RATES else target}"}
  return {"base": base, "target": target, "rate": _convert(1, base, target)[0],
          "date": "2025-06-15"}


_COINS = {"bitcoin": 65000.0, "ethereum": 3400.0, "solana": 150.0, "cardano": 0.45,
          "dogecoin": 0.15}


@_tool("get_crypto_price", "finance", "Get the current price of a cryptocurrency.",
       {"coin": _str("Cryptocurrency", sorted(_COINS)),
        "currency": _str("ISO 4217 code to quote in (default USD)")}, ["coin"],
       sample=lambda r: _opts(r, {"coin": r.choice(sorted(_COINS))},
                              currency=lambda: r.choice(("EUR", "GBP", "JPY", "CAD", "AUD"))),
       questions=("What's the price of {coin} right now< in {currency}>?",
                  "How much is one {coin} worth< in {currency}>?",
                  "Check the current {coin} price< in {currency}> for me.",
                  "Give me the latest {coin} quote< in {currency}>."),
       intent="get the current {coin} price< in {currency}>",
       answers=("One {coin} is currently worth {price:,} {currency} ({change_24h_percent}% "
                "in 24 h).",
                "{coin} is trading at {price:,} {currency}, {change_24h_percent}% over the "
                "last day."))
def _get_crypto_price(args):
  coin, currency = args["coin"], args.get("currency", "USD").upper()
  r = _seeded("coin", coin)
  usd = _COINS.get(coin, 1.0) * r.uniform(0.9, 1.1)
  price = usd * RATES.get(currency, 1.0)
  return {"coin": coin, "currency": currency,
          "price": round(price, 2) if price >= 1 else round(price, 4),
          "change_24h_percent": round(r.uniform(-6, 6), 2)}


@_tool("calculate_loan_payment", "finance", "Monthly payment and total interest of a fixed-rate "
       "loan.",
       {"principal": _num("Loan amount"), "annual_rate": _num("Annual interest rate in percent"),
        "years": _int("Loan term in years", 1, 40)}, ["principal", "annual_rate", "years"],
       sample=lambda r: {"principal": r.choice((5000, 12000, 25000, 40000, 150000, 320000)),
                         "annual_rate": r.choice((3.5, 4.25, 5, 6.5, 7.9)),
                         "years": r.choice((3, 5, 10, 15, 30))},
       questions=("What would the monthly payment be on a {principal} loan at {annual_rate}% "
                  "for {years} years?",
                  "I'm borrowing {principal} over {years} years at {annual_rate}% interest. "
                  "How much per month?",
                  "Calculate the payments for a {years}-year loan of {principal} at "
                  "{annual_rate}% APR."),
       intent="compute the payment on a {principal} loan at {annual_rate}% over {years} years",
       answers=("The monthly payment would be {monthly_payment:,.2f}, with "
                "{total_interest:,.2f} paid in interest over {years} years.",
                "You'd pay {monthly_payment:,.2f} a month; total interest comes to "
                "{total_interest:,.2f}."))
def _calculate_loan_payment(args):
  p, n = args["principal"], args["years"] * 12
  rate = args["annual_rate"] / 1200
  monthly = p / n if rate == 0 else p * rate / (1 - (1 + rate) ** -n)
  return {"monthly_payment": round(monthly, 2), "total_interest": round(monthly * n - p, 2)}


# ----------------------------------------------------------------------------------------------
# Stocks.


@_tool("lookup_ticker", "stocks", "Find the stock ticker symbol of a company.",
       {"company": _str("Company name")}, ["company"],
       sample=lambda r: {"company": r.choice(sorted(COMPANIES))},
       questions=("What's the ticker symbol for {company}?",
                  "Under which symbol does {company} trade?",
                  "Look up the stock ticker of {company}."),
       intent="look up the ticker symbol of {company}",
       answers=("{company} trades as {symbol} on the {exchange}.",
                "The ticker for {company} is {symbol} ({exchange})."))
def _lookup_ticker(args):
  name = args["company"]
  match = next((k for k in COMPANIES if k.lower() == name.lower()), None)
  if match is None:
    return {"error": f"no listed company named {name}"}
  return {"company": match, "symbol": COMPANIES[match][0], "exchange": COMPANIES[match][1]}


def _stock_price(symbol: str) -> tuple[float, random.Random]:
  r = _seeded("stock", symbol.upper())
  base = _SYMBOLS[symbol.upper()][3] if symbol.upper() in _SYMBOLS else r.uniform(10, 300)
  return round(base * r.uniform(0.94, 1.06), 2), r


@_tool("get_stock_price", "stocks", "Get the latest stock price for a ticker symbol.",
       {"symbol": _str("Ticker symbol, e.g. AAPL")}, ["symbol"],
       sample=lambda r: {"symbol": r.choice(sorted(_SYMBOLS))},
       questions=("What's {symbol} trading at?", "Get me the current price of {symbol} stock.",
                  "How is {symbol} doing today?", "Latest share price for {symbol}?"),
       intent="get the latest price of {symbol}",
       answers=("{symbol} is trading at ${price:.2f}, {change_percent}% today.",
                "The latest {symbol} price is ${price:.2f} ({change_percent}% on the day)."))
def _get_stock_price(args):
  price, r = _stock_price(args["symbol"])
  return {"symbol": args["symbol"].upper(), "price": price, "currency": "USD",
          "change_percent": round(r.uniform(-3, 3), 2)}


@_tool("get_stock_history", "stocks", "Get recent daily closing prices of a stock.",
       {"symbol": _str("Ticker symbol"), "days": _int("Number of trading days", 2, 30)},
       ["symbol", "days"],
       sample=lambda r: {"symbol": r.choice(sorted(_SYMBOLS)), "days": r.randint(3, 7)},
       questions=("Show me {symbol}'s closing prices for the last {days} days.",
                  "How has {symbol} moved over the past {days} trading days?",
                  "Give me the {days}-day price history of {symbol}."),
       intent="fetch the last {days} closing prices of {symbol}",
       answers=("{symbol} closed at {closes_text} over the last {days} days (oldest first).",
                "Over {days} days {symbol} went from ${first:.2f} to ${last:.2f}."),
       derive=lambda a, res: {"closes_text": join(f"${c:.2f}" for c in res["closes"]),
                              "first": res["closes"][0], "last": res["closes"][-1]})
def _get_stock_history(args):
  price, r = _stock_price(args["symbol"])
  closes = [price]
  for _ in range(args["days"] - 1):
    closes.append(round(closes[-1] * r.uniform(0.97, 1.03), 2))
  return {"symbol": args["symbol"].upper(), "closes": closes[::-1]}


# ----------------------------------------------------------------------------------------------
# Calendar and email.


def _email_of(name: str) -> str:
  domain = _seeded("domain", name).choice(("example.com", "mail.com", "work.org"))
  return name.lower().replace(" ", ".").replace("'", "") + "@" + domain


@_tool("create_calendar_event", "calendar", "Create an event in the user's calendar.",
       {"title": _str("Event title"), "date": _str("Date, YYYY-MM-DD"),
        "start_time": _str("Start time, HH:MM (24-hour)"),
        "duration_minutes": _int("Length in minutes (default 60)", 5, 600),
        "attendees": _arr("Email addresses to invite", "string")},
       ["title", "date", "start_time"],
       sample=lambda r: _opts(r, {"title": r.choice(_EVENTS), "date": _date(r),
                                  "start_time": _clock(r)},
                              duration_minutes=lambda: r.choice((15, 30, 45, 90, 120)),
                              attendees=lambda: [_email_of(c) for c in r.sample(CONTACTS, 2)]),
       questions=("Add '{title}' to my calendar on {date} at {start_time}< for "
                  "{duration_minutes} minutes>< and invite {attendees}>.",
                  "Schedule {title} for {date} at {start_time}<, lasting {duration_minutes} "
                  "minutes><, with {attendees}>.",
                  "Put \"{title}\" in my calendar: {date}, {start_time}<, {duration_minutes} "
                  "min>.< Invite {attendees}.>"),
       intent="create the event '{title}' on {date} at {start_time}",
       answers=("Done: '{title}' is on your calendar for {date} from {start_time} to "
                "{end_time}.< Invitations went to {attendees}.>",
                "I've scheduled {title} on {date}, {start_time}-{end_time} (event {event_id})."))
def _create_calendar_event(args):
  r = _seeded("event", args)
  out = {"event_id": f"evt_{r.randrange(16 ** 6):06x}", "title": args["title"],
         "date": args["date"], "start_time": args["start_time"],
         "end_time": _add_minutes(args["start_time"], args.get("duration_minutes", 60))[0],
         "status": "confirmed"}
  if args.get("attendees"):
    out["attendees"] = args["attendees"]
  return out


@_tool("list_calendar_events", "calendar", "List the events in the user's calendar on a date.",
       {"date": _str("Date, YYYY-MM-DD")}, ["date"],
       sample=lambda r: {"date": _date(r)},
       questions=("What's on my calendar on {date}?", "Do I have any meetings on {date}?",
                  "List my events for {date}.", "What does my schedule look like on {date}?"),
       intent="list the calendar events on {date}",
       answers=("On {date} you have {events_text}.",
                "You have {n_events} event(s) on {date}: {events_text}."),
       derive=lambda a, res: {"n_events": len(res["events"]), "events_text": join(
           f"{e['title']} at {e['start_time']}" for e in res["events"]),
                              "first_title": res["events"][0]["title"],
                              "first_start": res["events"][0]["start_time"]})
def _list_calendar_events(args):
  r = _seeded("calendar", args["date"])
  starts = sorted(r.sample(range(8, 19), r.randint(1, 3)))
  return {"date": args["date"], "events": [
      {"title": t, "start_time": f"{h:02d}:{r.choice((0, 30)):02d}"}
      for t, h in zip(r.sample(_EVENTS, len(starts)), starts)]}


@_tool("set_reminder", "calendar", "Set a reminder that notifies the user at a date and time.",
       {"message": _str("What to be reminded of"), "date": _str("Date, YYYY-MM-DD"),
        "time": _str("Time, HH:MM (24-hour)")}, ["message", "date", "time"],
       sample=lambda r: {"message": r.choice(("Call mom", "Take the medication",
                                              "Pay the electricity bill", "Water the plants",
                                              "Submit the expense report", "Pick up the dry "
                                              "cleaning")), "date": _date(r),
                         "time": _clock(r)},
       questions=("Remind me to {task} on {date} at {time}.",
                  "Set a reminder for {date} at {time}: {task}.",
                  "Can you remind me at {time} on {date} to {task}?"),
       intent="set a reminder '{message}' for {date} at {time}",
       answers=("Reminder set: '{message}' on {date} at {time}.",
                "Okay, I'll remind you to {task} at {time} on {date}."),
       view=lambda a: {"task": a["message"][:1].lower() + a["message"][1:]})
def _set_reminder(args):
  r = _seeded("reminder", args)
  return {"reminder_id": f"rem_{r.randrange(16 ** 6):06x}", "message": args["message"],
          "date": args["date"], "time": args["time"], "status": "scheduled"}


@_tool("search_contacts", "email", "Find a person in the user's contacts by name.",
       {"name": _str("Full or partial name")}, ["name"],
       sample=lambda r: {"name": r.choice(CONTACTS)},
       questions=("What's {name}'s email address?", "Find {name} in my contacts.",
                  "Look up the phone number for {name}.", "How can I reach {name}?"),
       intent="look up {name} in the contacts",
       answers=("{name}'s email is {email} and their phone number is {phone}.",
                "I found {name}: {email}, {phone}."))
def _search_contacts(args):
  match = [c for c in CONTACTS if args["name"].lower() in c.lower()]
  if not match:
    return {"error": f"no contact matches {args['name']}"}
  name = match[0]
  r = _seeded("phone", name)
  return {"name": name, "email": _email_of(name), "phone": f"+1-555-{r.randint(100, 999)}-"
                                                            f"{r.randint(1000, 9999)}"}


def _email_args(r: random.Random, to: str) -> dict:
  subject, body = r.choice(_EMAILS)
  return {"to": to, "subject": subject, "body": body}


@_tool("send_email", "email", "Send an email.",
       {"to": _str("Recipient email address"), "subject": _str("Subject line"),
        "body": _str("Message text"), "cc": _str("Email address to copy")},
       ["to", "subject", "body"],
       sample=lambda r: _opts(r, _email_args(r, _email_of(r.choice(CONTACTS))), p=0.25,
                              cc=lambda: _email_of(r.choice(CONTACTS))),
       questions=("Send an email to {to} with the subject '{subject}' saying: {body}<"
                  " Copy {cc}.>",
                  "Email {to}< (cc {cc})>. Subject: {subject}. Message: \"{body}\"",
                  "Please write to {to}< and cc {cc}> with subject \"{subject}\" and the text "
                  "\"{body}\""),
       intent="send the email '{subject}' to {to}",
       answers=("Your email '{subject}' was sent to {to}.",
                "Sent! {to} will receive \"{subject}\" (message id {message_id})."))
def _send_email(args):
  r = _seeded("send", args)
  return {"status": "sent", "message_id": f"msg_{r.randrange(16 ** 8):08x}", "to": args["to"]}


_FOLDERS = ("inbox", "sent", "archive")


@_tool("search_emails", "email", "Search the user's mailbox.",
       {"query": _str("Words to search for"), "folder": _str("Folder (default inbox)", _FOLDERS),
        "limit": _int("Most results to return (default 3)", 1, 10)}, ["query"],
       sample=lambda r: _opts(r, {"query": r.choice(("invoice", "flight", "meeting notes",
                                                     "receipt", "password reset", "order "
                                                     "confirmation", "newsletter"))},
                              folder=lambda: r.choice(_FOLDERS), limit=lambda: r.randint(1, 5)),
       questions=("Find emails about {query}< in my {folder} folder><, at most {limit}>.",
                  "Search my mail for \"{query}\"< in {folder}>.< Show {limit} results.>",
                  "Did I get any emails about {query}?< Look in {folder}.>< Up to {limit}, "
                  "please.>"),
       intent="search the mailbox for \"{query}\"< in {folder}>",
       answers=("I found {n_found} email(s) about {query}: {emails_text}.",
                "Matching emails: {emails_text}."),
       derive=lambda a, res: {"n_found": len(res["emails"]), "emails_text": join(
           f"\"{e['subject']}\" from {e['from']} ({e['date']})" for e in res["emails"])})
def _search_emails(args):
  r = _seeded("mailbox", args["query"].lower(), args.get("folder", "inbox"))
  n = min(args.get("limit", 3), r.randint(1, 3))
  q = args["query"].capitalize()
  subjects = (f"{q} #{r.randint(1000, 9999)}", f"Re: {q}", f"Your {args['query']}",
              f"{q} - action needed")
  return {"folder": args.get("folder", "inbox"), "emails": [
      {"from": _email_of(c), "subject": s, "date": _date(r)}
      for c, s in zip(r.sample(CONTACTS, n), r.sample(subjects, n))]}


# ----------------------------------------------------------------------------------------------
# Recipes and nutrition.

_MEAT = ("chicken", "beef", "salmon", "shrimp")
_PLANT = ("tofu", "chickpeas", "mushrooms", "lentils", "eggplant", "broccoli", "potatoes")
_DIETS = ("vegetarian", "vegan", "gluten_free", "low_carb")
# (name pattern, base minutes, extra ingredients, diets it does not suit)
_STYLES = (("Lemon Garlic {} Skillet", 25, ("olive oil", "garlic", "lemon", "parsley"), ()),
           ("Spicy {} Stir-Fry", 20, ("soy sauce", "chili", "ginger", "rice"), ()),
           ("Creamy {} Pasta", 30, ("pasta", "cream", "parmesan", "garlic"),
            ("vegan", "gluten_free", "low_carb")),
           ("{} Curry", 40, ("coconut milk", "curry paste", "onion", "rice"), ()),
           ("Roasted {} Tray Bake", 45, ("olive oil", "peppers", "red onion", "thyme"), ()),
           ("{} Tacos", 25, ("tortillas", "salsa", "lime", "cilantro"),
            ("gluten_free", "low_carb")),
           ("Honey Soy {} Bowl", 30, ("honey", "soy sauce", "rice", "sesame"),
            ("vegan", "low_carb")),
           ("Mediterranean {} Salad", 15, ("cucumber", "tomatoes", "feta", "olives"),
            ("vegan",)))


def _recipe(ingredient: str, idx: int) -> dict:
  pattern, minutes, extra, _ = _STYLES[idx]
  return {"recipe_id": f"rcp_{ingredient}_{idx}",
          "name": pattern.format(ingredient.capitalize()),
          "time_minutes": minutes + 5 * (len(ingredient) % 3)}


def _recipe_args(r: random.Random) -> dict:
  diet = r.choice(_DIETS) if r.random() < 0.4 else None
  pool = _PLANT if diet in ("vegetarian", "vegan") else _MEAT + _PLANT
  args = {"ingredient": r.choice(pool)}
  if diet:
    args["diet"] = diet
  if r.random() < 0.3:
    args["max_time_minutes"] = r.choice((30, 45, 60))
  return args


@_tool("search_recipes", "recipes", "Search recipes by main ingredient.",
       {"ingredient": _str("Main ingredient"), "diet": _str("Dietary restriction", _DIETS),
        "max_time_minutes": _int("Longest total cooking time", 5, 240)}, ["ingredient"],
       sample=_recipe_args,
       questions=("Find me a< {diet}> recipe with {ingredient}< that takes under "
                  "{max_time_minutes} minutes>.",
                  "What can I cook with {ingredient}?< It has to be {diet}.>< I have "
                  "{max_time_minutes} minutes.>",
                  "Suggest some< {diet}> {ingredient} recipes< ready in {max_time_minutes} "
                  "minutes or less>.",
                  "I've got {ingredient} in the fridge. Any< {diet}> recipe ideas< under "
                  "{max_time_minutes} minutes>?"),
       intent="search< {diet}> recipes with {ingredient}",
       answers=("Here are some ideas: {recipes_text}.",
                "You could make {first_name} ({first_time} min)< or {others}>."),
       derive=lambda a, res: {
           "recipes_text": join(f"{x['name']} ({x['time_minutes']} min)"
                                for x in res["recipes"]) if res["recipes"] else "none found",
           **({"first_name": res["recipes"][0]["name"],
               "first_time": res["recipes"][0]["time_minutes"]} if res["recipes"] else
              {"first_name": "nothing that fits", "first_time": 0}),
           **({"others": join(x["name"] for x in res["recipes"][1:])}
              if len(res["recipes"]) > 1 else {})})
def _search_recipes(args):
  ingredient = args["ingredient"].lower()
  r = _seeded("recipes", ingredient, args.get("diet"))
  found = []
  for idx in r.sample(range(len(_STYLES)), len(_STYLES)):
    recipe = _recipe(ingredient, idx)
    if (args.get("diet") in _STYLES[idx][3]
        or recipe["time_minutes"] > args.get("max_time_minutes", 1e9)):
      continue
    found.append(recipe)
  return {"ingredient": ingredient, "recipes": found[:3]}


@_tool("get_recipe_details", "recipes", "Get the ingredients and cooking time of a recipe.",
       {"recipe_id": _str("Recipe id from search_recipes, e.g. rcp_tofu_3")}, ["recipe_id"],
       sample=lambda r: {"recipe_id": _recipe(r.choice(_MEAT + _PLANT),
                                              r.randrange(len(_STYLES)))["recipe_id"]},
       questions=("Show me the full recipe for {recipe_id}.",
                  "What ingredients do I need for recipe {recipe_id}?",
                  "Get the details of recipe {recipe_id}."),
       intent="get the details of recipe {recipe_id}",
       answers=("{name} serves {servings} and takes {time_minutes} minutes. You'll need "
                "{ingredients_text}.",
                "For {name} ({time_minutes} min, {servings} servings): {ingredients_text}."),
       derive=lambda a, res: {"ingredients_text": join(res.get("ingredients", []))})
def _get_recipe_details(args):
  m = re.fullmatch(r"rcp_([a-z]+)_(\d+)", args["recipe_id"])
  if not m or int(m.group(2)) >= len(_STYLES):
    return {"error": f"unknown recipe id {args['recipe_id']}"}
  ingredient, idx = m.group(1), int(m.group(2))
  recipe = _recipe(ingredient, idx)
  return {**recipe, "servings": 2 + len(ingredient) % 3,
          "ingredients": [ingredient] + list(_STYLES[idx][2])}


# per 100 g: kcal, protein g, carbohydrate g, fat g
NUTRITION = {"apple": (52, 0.3, 14, 0.2), "banana": (89, 1.1, 23, 0.3),
             "cooked rice": (130, 2.7, 28, 0.3), "chicken breast": (165, 31, 0, 3.6),
             "egg": (155, 13, 1.1, 11), "almonds": (579, 21, 22, 50),
             "broccoli": (34, 2.8, 7, 0.4), "salmon": (208, 20, 0, 13), "oats": (389, 17, 66, 7),
             "avocado": (160, 2, 9, 15), "whole wheat bread": (247, 13, 41, 3.4),
             "whole milk": (61, 3.2, 4.8, 3.3), "cheddar cheese": (403, 25, 1.3, 33),
             "potato": (77, 2, 17, 0.1), "spinach": (23, 2.9, 3.6, 0.4),
             "greek yogurt": (59, 10, 3.6, 0.4), "dark chocolate": (546, 4.9, 61, 31)}


@_tool("get_nutrition_info", "recipes", "Get calories and macronutrients of a food.",
       {"food": _str("Food name"), "quantity_grams": _num("Amount in grams (default 100)")},
       ["food"],
       sample=lambda r: _opts(r, {"food": r.choice(sorted(NUTRITION))},
                              quantity_grams=lambda: r.choice((30, 50, 150, 200, 250))),
       questions=("How many calories are in< {quantity_grams} g of> {food}?",
                  "What's the nutritional value of {food}< ({quantity_grams} grams)>?",
                  "Give me the macros for< {quantity_grams} g of> {food}.",
                  "How much protein does {food} have< in a {quantity_grams} g serving>?"),
       intent="look up the nutrition facts of {food}< for {quantity_grams} g>",
       answers=("{quantity_grams} g of {food} has {calories} kcal, {protein_g} g protein, "
                "{carbs_g} g carbs and {fat_g} g fat.",
                "{food} ({quantity_grams} g): {calories} kcal; protein {protein_g} g, carbs "
                "{carbs_g} g, fat {fat_g} g."))
def _get_nutrition_info(args):
  food = args["food"].lower()
  if food not in NUTRITION:
    return {"error": f"no nutrition data for {args['food']}"}
  grams = args.get("quantity_grams", 100)
  kcal, protein, carbs, fat = (v * grams / 100 for v in NUTRITION[food])
  return {"food": food, "quantity_grams": grams, "calories": round(kcal),
          "protein_g": round(protein, 1), "carbs_g": round(carbs, 1), "fat_g": round(fat, 1)}


# ----------------------------------------------------------------------------------------------
# Units.

# unit: (kind, size in the kind's base unit: meter, gram, milliliter)
UNITS = {"kilometers": ("length", 1000.0), "miles": ("length", 1609.344),
         "meters": ("length", 1.0), "feet": ("length", 0.3048), "inches": ("length", 0.0254),
         "centimeters": ("length", 0.01), "kilograms": ("mass", 1000.0),
         "pounds": ("mass", 453.59237), "grams": ("mass", 1.0), "ounces": ("mass", 28.349523125),
         "liters": ("volume", 1000.0), "gallons": ("volume", 3785.411784),
         "milliliters": ("volume", 1.0), "cups": ("volume", 236.5882365)}


def _unit_args(r: random.Random) -> dict:
  kind = r.choice(("length", "mass", "volume"))
  a, b = r.sample([u for u, (k, _) in UNITS.items() if k == kind], 2)
  return {"value": r.choice((1, 2.5, 5, 10, 12, 26.2, 100, 250, 500)), "from_unit": a,
          "to_unit": b}


@_tool("convert_units", "units", "Convert a length, mass or volume between units.",
       {"value": _num("Quantity to convert"), "from_unit": _str("Unit of the value", UNITS),
        "to_unit": _str("Unit to convert to", UNITS)}, ["value", "from_unit", "to_unit"],
       sample=_unit_args,
       questions=("Convert {value} {from_unit} to {to_unit}.",
                  "How many {to_unit} is {value} {from_unit}?",
                  "What is {value} {from_unit} in {to_unit}?",
                  "I have {value} {from_unit}; how much is that in {to_unit}?"),
       intent="convert {value} {from_unit} to {to_unit}",
       answers=("{value} {from_unit} is {result} {to_unit}.",
                "That's {result} {to_unit}."))
def _convert_units(args):
  (k1, f1), (k2, f2) = UNITS[args["from_unit"]], UNITS[args["to_unit"]]
  if k1 != k2:
    return {"error": f"cannot convert {k1} to {k2}"}
  return {"value": args["value"], "from_unit": args["from_unit"], "to_unit": args["to_unit"],
          "result": round(args["value"] * f1 / f2, 3)}


_SCALES = ("celsius", "fahrenheit", "kelvin")


@_tool("convert_temperature", "units", "Convert a temperature between Celsius, Fahrenheit and "
       "Kelvin.",
       {"value": _num("Temperature to convert"), "from_scale": _str("Scale of the value", _SCALES),
        "to_scale": _str("Scale to convert to", _SCALES)}, ["value", "from_scale", "to_scale"],
       sample=lambda r: (lambda p: {"value": r.choice((-40, -5, 0, 18, 25, 37, 98.6, 100, 300)),
                                    "from_scale": p[0], "to_scale": p[1]})(r.sample(_SCALES, 2)),
       questions=("Convert {value} degrees {from_scale} to {to_scale}.",
                  "What is {value} {from_scale} in {to_scale}?",
                  "If it's {value} {from_scale}, what's that in {to_scale}?"),
       intent="convert {value} {from_scale} to {to_scale}",
       answers=("{value} {from_scale} equals {result} {to_scale}.",
                "That's {result} degrees {to_scale}."))
def _convert_temperature(args):
  v = args["value"]
  kelvin = {"celsius": v + 273.15, "fahrenheit": (v - 32) * 5 / 9 + 273.15,
            "kelvin": v}[args["from_scale"]]
  out = {"celsius": kelvin - 273.15, "fahrenheit": (kelvin - 273.15) * 9 / 5 + 32,
         "kelvin": kelvin}[args["to_scale"]]
  return {"value": v, "from_scale": args["from_scale"], "to_scale": args["to_scale"],
          "result": round(out, 2)}


# ----------------------------------------------------------------------------------------------
# Language.


def _translate_args(r: random.Random) -> dict:
  row = r.choice(PHRASES)
  src = "English" if r.random() < 0.6 else r.choice(LANGUAGES[1:])
  dst = r.choice([l for l in LANGUAGES if l != src])
  return _opts(r, {"text": row[LANGUAGES.index(src)], "target_language": dst}, p=0.3,
               source_language=lambda: src)


@_tool("translate_text", "language", "Translate text into another language.",
       {"text": _str("Text to translate"),
        "target_language": _str("Language to translate into", LANGUAGES),
        "source_language": _str("Language of the text (default: detect)", LANGUAGES)},
       ["text", "target_language"],
       sample=_translate_args,
       questions=("Translate '{text}' into {target_language}.< It's {source_language}.>",
                  "How do you say \"{text}\" in {target_language}?< The text is "
                  "{source_language}.>",
                  "What is '{text}'< ({source_language})> in {target_language}?",
                  "Can you put \"{text}\"< ({source_language})> into {target_language} for "
                  "me?"),
       intent="translate \"{text}\" into {target_language}",
       answers=("In {target_language}, \"{text}\" is \"{translated_text}\".",
                "\"{translated_text}\" is the {target_language} translation."))
def _translate_text(args):
  found = _PHRASE_INDEX.get(args["text"].strip())
  dst = args["target_language"]
  if found is None:
    return {"translated_text": f"[{dst}] {args['text']}", "target_language": dst}
  row, src = found
  return {"translated_text": PHRASES[row][LANGUAGES.index(dst)],
          "source_language": args.get("source_language", src), "target_language": dst}


@_tool("detect_language", "language", "Detect which language a text is written in.",
       {"text": _str("Text to analyse")}, ["text"],
       sample=lambda r: {"text": r.choice(r.choice(PHRASES)[1:])},
       questions=("What language is '{text}' written in?", "Which language is this: \"{text}\"?",
                  "Can you identify the language of \"{text}\"?"),
       intent="detect the language of \"{text}\"",
       answers=("That's {language} (confidence {confidence}).",
                "\"{text}\" is written in {language}."))
def _detect_language(args):
  found = _PHRASE_INDEX.get(args["text"].strip())
  r = _seeded("detect", args["text"])
  return {"language": found[1] if found else "English",
          "confidence": round(r.uniform(0.9, 0.99) if found else r.uniform(0.4, 0.6), 2)}


DICTIONARY = {
    "serendipity": ("noun", "finding something good or useful by chance"),
    "ephemeral": ("adjective", "lasting only a very short time"),
    "ubiquitous": ("adjective", "seeming to be everywhere at once"),
    "eloquent": ("adjective", "expressing ideas fluently and persuasively"),
    "resilient": ("adjective", "able to recover quickly from setbacks"),
    "meticulous": ("adjective", "very careful about small details"),
    "pragmatic": ("adjective", "dealing with problems in a practical, realistic way"),
    "benevolent": ("adjective", "kind and wishing to do good"),
    "candid": ("adjective", "honest and direct"),
    "gregarious": ("adjective", "enjoying the company of others; sociable"),
    "nostalgia": ("noun", "a wistful longing for the past"),
    "paradox": ("noun", "a statement that seems to contradict itself but may be true"),
    "verbose": ("adjective", "using more words than needed"),
    "ambiguous": ("adjective", "having more than one possible meaning"),
}


@_tool("define_word", "language", "Look up the dictionary definition of an English word.",
       {"word": _str("The word")}, ["word"],
       sample=lambda r: {"word": r.choice(sorted(DICTIONARY))},
       questions=("What does '{word}' mean?", "Define {word}.",
                  "What's the meaning of the word \"{word}\"?",
                  "Look up {word} in the dictionary."),
       intent="look up the definition of \"{word}\"",
       answers=("\"{word}\" ({part_of_speech}): {definition}.",
                "{word} is a {part_of_speech} meaning {definition}."))
def _define_word(args):
  word = args["word"].lower()
  if word not in DICTIONARY:
    return {"error": f"no entry for {args['word']}"}
  pos, definition = DICTIONARY[word]
  return {"word": word, "part_of_speech": pos, "definition": definition}


# ----------------------------------------------------------------------------------------------
# News and sports.

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
       {"category": _str("News category", sorted(_HEADLINES)),
        "country": _str("Country edition, e.g. Canada"),
        "limit": _int("Number of headlines (default 3)", 1, 4)}, ["category"],
       sample=lambda r: _opts(r, {"category": r.choice(sorted(_HEADLINES))},
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
  r = _seeded("news", args["category"], args.get("country"))
  pool = list(_HEADLINES.get(args["category"], _HEADLINES["business"]))
  picked = r.sample(pool, min(args.get("limit", 3), len(pool)))
  city = r.choice(_CITY_NAMES)
  fills = {"company": r.choice(sorted(COMPANIES)), "city": city,
           "country": CITIES[city][0], "team": r.choice(sorted(_LEAGUE_OF)),
           "movie": r.choice(MOVIES)}
  return {"category": args["category"], "headlines": [h.format(**fills) for h in picked]}


def _score(r: random.Random, league: str) -> tuple[int, int]:
  if league == "NBA":
    return r.randint(92, 128), r.randint(92, 128)
  return r.randint(0, 4), r.randint(0, 3)


@_tool("get_match_results", "sports", "Get a team's most recent match result.",
       {"team": _str("Team name"), "date": _str("Match date, YYYY-MM-DD (default: latest)")},
       ["team"],
       sample=lambda r: _opts(r, {"team": r.choice(sorted(_LEAGUE_OF))},
                              date=lambda: _date(r)),
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
  r = _seeded("match", team, args.get("date"))
  league = _LEAGUE_OF.get(team, "Premier League")
  opponent = r.choice([t for t in TEAMS[league] if t != team])
  ours, theirs = _score(r, league)
  if ours == theirs and league == "NBA":
    ours += 3
  result = "win" if ours > theirs else "loss" if ours < theirs else "draw"
  return {"team": team, "opponent": opponent, "score": f"{ours}-{theirs}", "result": result,
          "competition": league, "date": args.get("date", _date(r))}


@_tool("get_league_standings", "sports", "Get the current standings of a league.",
       {"league": _str("League", sorted(TEAMS)),
        "limit": _int("Number of top teams (default 4)", 1, 6)}, ["league"],
       sample=lambda r: _opts(r, {"league": r.choice(sorted(TEAMS))},
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
  r = _seeded("standings", league)
  teams = r.sample(TEAMS[league], len(TEAMS[league]))[:args.get("limit", 4)]
  rows = []
  top = r.randint(55, 70) if league != "NBA" else r.randint(45, 55)
  for i, t in enumerate(teams):
    value = top - 3 * i - r.randint(0, 2)
    record = f"{value} wins, {67 - value} losses" if league == "NBA" else f"{value} pts"
    rows.append({"position": i + 1, "team": t, "record": record})
  return {"league": league, "standings": rows}


@_tool("get_player_stats", "sports", "Get a player's statistics for a season.",
       {"player": _str("Player name"), "season": _str("Season, e.g. 2023-24 (default current)")},
       ["player"],
       sample=lambda r: _opts(r, {"player": r.choice(sorted(PLAYERS))},
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
  r = _seeded("player", player, season)
  if PLAYERS[player] == "basketball":
    stats = {"games": r.randint(50, 82), "points_per_game": round(r.uniform(12, 31), 1),
             "rebounds_per_game": round(r.uniform(3, 12), 1),
             "assists_per_game": round(r.uniform(2, 9), 1)}
  else:
    stats = {"appearances": r.randint(20, 38), "goals": r.randint(2, 30),
             "assists": r.randint(1, 14)}
  return {"player": player, "sport": PLAYERS[player], "season": season, "stats": stats}


# ----------------------------------------------------------------------------------------------
# Shipping and shopping.

_CARRIERS = ("UPS", "FedEx", "DHL", "USPS")


def _tracking_number(r: random.Random) -> str:
  if r.random() < 0.4:
    return "1Z" + "".join(r.choice("0123456789ABCDEFGHJKLMNPRSTUVWXYZ") for _ in range(10))
  return "".join(r.choice("0123456789") for _ in range(12))


@_tool("track_package", "shipping", "Track a parcel by its tracking number.",
       {"tracking_number": _str("Tracking number"),
        "carrier": _str("Carrier (default: detect)", _CARRIERS)}, ["tracking_number"],
       sample=lambda r: _opts(r, {"tracking_number": _tracking_number(r)}, p=0.3,
                              carrier=lambda: r.choice(_CARRIERS)),
       questions=("Where is my package {tracking_number}?< It's with {carrier}.>",
                  "Track< {carrier}> parcel {tracking_number}.",
                  "Has my order with tracking number {tracking_number} shipped yet?< The "
                  "carrier is {carrier}.>",
                  "Any update on< {carrier}> shipment {tracking_number}?"),
       intent="track the package {tracking_number}",
       answers=("Your package is {status}; last seen in {last_location}. Estimated delivery: "
                "{estimated_delivery}.",
                "{carrier} shows {tracking_number} as {status} (last scan: {last_location}), "
                "due {estimated_delivery}."))
def _track_package(args):
  number = args["tracking_number"]
  r = _seeded("track", number)
  carrier = args.get("carrier") or ("UPS" if number.startswith("1Z") else r.choice(_CARRIERS))
  return {"tracking_number": number, "carrier": carrier,
          "status": r.choice(("in transit", "out for delivery", "delivered",
                              "at the sorting facility")),
          "last_location": r.choice(_CITY_NAMES), "estimated_delivery": _date(r)}


_SHIP_COUNTRIES = ("United States", "Canada", "United Kingdom", "Germany", "France", "Japan",
                   "Australia", "Mexico", "India", "Brazil")


@_tool("estimate_shipping_cost", "shipping", "Estimate the cost and time of shipping a parcel.",
       {"weight_kg": _num("Parcel weight in kilograms"),
        "origin_country": _str("Country shipped from"),
        "destination_country": _str("Country shipped to"),
        "service": _str("Service level (default standard)", ("standard", "express"))},
       ["weight_kg", "origin_country", "destination_country"],
       sample=lambda r: _opts(r, {"weight_kg": r.choice((0.5, 1, 2, 3.5, 5, 10)),
                                  **dict(zip(("origin_country", "destination_country"),
                                             r.sample(_SHIP_COUNTRIES, 2)))},
                              service=lambda: r.choice(("standard", "express"))),
       questions=("How much does it cost to ship a {weight_kg} kg parcel from {origin_country} "
                  "to {destination_country}< by {service}>?",
                  "Estimate< {service}> shipping for {weight_kg} kg, {origin_country} to "
                  "{destination_country}.",
                  "I want to send a {weight_kg} kg box from {origin_country} to "
                  "{destination_country}<, {service}>. What will it cost?"),
       intent="estimate shipping {weight_kg} kg from {origin_country} to {destination_country}",
       answers=("Shipping {weight_kg} kg from {origin_country} to {destination_country} costs "
                "about ${cost_usd:.2f} and takes {estimated_days} days ({service} service).",
                "Expect ${cost_usd:.2f} and {estimated_days} days with {service} shipping."))
def _estimate_shipping_cost(args):
  service = args.get("service", "standard")
  r = _seeded("ship", args["origin_country"], args["destination_country"])
  cost = (8 + 6.5 * args["weight_kg"] + (18 if args["origin_country"] !=
                                         args["destination_country"] else 0))
  cost *= 1.8 if service == "express" else 1.0
  days = r.randint(5, 12)
  return {"cost_usd": round(cost, 2), "estimated_days": max(2, days // 3) if service ==
          "express" else days, "service": service}


_PRODUCTS = {"wireless headphones": 120, "running shoes": 95, "coffee maker": 80,
             "backpack": 60, "desk lamp": 35, "yoga mat": 30, "mechanical keyboard": 110,
             "water bottle": 20, "electric toothbrush": 70, "air fryer": 110}
_BRANDS = ("Acme", "Northwind", "Zenith", "Aurora", "Pulse", "Summit", "Vertex")
_SORTS = ("price", "rating", "relevance")


@_tool("search_products", "shopping", "Search an online store for products.",
       {"query": _str("What to look for"), "max_price": _num("Highest price in USD"),
        "sort_by": _str("Sort order (default relevance)", _SORTS)}, ["query"],
       sample=lambda r: (lambda q: _opts(r, {"query": q},
                                         max_price=lambda: round(_PRODUCTS[q] * 1.2),
                                         sort_by=lambda: r.choice(_SORTS)))(
                                             r.choice(sorted(_PRODUCTS))),
       questions=("Find me {query}< under ${max_price}><, sorted by {sort_by}>.",
                  "Show me options for {query}.< My budget is ${max_price}.>< Sort by "
                  "{sort_by}.>",
                  "Search the store for {query}< below ${max_price}>< sorted by {sort_by}>."),
       intent="search the store for {query}< under ${max_price}>",
       answers=("Top results for {query}: {products_text}.",
                "The cheapest {query} is {cheap_name} at ${cheap_price:.2f} (rated "
                "{cheap_rating})."),
       derive=lambda a, res: {
           "products_text": join(f"{p['name']} (${p['price_usd']:.2f}, {p['rating']} stars)"
                                 for p in res["products"]),
           **(lambda c: {"cheap_name": c["name"], "cheap_price": c["price_usd"],
                         "cheap_rating": c["rating"]})(_cheapest(res["products"], "price_usd"))})
def _search_products(args):
  query = args["query"].lower()
  r = _seeded("shop", query)
  base = _PRODUCTS.get(query, 50)
  top = args.get("max_price", base * 2)
  products = [{"name": f"{b} {query.title()}",
               "price_usd": round(min(top, base * r.uniform(0.6, 1.6)) - 0.01, 2),
               "rating": round(r.uniform(3.6, 4.9), 1)} for b in r.sample(_BRANDS, 3)]
  key = {"price": lambda p: p["price_usd"], "rating": lambda p: -p["rating"]}.get(
      args.get("sort_by"))
  return {"query": query, "products": sorted(products, key=key) if key else products}


# ----------------------------------------------------------------------------------------------
# Restaurants and cinema.

_CUISINES = {"italian": ("Trattoria Luna", "Osteria del Ponte", "Pasta Fresca", "Il Giardino"),
             "japanese": ("Sakura House", "Kaiseki Mori", "Ramen Ichiban", "Sushi Hana"),
             "mexican": ("La Cantina Roja", "Taqueria El Sol", "Casa Oaxaca", "Maiz y Mezcal"),
             "indian": ("Spice Route", "Tandoor Palace", "Masala House", "Curry Leaf"),
             "french": ("Le Petit Bistro", "Chez Marcel", "La Belle Assiette",
                        "Brasserie du Coin"),
             "thai": ("Bangkok Garden", "Thai Orchid", "Lemongrass Kitchen", "Siam Street"),
             "vegan": ("Green Table", "Sprout and Root", "The Plant Kitchen", "Leaf Cafe")}
_PRICES = ("$", "$$", "$$$")


def _restaurant(city: str, cuisine: str, idx: int) -> dict:
  r = _seeded("restaurant", city.lower(), cuisine, idx)
  return {"restaurant_id": f"rst_{city.lower().replace(' ', '')}_{cuisine}_{idx}",
          "name": _CUISINES[cuisine][idx], "cuisine": cuisine,
          "rating": round(r.uniform(3.8, 4.9), 1), "price_range": r.choice(_PRICES)}


@_tool("search_restaurants", "restaurants", "Search restaurants in a city.",
       {"city": _str("City name"), "cuisine": _str("Type of food", sorted(_CUISINES)),
        "price_range": _str("Price level", _PRICES)}, ["city"],
       sample=lambda r: _opts(r, {"city": r.choice(_CITY_NAMES)}, p=0.5,
                              cuisine=lambda: r.choice(sorted(_CUISINES)),
                              price_range=lambda: r.choice(_PRICES)),
       questions=("Find a good< {cuisine}> restaurant in {city}< in the {price_range} range>.",
                  "Where can I eat< {cuisine} food> in {city}?< Price range {price_range}.>",
                  "Recommend some< {cuisine}> restaurants in {city}< ({price_range})>.",
                  "I'm hungry in {city}. Any< {cuisine}> places< that are {price_range}>?"),
       intent="search< {cuisine}> restaurants in {city}",
       answers=("Top picks in {city}: {restaurants_text}.",
                "{best_name} is the best rated ({best_rating}), and there's also {others}."),
       derive=lambda a, res: (lambda best: {
           "restaurants_text": join(f"{x['name']} ({x['rating']}, {x['price_range']})"
                                    for x in res["restaurants"]),
           "best_name": best["name"], "best_rating": best["rating"],
           "best_id": best["restaurant_id"],
           "others": join(x["name"] for x in res["restaurants"] if x is not best)})(
               max(res["restaurants"], key=lambda x: x["rating"])))
def _search_restaurants(args):
  r = _seeded("restaurants", args)
  cuisines = [args["cuisine"]] if args.get("cuisine") else sorted(_CUISINES)
  found = [_restaurant(args["city"], c, i) for c in cuisines for i in range(4)]
  wanted = [x for x in found if x["price_range"] == args.get("price_range", x["price_range"])]
  pool = wanted if len(wanted) >= 2 else found
  picked = r.sample(pool, min(3, len(pool)))
  if args.get("price_range"):
    for x in picked:
      x["price_range"] = args["price_range"]
  return {"city": args["city"], "restaurants": picked}


def _restaurant_of(restaurant_id: str) -> dict | None:
  m = re.fullmatch(r"rst_([a-z]+)_([a-z]+)_(\d)", restaurant_id)
  if not m or m.group(2) not in _CUISINES or int(m.group(3)) > 3:
    return None
  city = next((c for c in _CITY_NAMES if c.lower().replace(" ", "") == m.group(1)), m.group(1))
  return _restaurant(city, m.group(2), int(m.group(3)))


@_tool("book_restaurant", "restaurants", "Book a table at a restaurant.",
       {"restaurant_id": _str("Restaurant id from search_restaurants"),
        "date": _str("Date, YYYY-MM-DD"), "time": _str("Time, HH:MM (24-hour)"),
        "party_size": _int("Number of people", 1, 20)},
       ["restaurant_id", "date", "time", "party_size"],
       sample=lambda r: {"restaurant_id": _restaurant(r.choice(_CITY_NAMES),
                                                      r.choice(sorted(_CUISINES)),
                                                      r.randrange(4))["restaurant_id"],
                         "date": _date(r), "time": _clock(r, 12, 21),
                         "party_size": r.randint(1, 8)},
       questions=("Book a table for {party_size} at {restaurant_id} on {date} at {time}.",
                  "Reserve restaurant {restaurant_id} for {party_size} people, {date} at {time}.",
                  "Can you get us a table at {restaurant_id}? {party_size} people, {date}, "
                  "{time}."),
       intent="book a table for {party_size} at {restaurant_id} on {date} at {time}",
       answers=("You're booked at {restaurant} for {party_size} on {date} at {time}. "
                "Confirmation: {confirmation_code}.",
                "Table for {party_size} confirmed at {restaurant} ({date}, {time}), code "
                "{confirmation_code}."))
def _book_restaurant(args):
  place = _restaurant_of(args["restaurant_id"])
  if place is None:
    return {"error": f"unknown restaurant {args['restaurant_id']}"}
  r = _seeded("booking", args)
  return {"status": "confirmed", "restaurant": place["name"], "date": args["date"],
          "time": args["time"], "party_size": args["party_size"],
          "confirmation_code": "".join(r.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789")
                                       for _ in range(6))}


@_tool("get_movie_showtimes", "cinema", "Get movie showtimes at cinemas in a city.",
       {"city": _str("City name"), "date": _str("Date, YYYY-MM-DD (default today)"),
        "movie": _str("Movie title, to show only that film")}, ["city"],
       sample=lambda r: _opts(r, {"city": r.choice(_CITY_NAMES)},
                              date=lambda: _date(r), movie=lambda: r.choice(MOVIES)),
       questions=("What's playing in {city}< on {date}>?< I want to see {movie}.>",
                  "When is< {movie}> showing in {city}< on {date}>?",
                  "Find movie times in {city}< for {date}>< for {movie}>.",
                  "Any showtimes< for {movie}> in {city}< on {date}>?"),
       intent="look up showtimes in {city}< for {movie}>< on {date}>",
       answers=("Showtimes in {city}: {shows_text}.",
                "Here's what I found: {shows_text}."),
       derive=lambda a, res: {"shows_text": "; ".join(
           f"{s['movie']} at {s['cinema']}: {join(s['times'])}" for s in res["showtimes"])})
def _get_movie_showtimes(args):
  r = _seeded("cinema", args["city"].lower(), args.get("date"))
  cinemas = (f"{args['city']} Cineplex", "Odeon Central", "Star Cinema", "Riverside Pictures")
  movies = [args["movie"]] * 2 if args.get("movie") else r.sample(MOVIES, 2)
  return {"city": args["city"], "date": args.get("date", "2025-06-15"), "showtimes": [
      {"movie": m, "cinema": c, "times": sorted(r.sample(("13:30", "16:00", "18:15", "19:45",
                                                          "21:00", "22:30"), 2))}
      for m, c in zip(movies, r.sample(cinemas, 2))]}


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


def _number(value: float) -> int | float:
  return int(value) if float(value).is_integer() else round(value, 4)


def _expression(r: random.Random) -> str:
  a, b, c = r.randint(100, 9999), r.randint(12, 999), r.randint(2, 48)
  return r.choice((f"{a} * {b}", f"({a} + {b}) * {c}", f"{a} / {c}", f"{a} - {b} * {c}",
                   f"{a} * {c} / 100", f"({a} - {b}) / {c}", f"{b} * {b} + {c}"))


@_tool("calculate", "math", "Evaluate an arithmetic expression (+, -, *, /, parentheses).",
       {"expression": _str("The expression, e.g. (12 + 7) * 3")}, ["expression"],
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
  return {"expression": args["expression"], "result": _number(value)}


@_tool("compute_statistics", "math", "Summary statistics (mean, median, standard deviation, "
       "min, max) of a list of numbers.",
       {"numbers": _arr("The values", "number")}, ["numbers"],
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
          "median": _number(statistics.median(xs)),
          "std_dev": round(statistics.stdev(xs), 2) if len(xs) > 1 else 0.0,
          "min": min(xs), "max": max(xs)}


@_tool("calculate_tip", "math", "Work out a tip and the total of a bill, optionally split.",
       {"bill_amount": _num("Bill before tip"), "tip_percent": _num("Tip in percent"),
        "num_people": _int("People splitting the bill (default 1)", 1, 50)},
       ["bill_amount", "tip_percent"],
       sample=lambda r: _opts(r, {"bill_amount": round(r.uniform(18, 260), 2),
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
       {"a": _num("Coefficient of x^2"), "b": _num("Coefficient of x"),
        "c": _num("Constant term")}, ["a", "b", "c"],
       sample=_quadratic_args,
       questions=("Solve {equation}.", "What are the roots of {equation}?",
                  "Find x such that {equation}.",
                  "Solve the quadratic with a = {a}, b = {b} and c = {c}."),
       intent="solve {equation}",
       answers=("The roots of {equation} are x = {roots_text}.",
                "x = {roots_text} (discriminant {discriminant})."),
       derive=lambda a, res: {"roots_text": " or x = ".join(map(_show, res.get("roots", [])))
                              or "none (no real roots)"},
       view=lambda a: {"equation": _equation(a["a"], a["b"], a["c"])})
def _solve_quadratic(args):
  a, b, c = args["a"], args["b"], args["c"]
  if a == 0:
    return {"error": "a must not be 0"}
  d = b * b - 4 * a * c
  if d < 0:
    return {"discriminant": _number(d), "roots": []}
  roots = sorted({_number((-b + s * math.sqrt(d)) / (2 * a)) + 0 for s in (-1, 1)})
  return {"discriminant": _number(d), "roots": roots}


# ----------------------------------------------------------------------------------------------
# Time.


def _offset_text(hours: float) -> str:
  sign = "-" if hours < 0 else "+"
  minutes = int(round(abs(hours) * 60))
  return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


@_tool("get_local_time", "time", "Get the current local time in a city.",
       {"city": _str("City name")}, ["city"],
       sample=lambda r: {"city": r.choice(_CITY_NAMES)},
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
  r = _seeded("now", city)
  now = datetime.datetime(2025, 6, 15) + datetime.timedelta(minutes=r.randrange(1440) + 60
                                                            * offset)
  return {"city": city, "timezone": zone, "local_time": now.strftime("%H:%M"),
          "date": now.date().isoformat(), "utc_offset": _offset_text(offset)}


@_tool("get_timezone", "time", "Get the IANA time zone and UTC offset of a city.",
       {"city": _str("City name")}, ["city"],
       sample=lambda r: {"city": r.choice(_CITY_NAMES)},
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
       {"time": _str("Time, HH:MM (24-hour)"),
        "from_timezone": _str("IANA time zone of the time, e.g. Europe/Paris"),
        "to_timezone": _str("IANA time zone to convert to")},
       ["time", "from_timezone", "to_timezone"],
       sample=lambda r: dict(zip(("from_timezone", "to_timezone"), r.sample(sorted(_TZ_OFFSET),
                                                                            2)),
                             time=_clock(r, 0, 23)),
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
  if src not in _TZ_OFFSET or dst not in _TZ_OFFSET:
    return {"error": f"unknown time zone {src if src not in _TZ_OFFSET else dst}"}
  converted, day = _add_minutes(args["time"], (_TZ_OFFSET[dst] - _TZ_OFFSET[src]) * 60)
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
       {"country": _str("Country name"), "year": _int("Year", 1900, 2100)}, ["country", "year"],
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


# ----------------------------------------------------------------------------------------------
# Two-call chains: the second call's arguments come from the first call's response.


def _chain(first, second, link, questions, bridge, answers, sample=None):
  CHAINS.append(Chain(first, second, link, tuple(questions), bridge, tuple(answers), sample))


def _to_currency(r: random.Random, amount: float) -> dict:
  return {"amount": amount, "from_currency": "USD",
          "to_currency": r.choice([c for c in _CURRENCIES if c != "USD"])}


_chain("geocode_city", "get_weather_by_coordinates",
       lambda a, res, r: _opts(r, {"latitude": res["latitude"], "longitude": res["longitude"]},
                               units=lambda: r.choice(_UNITS)),
       ("Look up the coordinates of {city} and tell me the weather there< in {units}>.",
        "What's the weather at {city}'s exact coordinates?< Use {units}.>",
        "Find where {city} is on the map, then check the current weather at that spot< in "
        "{units}>."),
       "{city} is at {latitude}, {longitude}.",
       ("{a[city]} is at {a[latitude]}, {a[longitude]}; it's {b[temperature]}{b[sym]} and "
        "{b[condition]} there.",
        "At {a[city]}'s coordinates the weather is {b[condition]}, {b[temperature]}{b[sym]}, "
        "humidity {b[humidity]}%."))
_chain("lookup_ticker", "get_stock_price", lambda a, res, r: {"symbol": res["symbol"]},
       ("What's {company}'s stock price?", "How much is a share of {company} right now?",
        "Find {company}'s ticker and tell me its current price."),
       "{company} trades as {symbol}.",
       ("{a[company]} ({b[symbol]}) is at ${b[price]:.2f}, {b[change_percent]}% today.",
        "A share of {a[company]} costs ${b[price]:.2f} right now."))
_chain("lookup_ticker", "get_stock_history",
       lambda a, res, r: {"symbol": res["symbol"], "days": r.randint(3, 7)},
       ("How has {company} stock moved over the last {days} days?",
        "Show me {company}'s closing prices for the past {days} trading days."),
       "{company} trades as {symbol}.",
       ("{a[company]} ({b[symbol]}) closed at {b[closes_text]} over the last {b[days]} days.",
        "Over {b[days]} days {a[company]} went from ${b[first]:.2f} to ${b[last]:.2f}."))
_chain("search_contacts", "send_email", lambda a, res, r: _email_args(r, res["email"]),
       ("Email {name} with the subject '{subject}': {body}",
        "Please send {name} a message titled \"{subject}\" that says \"{body}\"",
        "Look up {name}'s email address and send them \"{body}\" with the subject '{subject}'."),
       "{name}'s email is {email}.",
       ("Done: I emailed {a[name]} at {a[email]} with the subject '{b[subject]}'.",
        "Your message \"{b[subject]}\" is on its way to {a[name]} ({a[email]})."))
_chain("search_contacts", "create_calendar_event",
       lambda a, res, r: {"title": r.choice(("Project sync", "Coffee chat", "Budget review",
                                             "Planning session", "Weekly check-in")),
                          "date": _date(r), "start_time": _clock(r),
                          "attendees": [res["email"]]},
       ("Set up '{title}' with {name} on {date} at {start_time}.",
        "Schedule {title} for {date} at {start_time} and invite {name}.",
        "Put a meeting called \"{title}\" on {date} at {start_time} and send {name} an invite."),
       "{name}'s email is {email}.",
       ("'{b[title]}' is scheduled for {b[date]} at {b[start_time]}, and {a[name]} "
        "({a[email]}) is invited.",
        "Done: {b[title]} on {b[date]}, {b[start_time]}-{b[end_time]}, with {a[name]}."))
_chain("search_recipes", "get_recipe_details",
       lambda a, res, r: {"recipe_id": res["recipes"][0]["recipe_id"]},
       ("Find a recipe with {ingredient} and tell me what ingredients I need.",
        "I want to cook something with {ingredient}. Pick a recipe and list its ingredients.",
        "What's a good {ingredient} recipe, and what goes into it?"),
       "The top result is {first_name}.",
       ("Try {b[name]} ({b[time_minutes]} min, serves {b[servings]}). You'll need "
        "{b[ingredients_text]}.",
        "{b[name]} is a good pick: {b[ingredients_text]}; it takes {b[time_minutes]} minutes."))
_chain("search_restaurants", "book_restaurant",
       lambda a, res, r: {"restaurant_id": max(res["restaurants"],
                                               key=lambda x: x["rating"])["restaurant_id"],
                          "date": _date(r), "time": _clock(r, 12, 21),
                          "party_size": r.randint(2, 8)},
       ("Find the best-rated {cuisine} restaurant in {city} and book it for {party_size} on "
        "{date} at {time}.",
        "Book me a table for {party_size} at a top {cuisine} place in {city}, {date} at {time}.",
        "We're {party_size} people wanting {cuisine} food in {city} on {date} at {time}. Find a "
        "place and reserve it."),
       "{best_name} is the best rated ({best_rating}).",
       ("I booked {b[restaurant]} ({a[best_rating]} stars) for {b[party_size]} on {b[date]} at "
        "{b[time]}; confirmation {b[confirmation_code]}.",
        "You're all set at {b[restaurant]} in {a[city]}: {b[date]}, {b[time]}, party of "
        "{b[party_size]} (code {b[confirmation_code]})."),
       sample=lambda r: {"city": r.choice(_CITY_NAMES), "cuisine": r.choice(sorted(_CUISINES))})
_chain("get_stock_price", "convert_currency",
       lambda a, res, r: _to_currency(r, res["price"]),
       ("What is {symbol} trading at in {to_currency}?",
        "Give me the price of one {symbol} share in {to_currency}.",
        "How much does a {symbol} share cost in {to_currency}?"),
       "{symbol} costs {price} USD.",
       ("One {a[symbol]} share is ${a[price]:.2f}, about {b[converted_amount]:,.2f} "
        "{b[to_currency]}.",
        "{a[symbol]} trades at {b[converted_amount]:,.2f} {b[to_currency]} "
        "(${a[price]:.2f})."))
_chain("search_flights", "convert_currency",
       lambda a, res, r: _to_currency(r, _cheapest(res["flights"], "price_usd")["price_usd"]),
       ("Find the cheapest flight from {origin} to {destination} on {date} and tell me the "
        "price in {to_currency}.",
        "What's the lowest fare from {origin} to {destination} on {date}, in {to_currency}?"),
       "The cheapest is {cheap_number} at {cheap_price} USD.",
       ("The cheapest flight is {a[cheap_airline]} {a[cheap_number]} at {a[cheap_departure]}: "
        "${a[cheap_price]}, or about {b[converted_amount]:,.2f} {b[to_currency]}.",
        "{a[cheap_number]} is the best fare at {b[converted_amount]:,.2f} {b[to_currency]} "
        "(${a[cheap_price]})."))
_chain("search_hotels", "convert_currency",
       lambda a, res, r: _to_currency(
           r, _cheapest(res["hotels"], "price_per_night_usd")["price_per_night_usd"]),
       ("Find a hotel in {city} from {check_in} for {nights} nights and tell me the cheapest "
        "nightly rate in {to_currency}.",
        "What's the cheapest hotel in {city} for {nights} nights from {check_in}, priced in "
        "{to_currency}?"),
       "The cheapest is {cheap_name} at {cheap_price} USD a night.",
       ("{a[cheap_name]} is the cheapest at ${a[cheap_price]} a night, about "
        "{b[converted_amount]:,.2f} {b[to_currency]}.",
        "The lowest nightly rate in {a[city]} is {b[converted_amount]:,.2f} {b[to_currency]} "
        "at {a[cheap_name]}."))
_chain("search_products", "convert_currency",
       lambda a, res, r: _to_currency(r, _cheapest(res["products"], "price_usd")["price_usd"]),
       ("Find {query} and tell me the cheapest price in {to_currency}.",
        "How much is the cheapest {query} in {to_currency}?"),
       "The cheapest is {cheap_name} at {cheap_price} USD.",
       ("The cheapest {a[query]} is {a[cheap_name]} at ${a[cheap_price]:.2f}, about "
        "{b[converted_amount]:,.2f} {b[to_currency]}.",
        "{a[cheap_name]} costs {b[converted_amount]:,.2f} {b[to_currency]} "
        "(${a[cheap_price]:.2f})."))
_chain("estimate_shipping_cost", "convert_currency",
       lambda a, res, r: _to_currency(r, res["cost_usd"]),
       ("How much would it cost in {to_currency} to ship {weight_kg} kg from {origin_country} "
        "to {destination_country}?",
        "Estimate shipping for a {weight_kg} kg parcel from {origin_country} to "
        "{destination_country} and give me the cost in {to_currency}."),
       "Shipping costs {cost_usd} USD.",
       ("Shipping {a[weight_kg]} kg would cost ${a[cost_usd]:.2f}, about "
        "{b[converted_amount]:,.2f} "
        "{b[to_currency]}, and take {a[estimated_days]} days.",
        "That's about {b[converted_amount]:,.2f} {b[to_currency]} (${a[cost_usd]:.2f})."))
_chain("detect_language", "translate_text",
       lambda a, res, r: {"text": a["text"], "target_language": (
           "English" if r.random() < 0.6 else r.choice(
               [l for l in LANGUAGES[1:] if l != res["language"]])),
                          "source_language": res["language"]},
       ("Someone sent me '{text}'. What language is it, and what does it mean in "
        "{target_language}?",
        "Identify the language of \"{text}\" and translate it into {target_language}.",
        "I don't recognize this: \"{text}\". Which language is it? Please translate it to "
        "{target_language}."),
       "The text is {language}.",
       ("\"{a[text]}\" is {a[language]}; in {b[target_language]} it means "
        "\"{b[translated_text]}\".",
        "It's {a[language]}. In {b[target_language]}: \"{b[translated_text]}\"."))
_chain("get_timezone", "convert_time",
       lambda a, res, r: {"time": _clock(r, 0, 23), "from_timezone": r.choice(
           [z for z in sorted(_TZ_OFFSET) if z != res["timezone"]]),
                          "to_timezone": res["timezone"]},
       ("My call is at {time} {from_timezone} time. What time is that in {city}?",
        "If it's {time} in {from_timezone}, what time is it in {city}?",
        "Convert {time} ({from_timezone}) to local time in {city}."),
       "{city} uses {timezone}.",
       ("{b[time]} {b[from_timezone]} is {b[converted_time]} in {a[city]} ({a[timezone]})< "
        "({b[day_note]})>.",
        "That's {b[converted_time]} in {a[city]}< ({b[day_note]})>."))
_chain("get_distance", "convert_units",
       lambda a, res, r: {"value": res["distance_km"], "from_unit": "kilometers",
                          "to_unit": "miles"},
       ("How many miles is it from {origin} to {destination}?",
        "What's the distance between {origin} and {destination} in miles?"),
       "The distance is {distance_km} km.",
       ("{a[origin]} to {a[destination]} is {a[distance_km]} km, which is about {b[result]} "
        "miles.",
        "It's about {b[result]} miles ({a[distance_km]} km)."))
_chain("list_calendar_events", "set_reminder",
       lambda a, res, r: {"message": res["events"][0]["title"], "date": a["date"],
                          "time": res["events"][0]["start_time"]},
       ("Set a reminder for my first event on {date}.",
        "Remind me when my first meeting on {date} starts.",
        "Check my calendar for {date} and set a reminder at the start of the first event."),
       "The first event on {date} is {first_title} at {first_start}.",
       ("Your first event on {a[date]} is {a[first_title]} at {a[first_start]}; I set a "
        "reminder for it.",
        "Reminder set for {b[message]} on {b[date]} at {b[time]}."))
_chain("get_stock_history", "compute_statistics",
       lambda a, res, r: {"numbers": res["closes"]},
       ("What was the average closing price of {symbol} over the last {days} days?",
        "How volatile has {symbol} been over the past {days} days? Give me the mean and "
        "standard deviation of its closes."),
       "The last {days} closes are {closes_text}.",
       ("Over the last {a[days]} days {a[symbol]} averaged ${b[mean]:.2f} (standard deviation "
        "{b[std_dev]}, median {b[median]}).",
        "{a[symbol]}'s mean close over {a[days]} days was ${b[mean]:.2f}, ranging from ${b[min]:.2f} "
        "to ${b[max]:.2f}."))


# ----------------------------------------------------------------------------------------------
# Questions that need no tool: (question variants, answer variants, tool domains not to offer).

_CAPITALS = {"France": "Paris", "Japan": "Tokyo", "Italy": "Rome", "Germany": "Berlin",
             "Spain": "Madrid", "Canada": "Ottawa", "Australia": "Canberra",
             "Brazil": "Brasilia", "Egypt": "Cairo", "Kenya": "Nairobi", "India": "New Delhi",
             "Argentina": "Buenos Aires", "Norway": "Oslo", "Sweden": "Stockholm",
             "Portugal": "Lisbon", "Greece": "Athens", "Turkey": "Ankara",
             "South Korea": "Seoul", "Peru": "Lima", "Poland": "Warsaw", "Ireland": "Dublin",
             "Vietnam": "Hanoi", "New Zealand": "Wellington", "Switzerland": "Bern",
             "Chile": "Santiago", "Nigeria": "Abuja", "Morocco": "Rabat", "Finland": "Helsinki"}
_BOOKS = {"Pride and Prejudice": "Jane Austen", "1984": "George Orwell",
          "Hamlet": "William Shakespeare", "War and Peace": "Leo Tolstoy",
          "One Hundred Years of Solitude": "Gabriel Garcia Marquez", "The Odyssey": "Homer",
          "Don Quixote": "Miguel de Cervantes", "Moby-Dick": "Herman Melville",
          "The Great Gatsby": "F. Scott Fitzgerald", "Frankenstein": "Mary Shelley",
          "Crime and Punishment": "Fyodor Dostoevsky", "To Kill a Mockingbird": "Harper Lee",
          "Les Miserables": "Victor Hugo", "The Hobbit": "J. R. R. Tolkien"}
_ELEMENTS = {"gold": "Au", "silver": "Ag", "iron": "Fe", "sodium": "Na", "potassium": "K",
             "oxygen": "O", "helium": "He", "lead": "Pb", "copper": "Cu", "mercury": "Hg",
             "tin": "Sn", "calcium": "Ca", "zinc": "Zn"}
_GENERAL = (
    (("How many planets are in the solar system?", "How many planets orbit the Sun?"),
     ("There are eight planets in the solar system.",)),
    (("What is the largest planet in our solar system?",), ("Jupiter is the largest planet.",)),
    (("What gas do plants absorb from the air?",),
     ("Plants absorb carbon dioxide and release oxygen through photosynthesis.",)),
    (("How many bones are in the adult human body?",), ("An adult human has 206 bones.",)),
    (("Who developed the theory of general relativity?",),
     ("Albert Einstein developed general relativity, published in 1915.",)),
    (("Who painted the Mona Lisa?",), ("Leonardo da Vinci painted the Mona Lisa.",)),
    (("In which year did humans first land on the Moon?", "When was the first Moon landing?"),
     ("Apollo 11 landed on the Moon in 1969.",)),
    (("What is the largest ocean on Earth?",), ("The Pacific is the largest ocean.",)),
    (("How many continents are there?",), ("There are seven continents.",)),
    (("What is the hardest natural substance?",), ("Diamond is the hardest natural material.",)),
    (("What is the smallest prime number?",), ("The smallest prime number is 2.",)),
    (("How many days are in a leap year?",), ("A leap year has 366 days.",)),
    (("What is inflation?", "Can you explain what inflation is?"),
     ("Inflation is the general rise in prices over time, which lowers what a unit of money "
      "can buy.",)),
    (("Why are there time zones?",),
     ("Because the Earth rotates, noon happens at different moments around the globe; time "
      "zones keep local clocks roughly in line with the Sun.",)),
    (("What causes rain?",),
     ("Water vapour cools and condenses into droplets in clouds; when the droplets grow heavy "
      "enough, they fall as rain.",)),
    (("What is a stock?", "What does owning a share mean?"),
     ("A stock (or share) is a small piece of ownership in a company.",)),
    (("How does compound interest work?",),
     ("With compound interest you earn interest on the interest already added, so the balance "
      "grows faster over time than with simple interest.",)),
    (("What does GDP stand for?",),
     ("GDP stands for gross domestic product: the total value of goods and services a country "
      "produces.",)),
)
_CHAT = (
    (("Hi there!", "Hello!", "Hey, good morning!"),
     ("Hello! How can I help you today?", "Hi! What can I do for you?")),
    (("Thanks for your help!", "Thank you, that's all.", "Great, thanks!"),
     ("You're welcome! Let me know if you need anything else.", "Happy to help!")),
    (("Can you tell me a joke?", "Tell me something funny."),
     ("Why don't scientists trust atoms? Because they make up everything!",
      "I told my computer I needed a break, and it said: no problem, I'll go to sleep.")),
    (("What can you do?", "How can you help me?"),
     ("I can answer questions and chat, and here I can also use these tools: {tools}.",
      "I can help with general questions, and with tools such as {tools} when a task needs "
      "live data or an action.")),
    (("Who are you?", "Are you a human?"),
     ("I'm an AI assistant. I can answer questions and use tools when they are needed.",)),
    (("Give me a tip for staying focused.", "How can I concentrate better?"),
     ("Try working in short blocks, say 25 minutes, with your phone out of reach, then take a "
      "five-minute break.",)),
    (("Write a haiku about autumn.",),
     ("Crisp leaves drift and fall,\nthe maple lets go of gold,\ncool wind carries them.",)),
    (("Suggest a hobby I could start this weekend.",),
     ("How about sketching? All you need is a pencil and paper, and you can practise anywhere.",
      "You could try baking bread: it's cheap to start and you get to eat the results.")),
    (("Goodbye!", "See you later!"), ("Goodbye! Have a great day.", "See you!")),
    (("How are you today?",),
     ("I'm doing well, thanks for asking! How can I help?",)),
)


def _facts() -> list[tuple[tuple, tuple, tuple]]:
  out = []
  for c, k in _CAPITALS.items():
    out.append(((f"What is the capital of {c}?", f"What's the capital city of {c}?",
                 f"Which city is the capital of {c}?"),
                (f"The capital of {c} is {k}.", f"{k} is the capital of {c}."), ()))
  for b, a in _BOOKS.items():
    out.append(((f"Who wrote {b}?", f"Who is the author of {b}?"),
                (f"{b} was written by {a}.", f"{a} wrote {b}."), ()))
  for e, s in _ELEMENTS.items():
    out.append(((f"What is the chemical symbol for {e}?", f"What's the symbol of {e} on the "
                 "periodic table?"), (f"The chemical symbol for {e} is {s}.",), ()))
  out += [(q, a, ()) for q, a in _GENERAL + _CHAT]
  return out


FACTS = _facts()


def arithmetic(rng: random.Random) -> tuple[str, str, tuple]:
  """A small arithmetic question answered directly (math tools are not offered with it)."""
  a, b = rng.randint(2, 99), rng.randint(2, 99)
  kind = rng.randrange(5)
  if kind == 0:
    q = rng.choice((f"What is {a} + {b}?", f"What's {a} plus {b}?", f"Add {a} and {b}."))
    ans = rng.choice((f"{a} + {b} = {a + b}.", f"That's {a + b}."))
  elif kind == 1:
    a, b = max(a, b), min(a, b)
    q = rng.choice((f"What is {a} - {b}?", f"How much is {a} minus {b}?"))
    ans = rng.choice((f"{a} - {b} = {a - b}.", f"It's {a - b}."))
  elif kind == 2:
    a, b = rng.randint(2, 12), rng.randint(2, 20)
    q = rng.choice((f"What is {a} times {b}?", f"Quick math: {a} x {b}?"))
    ans = rng.choice((f"{a} x {b} = {a * b}.", f"That's {a * b}."))
  elif kind == 3:
    b, k = rng.randint(2, 12), rng.randint(2, 12)
    q = rng.choice((f"What is {b * k} divided by {b}?", f"How much is {b * k} / {b}?"))
    ans = rng.choice((f"{b * k} / {b} = {k}.", f"It's {k}."))
  else:
    p, x = rng.choice((10, 20, 25, 50)), rng.randint(1, 40) * 20
    q = rng.choice((f"What is {p}% of {x}?", f"How much is {p} percent of {x}?"))
    ans = f"{p}% of {x} is {_number(x * p / 100)}."
  return q, ans, ("math",)


# ----------------------------------------------------------------------------------------------
# Samples and splits.

SPLITS = ("train", "valid", "test")
MIX = (("single", 0.55), ("multi", 0.25), ("none", 0.20))
HOLDOUT_FRACTION = 0.25
THOUGHT_PROB = 0.85
FILES = ("train.jsonl", "valid.jsonl", "test.jsonl", "tools.json")

_THOUGHTS = (
    "The user wants to {intent}. I'll call {name}.",
    "I need to {intent}, so I'll use {name}.",
    "To answer this I should {intent} with the {name} tool.",
    "Let me {intent} using {name}.",
    "I'll {intent} by calling {name}.",
    "This needs {name}: I have to {intent}.",
)
_BRIDGES = (
    "{prev} Now I'll {intent} with {name}.",
    "{prev} Next I need to {intent}, so I'll call {name}.",
    "{prev} With that I can {intent} using {name}.",
)


def _dumps(obj) -> str:
  return json.dumps(obj, ensure_ascii=False)


@dataclasses.dataclass(frozen=True)
class Split:
  """Which tools (and knowledge questions) each split may use.

  Attributes:
    train: tool names of the train and valid splits.
    test: held-out tool names; disjoint from `train`.
    facts_test: indices into `FACTS` reserved for the test split's `none` samples.
  """
  train: tuple[str, ...]
  test: tuple[str, ...]
  facts_test: frozenset

  def tools(self, split: str) -> tuple[str, ...]:
    return self.test if split == "test" else self.train

  def chains(self, split: str) -> list:
    names = set(self.tools(split))
    return [c for c in CHAINS if c.first in names and c.second in names]


def split_tools(seed: int = 0) -> Split:
  """Holds out ~`HOLDOUT_FRACTION` of the tools for the test split, chosen from `seed`.

  Draws until the held-out tools span at least 8 domains, no domain is held out whole, and both
  sides keep two-call chains (at least 3 in test, 6 in train), so every split has every kind.
  """
  rng = random.Random(f"tooldata-split:{seed}")
  names = sorted(TOOLS)
  n_test = round(HOLDOUT_FRACTION * len(names))
  by_domain = {}
  for n in names:
    by_domain.setdefault(TOOLS[n].domain, set()).add(n)
  for _ in range(10000):
    test = set(rng.sample(names, n_test))
    train = set(names) - test
    domains = {TOOLS[n].domain for n in test}
    whole = any(members <= test for members in by_domain.values())
    n_chains = [sum(c.first in side and c.second in side for c in CHAINS) for side in (test, train)]
    if len(domains) >= 8 and not whole and n_chains[0] >= 3 and n_chains[1] >= 6:
      break
  else:  # pragma: no cover - the constraints are loose enough to be met in a few draws
    raise errors.ConfigError(f"no tool split satisfies the constraints for seed {seed}")
  facts = list(range(len(FACTS)))
  rng.shuffle(facts)
  return Split(train=tuple(sorted(train)), test=tuple(sorted(test)),
               facts_test=frozenset(facts[:round(HOLDOUT_FRACTION * len(facts))]))


def _offer(rng: random.Random, needed: list[str], pool, exclude_domains=()) -> list[dict]:
  """The needed tools plus 2-4 distractors from `pool`, shuffled, as OpenAI tool specs."""
  candidates = [t for t in pool if t not in needed and TOOLS[t].domain not in exclude_domains]
  names = needed + rng.sample(candidates, min(rng.randint(2, 4), len(candidates)))
  rng.shuffle(names)
  return [TOOLS[n].spec() for n in names]


def _capitalized(text: str) -> str:
  return text[:1].upper() + text[1:]


def _call(name: str, args: dict) -> dict:
  return {"role": "tool_call", "content": _dumps({"name": name, "arguments": args})}


def _thought(rng: random.Random, tool, args: dict, prev: str | None = None) -> str:
  intent = fill(tool.intent, tool.slots(args))
  if prev is None:
    return rng.choice(_THOUGHTS).format(intent=intent, name=tool.name)
  return rng.choice(_BRIDGES).format(prev=prev, intent=intent, name=tool.name)


def _single(rng: random.Random, split: Split, name: str) -> dict:
  tool = TOOLS[rng.choice(split.tools(name))]
  args = tool.sample(rng)
  result = tool.run(args)
  messages = [{"role": "user", "content": fill(rng.choice(tool.questions), tool.slots(args))}]
  if rng.random() < THOUGHT_PROB:
    messages.append({"role": "assistant", "content": _thought(rng, tool, args)})
  messages += [_call(tool.name, args), {"role": "tool_response", "content": _dumps(result)},
               {"role": "assistant",
                "content": _capitalized(fill(rng.choice(tool.answers),
                                             tool.answer_slots(args, result)))}]
  return {"messages": messages, "tools": _offer(rng, [tool.name], split.tools(name)),
          "kind": "single"}


def _multi(rng: random.Random, split: Split, name: str) -> dict:
  chain = rng.choice(split.chains(name))
  first, second = TOOLS[chain.first], TOOLS[chain.second]
  if chain.sample is not None:
    a_args = chain.sample(rng)
  else:  # the question names only what the chain needs: drop the first tool's optional args
    a_args = {k: v for k, v in first.sample(rng).items() if k in first.required}
  a_result = first.run(a_args)
  b_args = chain.link(a_args, a_result, rng)
  b_result = second.run(b_args)
  a_slots, b_slots = first.answer_slots(a_args, a_result), second.answer_slots(b_args, b_result)
  question = fill(rng.choice(chain.questions), {**second.slots(b_args), **first.slots(a_args)})
  messages = [{"role": "user", "content": question}]
  if rng.random() < THOUGHT_PROB:
    messages.append({"role": "assistant", "content": _thought(rng, first, a_args)})
  messages += [_call(first.name, a_args), {"role": "tool_response", "content": _dumps(a_result)}]
  if rng.random() < THOUGHT_PROB:
    prev = fill(chain.bridge, a_slots)
    messages.append({"role": "assistant", "content": _thought(rng, second, b_args, prev)})
  messages += [_call(second.name, b_args), {"role": "tool_response", "content": _dumps(b_result)},
               {"role": "assistant",
                "content": _capitalized(fill(rng.choice(chain.answers),
                                             {"a": a_slots, "b": b_slots}))}]
  return {"messages": messages, "tools": _offer(rng, [first.name, second.name],
                                                split.tools(name)), "kind": "multi"}


def _none(rng: random.Random, split: Split, name: str) -> dict:
  facts = [i for i in range(len(FACTS)) if (i in split.facts_test) == (name == "test")]
  if rng.random() < 0.3:
    question, answer, exclude = arithmetic(rng)
  else:
    questions, answers, exclude = FACTS[rng.choice(facts)]
    question, answer = rng.choice(questions), rng.choice(answers)
  tools = _offer(rng, [], split.tools(name), exclude)
  if "{tools}" in answer:  # "what can you do?" answers name the offered tools
    answer = answer.format(tools=join([t["function"]["name"] for t in tools]))
  return {"messages": [{"role": "user", "content": question},
                       {"role": "assistant", "content": answer}], "tools": tools, "kind": "none"}


_MAKERS: dict[str, Callable] = {"single": _single, "multi": _multi, "none": _none}
VALID_SHARE = 0.1  # of user questions (by hash) that only the valid split may ask
_MAX_TRIES = 1000


def question_split(question: str) -> str:
  """`valid` or `train`: which of the two training-tool splits may ask `question`.

  Decided by a hash of the text, so train and valid never share a question whatever their sizes.
  """
  bucket = int.from_bytes(hashlib.sha256(question.encode()).digest()[:4], "big") / 2 ** 32
  return "valid" if bucket < VALID_SHARE else "train"


def generate(n: int, split: str = "train", seed: int = 0) -> list[dict]:
  """`n` rows of one split, the same for the same `(n, split, seed)`.

  Rows within a call are distinct; `train` and `valid` never share a user question
  (`question_split`), and `test` uses only held-out tools (and held-out knowledge questions).

  Args:
    n: number of rows.
    split: `train`, `valid` (training tools, other questions) or `test` (held-out tools only).
    seed: chooses the held-out tools and every sample.

  Returns:
    Rows `{"messages": [...], "tools": [OpenAI tool specs], "kind": "single"|"multi"|"none"}`,
    kinds in the proportions of `MIX` (exact up to rounding), shuffled.

  Raises:
    ConfigError: an unknown split or a negative `n`.
  """
  if split not in SPLITS:
    raise errors.ConfigError(f"unknown split {split!r} (known: {', '.join(SPLITS)})")
  if n < 0:
    raise errors.ConfigError(f"number of rows must be >= 0, got {n}")
  tools = split_tools(seed)
  counts = [round(n * p) for _, p in MIX[:-1]]
  kinds = [k for (k, _), c in zip(MIX, counts + [n - sum(counts)]) for _ in range(c)]
  rng = random.Random(f"tooldata:{split}:{seed}")
  rng.shuffle(kinds)
  rows, seen = [], set()
  for kind in kinds:
    for tries in range(_MAX_TRIES):
      row = _MAKERS[kind](rng, tools, split)
      if split != "test" and question_split(row["messages"][0]["content"]) != split:
        continue
      key = _dumps([row["messages"], row["tools"]])
      if key not in seen or tries > 50:  # a repeat only when the kind has run out of rows
        break
    else:  # pragma: no cover - every kind has plenty of rows in each split
      raise errors.ConfigError(f"cannot draw a {kind} row for split {split}")
    seen.add(key)
    rows.append(row)
  return rows


def _write_atomic(path: pathlib.Path, text: str) -> None:
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(text, encoding="utf-8")
  os.replace(tmp, path)


def write_splits(output_dir: str | pathlib.Path, n_train: int, n_valid: int, n_test: int,
                 seed: int = 0, overwrite: bool = False) -> dict:
  """Writes `train.jsonl`, `valid.jsonl`, `test.jsonl` and `tools.json` to `output_dir`.

  Each file is written to a temporary name and renamed, so a reader never sees half a file.
  `tools.json` records the seed, each split's tool names, the held-out domains, the two-call
  chains each split uses, and every tool's spec.

  Returns:
    A summary: rows per split, tools per split, the directory.

  Raises:
    SwiftJaxError: `output_dir` is a non-empty directory and `overwrite` is false, or it cannot
      be written.
  """
  out = pathlib.Path(output_dir)
  if out.is_dir() and any(out.iterdir()) and not overwrite:
    raise errors.SwiftJaxError(f"output directory {out} is not empty; pass --overwrite to "
                               "replace its files or choose another --output_dir")
  split = split_tools(seed)
  try:
    out.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", n_train), ("valid", n_valid), ("test", n_test)):
      rows = generate(n, name, seed)
      _write_atomic(out / f"{name}.jsonl", "".join(_dumps(r) + "\n" for r in rows))
    meta = {
        "seed": seed,
        "train": list(split.train), "test": list(split.test),
        "test_domains": sorted({TOOLS[t].domain for t in split.test}),
        "chains": {s: [[c.first, c.second] for c in split.chains(s)] for s in ("train", "test")},
        "domains": {n: t.domain for n, t in sorted(TOOLS.items())},
        "specs": [TOOLS[n].spec() for n in sorted(TOOLS)],
    }
    _write_atomic(out / "tools.json", json.dumps(meta, indent=1, ensure_ascii=False))
  except OSError as e:
    raise errors.SwiftJaxError(f"cannot write to {out}: {e.strerror or e}") from None
  return {"output_dir": str(out), "train": n_train, "valid": n_valid, "test": n_test,
          "train_tools": len(split.train), "test_tools": len(split.test),
          "test_domains": meta["test_domains"]}
