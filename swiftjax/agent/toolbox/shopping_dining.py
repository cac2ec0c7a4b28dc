"""Shipping and shopping, restaurants and cinema."""

import random
import re

from swiftjax.agent.toolbox._base import (Tool, cheapest, int_arg, join, num_arg, opts, registrar,
                                          seeded, str_arg)
from swiftjax.agent.toolbox.world import CITY_NAMES, MOVIES, random_clock, random_date

TOOLS: list[Tool] = []
_tool = registrar(TOOLS)

# ----------------------------------------------------------------------------------------------
# Shipping and shopping.

_CARRIERS = ("UPS", "FedEx", "DHL", "USPS")


def _tracking_number(r: random.Random) -> str:
  if r.random() < 0.4:
    return "1Z" + "".join(r.choice("0123456789ABCDEFGHJKLMNPRSTUVWXYZ") for _ in range(10))
  return "".join(r.choice("0123456789") for _ in range(12))


@_tool("track_package", "shipping", "Track a parcel by its tracking number.",
       {"tracking_number": str_arg("Tracking number"),
        "carrier": str_arg("Carrier (default: detect)", _CARRIERS)}, ["tracking_number"],
       sample=lambda r: opts(r, {"tracking_number": _tracking_number(r)}, p=0.3,
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
  r = seeded("track", number)
  carrier = args.get("carrier") or ("UPS" if number.startswith("1Z") else r.choice(_CARRIERS))
  return {"tracking_number": number, "carrier": carrier,
          "status": r.choice(("in transit", "out for delivery", "delivered",
                              "at the sorting facility")),
          "last_location": r.choice(CITY_NAMES), "estimated_delivery": random_date(r)}


_SHIP_COUNTRIES = ("United States", "Canada", "United Kingdom", "Germany", "France", "Japan",
                   "Australia", "Mexico", "India", "Brazil")


@_tool("estimate_shipping_cost", "shipping", "Estimate the cost and time of shipping a parcel.",
       {"weight_kg": num_arg("Parcel weight in kilograms"),
        "origin_country": str_arg("Country shipped from"),
        "destination_country": str_arg("Country shipped to"),
        "service": str_arg("Service level (default standard)", ("standard", "express"))},
       ["weight_kg", "origin_country", "destination_country"],
       sample=lambda r: opts(r, {"weight_kg": r.choice((0.5, 1, 2, 3.5, 5, 10)),
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
  r = seeded("ship", args["origin_country"], args["destination_country"])
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
       {"query": str_arg("What to look for"), "max_price": num_arg("Highest price in USD"),
        "sort_by": str_arg("Sort order (default relevance)", _SORTS)}, ["query"],
       sample=lambda r: (lambda q: opts(r, {"query": q},
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
                         "cheap_rating": c["rating"]})(cheapest(res["products"], "price_usd"))})
def _search_products(args):
  query = args["query"].lower()
  r = seeded("shop", query)
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

CUISINES = {"italian": ("Trattoria Luna", "Osteria del Ponte", "Pasta Fresca", "Il Giardino"),
            "japanese": ("Sakura House", "Kaiseki Mori", "Ramen Ichiban", "Sushi Hana"),
            "mexican": ("La Cantina Roja", "Taqueria El Sol", "Casa Oaxaca", "Maiz y Mezcal"),
            "indian": ("Spice Route", "Tandoor Palace", "Masala House", "Curry Leaf"),
            "french": ("Le Petit Bistro", "Chez Marcel", "La Belle Assiette",
                       "Brasserie du Coin"),
            "thai": ("Bangkok Garden", "Thai Orchid", "Lemongrass Kitchen", "Siam Street"),
            "vegan": ("Green Table", "Sprout and Root", "The Plant Kitchen", "Leaf Cafe")}
_PRICES = ("$", "$$", "$$$")


def _restaurant(city: str, cuisine: str, idx: int) -> dict:
  r = seeded("restaurant", city.lower(), cuisine, idx)
  return {"restaurant_id": f"rst_{city.lower().replace(' ', '')}_{cuisine}_{idx}",
          "name": CUISINES[cuisine][idx], "cuisine": cuisine,
          "rating": round(r.uniform(3.8, 4.9), 1), "price_range": r.choice(_PRICES)}


@_tool("search_restaurants", "restaurants", "Search restaurants in a city.",
       {"city": str_arg("City name"), "cuisine": str_arg("Type of food", sorted(CUISINES)),
        "price_range": str_arg("Price level", _PRICES)}, ["city"],
       sample=lambda r: opts(r, {"city": r.choice(CITY_NAMES)}, p=0.5,
                             cuisine=lambda: r.choice(sorted(CUISINES)),
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
  r = seeded("restaurants", args)
  cuisines = [args["cuisine"]] if args.get("cuisine") else sorted(CUISINES)
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
  if not m or m.group(2) not in CUISINES or int(m.group(3)) > 3:
    return None
  city = next((c for c in CITY_NAMES if c.lower().replace(" ", "") == m.group(1)), m.group(1))
  return _restaurant(city, m.group(2), int(m.group(3)))


@_tool("book_restaurant", "restaurants", "Book a table at a restaurant.",
       {"restaurant_id": str_arg("Restaurant id from search_restaurants"),
        "date": str_arg("Date, YYYY-MM-DD"), "time": str_arg("Time, HH:MM (24-hour)"),
        "party_size": int_arg("Number of people", 1, 20)},
       ["restaurant_id", "date", "time", "party_size"],
       sample=lambda r: {"restaurant_id": _restaurant(r.choice(CITY_NAMES),
                                                      r.choice(sorted(CUISINES)),
                                                      r.randrange(4))["restaurant_id"],
                         "date": random_date(r), "time": random_clock(r, 12, 21),
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
  r = seeded("booking", args)
  return {"status": "confirmed", "restaurant": place["name"], "date": args["date"],
          "time": args["time"], "party_size": args["party_size"],
          "confirmation_code": "".join(r.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789")
                                       for _ in range(6))}


@_tool("get_movie_showtimes", "cinema", "Get movie showtimes at cinemas in a city.",
       {"city": str_arg("City name"), "date": str_arg("Date, YYYY-MM-DD (default today)"),
        "movie": str_arg("Movie title, to show only that film")}, ["city"],
       sample=lambda r: opts(r, {"city": r.choice(CITY_NAMES)},
                             date=lambda: random_date(r), movie=lambda: r.choice(MOVIES)),
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
  r = seeded("cinema", args["city"].lower(), args.get("date"))
  cinemas = (f"{args['city']} Cineplex", "Odeon Central", "Star Cinema", "Riverside Pictures")
  movies = [args["movie"]] * 2 if args.get("movie") else r.sample(MOVIES, 2)
  return {"city": args["city"], "date": args.get("date", "2025-06-15"), "showtimes": [
      {"movie": m, "cinema": c, "times": sorted(r.sample(("13:30", "16:00", "18:15", "19:45",
                                                          "21:00", "22:30"), 2))}
      for m, c in zip(movies, r.sample(cinemas, 2))]}
