"""Two-call chains: the second call's arguments come from the first call's response."""

import random

from swiftjax.agent.toolbox._base import Chain, cheapest, opts
from swiftjax.agent.toolbox.office import email_args
from swiftjax.agent.toolbox.shopping_dining import CUISINES
from swiftjax.agent.toolbox.weather_maps import TEMPERATURE_UNITS
from swiftjax.agent.toolbox.world import (CITY_NAMES, CURRENCIES, LANGUAGES, TZ_OFFSET,
                                          random_clock, random_date)

CHAINS: list[Chain] = []


def _chain(first, second, link, questions, bridge, answers, sample=None):
  CHAINS.append(Chain(first, second, link, tuple(questions), bridge, tuple(answers), sample))


def _to_currency(r: random.Random, amount: float) -> dict:
  return {"amount": amount, "from_currency": "USD",
          "to_currency": r.choice([c for c in CURRENCIES if c != "USD"])}


_chain("geocode_city", "get_weather_by_coordinates",
       lambda a, res, r: opts(r, {"latitude": res["latitude"], "longitude": res["longitude"]},
                              units=lambda: r.choice(TEMPERATURE_UNITS)),
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
_chain("search_contacts", "send_email", lambda a, res, r: email_args(r, res["email"]),
       ("Email {name} with the subject '{subject}': {body}",
        "Please send {name} a message titled \"{subject}\" that says \"{body}\"",
        "Look up {name}'s email address and send them \"{body}\" with the subject '{subject}'."),
       "{name}'s email is {email}.",
       ("Done: I emailed {a[name]} at {a[email]} with the subject '{b[subject]}'.",
        "Your message \"{b[subject]}\" is on its way to {a[name]} ({a[email]})."))
_chain("search_contacts", "create_calendar_event",
       lambda a, res, r: {"title": r.choice(("Project sync", "Coffee chat", "Budget review",
                                             "Planning session", "Weekly check-in")),
                          "date": random_date(r), "start_time": random_clock(r),
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
                          "date": random_date(r), "time": random_clock(r, 12, 21),
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
       sample=lambda r: {"city": r.choice(CITY_NAMES), "cuisine": r.choice(sorted(CUISINES))})
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
       lambda a, res, r: _to_currency(r, cheapest(res["flights"], "price_usd")["price_usd"]),
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
           r, cheapest(res["hotels"], "price_per_night_usd")["price_per_night_usd"]),
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
       lambda a, res, r: _to_currency(r, cheapest(res["products"], "price_usd")["price_usd"]),
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
       lambda a, res, r: {"time": random_clock(r, 0, 23), "from_timezone": r.choice(
           [z for z in sorted(TZ_OFFSET) if z != res["timezone"]]),
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
        "{a[symbol]}'s mean close over {a[days]} days was ${b[mean]:.2f}, ranging from "
        "${b[min]:.2f} to ${b[max]:.2f}."))
