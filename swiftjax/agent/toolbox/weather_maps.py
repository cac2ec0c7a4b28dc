"""Weather and maps: current weather, forecasts, air quality, geocoding, distances, nearby
places."""

from swiftjax.agent.toolbox._base import (Tool, int_arg, join, num_arg, opts, registrar, seeded,
                                          str_arg)
from swiftjax.agent.toolbox.world import CITIES, CITY_NAMES, coords, great_circle_km

TOOLS: list[Tool] = []
_tool = registrar(TOOLS)


def _weather(lat: float, lon: float, units: str) -> dict:
  """Current weather at a point: the same point always has the same weather."""
  r = seeded("weather", round(lat, 1), round(lon, 1))
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


# ----------------------------------------------------------------------------------------------
# Weather.

TEMPERATURE_UNITS = ("celsius", "fahrenheit")


@_tool("get_current_weather", "weather", "Get the current weather conditions in a city.",
       {"location": str_arg("City name, e.g. Paris"),
        "units": str_arg("Temperature units (default celsius)", TEMPERATURE_UNITS)}, ["location"],
       sample=lambda r: opts(r, {"location": r.choice(CITY_NAMES)},
                             units=lambda: r.choice(TEMPERATURE_UNITS)),
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
                "The weather in {location}: {condition}, {temperature}{sym}, humidity "
                "{humidity}%."),
       derive=_symbol)
def _get_current_weather(args):
  return {"location": args["location"],
          **_weather(*coords(args["location"]), args.get("units", "celsius"))}


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
       {"location": str_arg("City name"), "days": int_arg("Number of days to forecast", 1, 7),
        "units": str_arg("Temperature units (default celsius)", TEMPERATURE_UNITS)},
       ["location", "days"],
       sample=lambda r: opts(r, {"location": r.choice(CITY_NAMES), "days": r.randint(2, 5)},
                             units=lambda: r.choice(TEMPERATURE_UNITS)),
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
  lat, lon = coords(args["location"])
  r = seeded("forecast", round(lat, 1), round(lon, 1))
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
       {"city": str_arg("City name")}, ["city"],
       sample=lambda r: {"city": r.choice(CITY_NAMES)},
       questions=("How's the air quality in {city} today?", "What is the AQI in {city}?",
                  "Is the air in {city} clean enough for a run this morning?",
                  "Check the pollution level in {city}."),
       intent="look up the air quality index for {city}",
       answers=("The air quality index in {city} is {aqi} ({category}), with PM2.5 at "
                "{pm25} µg/m³.",
                "{city} has an AQI of {aqi}, rated {category}; the main pollutant is "
                "{dominant_pollutant}."))
def _get_air_quality(args):
  r = seeded("aqi", args["city"].lower())
  aqi = r.randint(12, 180)
  return {"city": args["city"], "aqi": aqi, "category": _aqi_category(aqi),
          "pm25": round(aqi * 0.35 + r.uniform(0, 5), 1),
          "dominant_pollutant": r.choice(("pm2.5", "ozone", "no2", "pm10"))}


@_tool("get_weather_by_coordinates", "weather", "Get the current weather at a latitude and "
       "longitude.",
       {"latitude": num_arg("Latitude in degrees"), "longitude": num_arg("Longitude in degrees"),
        "units": str_arg("Temperature units (default celsius)", TEMPERATURE_UNITS)},
       ["latitude", "longitude"],
       sample=lambda r: opts(r, dict(zip(("latitude", "longitude"),
                                         coords(r.choice(CITY_NAMES)))),
                             units=lambda: r.choice(TEMPERATURE_UNITS)),
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


# ----------------------------------------------------------------------------------------------
# Maps.


@_tool("geocode_city", "maps", "Look up the latitude and longitude of a city.",
       {"city": str_arg("City name"), "country": str_arg("Country, to disambiguate")}, ["city"],
       sample=lambda r: (lambda c: opts(r, {"city": c}, country=lambda: CITIES[c][0]))(
           r.choice(CITY_NAMES)),
       questions=("What are the coordinates of {city}<, {country}>?",
                  "Find the latitude and longitude of {city}< in {country}>.",
                  "I need the GPS coordinates of {city}<, {country}>.",
                  "Geocode {city}< ({country})> for me."),
       intent="look up the coordinates of {city}<, {country}>",
       answers=("{city}, {country} is at latitude {latitude}, longitude {longitude}.",
                "The coordinates of {city} are {latitude}, {longitude}."))
def _geocode_city(args):
  city = args["city"]
  lat, lon = coords(city)
  country = CITIES[city][0] if city in CITIES else args.get("country", "unknown")
  return {"city": city, "country": country, "latitude": lat, "longitude": lon}


_MODES = ("driving", "walking", "cycling", "transit")
_SPEED = {"driving": 80, "walking": 5, "cycling": 18, "transit": 60}
_NEAR_PAIRS = [(a, b) for a in CITY_NAMES for b in CITY_NAMES
               if a != b and great_circle_km(coords(a), coords(b)) < 1500]


@_tool("get_distance", "maps", "Get the travel distance and time between two places.",
       {"origin": str_arg("Starting place"), "destination": str_arg("Destination"),
        "mode": str_arg("Travel mode (default driving)", _MODES)}, ["origin", "destination"],
       sample=lambda r: (lambda p: opts(r, {"origin": p[0], "destination": p[1]},
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
  km = round(great_circle_km(coords(args["origin"]), coords(args["destination"])) * 1.25, 1)
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
       {"location": str_arg("City or address"),
        "category": str_arg("Kind of place", sorted(_PLACES)),
        "radius_m": int_arg("Search radius in meters (default 1000)", 100, 20000)},
       ["location", "category"],
       sample=lambda r: opts(r, {"location": r.choice(CITY_NAMES),
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
  r = seeded("places", args["location"].lower(), args["category"])
  radius = args.get("radius_m", 1000)
  names = r.sample(_PLACES[args["category"]], 3)
  dists = sorted(r.randint(radius // 10, radius) for _ in names)
  return {"location": args["location"], "category": args["category"],
          "places": [{"name": n, "distance_m": d} for n, d in zip(names, dists)]}
