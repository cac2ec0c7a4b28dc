"""Travel (flights, hotels), currency and finance, and stocks."""

import random

from swiftjax.agent.toolbox._base import (Tool, cheapest, int_arg, join, num_arg, opts, registrar,
                                          seeded, str_arg)
from swiftjax.agent.toolbox.world import (AIRPORTS, CITY_NAMES, COMPANIES, CURRENCIES, RATES,
                                          SYMBOLS, add_minutes, coords, great_circle_km,
                                          random_clock, random_date)

TOOLS: list[Tool] = []
_tool = registrar(TOOLS)

# ----------------------------------------------------------------------------------------------
# Travel.

_CABINS = ("economy", "premium_economy", "business", "first")
_CABIN_FACTOR = {"economy": 1.0, "premium_economy": 1.6, "business": 3.2, "first": 5.0}
_AIRLINES = (("Air France", "AF"), ("British Airways", "BA"), ("Lufthansa", "LH"),
             ("Delta", "DL"), ("United", "UA"), ("Emirates", "EK"), ("Singapore Airlines", "SQ"),
             ("KLM", "KL"), ("Iberia", "IB"), ("Qantas", "QF"), ("Japan Airlines", "JL"),
             ("Turkish Airlines", "TK"))


def _two_airports(r: random.Random) -> dict:
  a, b = r.sample(sorted(AIRPORTS), 2)
  return {"origin": a, "destination": b}


@_tool("search_flights", "travel", "Search flights between two airports on a date.",
       {"origin": str_arg("Departure airport IATA code, e.g. JFK"),
        "destination": str_arg("Arrival airport IATA code"),
        "date": str_arg("Departure date, YYYY-MM-DD"),
        "cabin_class": str_arg("Cabin class (default economy)", _CABINS),
        "passengers": int_arg("Number of passengers (default 1)", 1, 9)},
       ["origin", "destination", "date"],
       sample=lambda r: opts(r, {**_two_airports(r), "date": random_date(r)},
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
                                for f in res["flights"])})(cheapest(res["flights"],
                                                                    "price_usd")),
       view=lambda a: {"origin_city": AIRPORTS.get(a["origin"], a["origin"]),
                       "destination_city": AIRPORTS.get(a["destination"],
                                                        a["destination"])})
def _search_flights(args):
  r = seeded("flights", args["origin"], args["destination"], args["date"],
             args.get("cabin_class", "economy"))
  a, b = (coords(AIRPORTS.get(args[k], args[k])) for k in ("origin", "destination"))
  base = (60 + 0.09 * great_circle_km(a, b)) * _CABIN_FACTOR[args.get("cabin_class", "economy")]
  flights = []
  for airline, code in r.sample(_AIRLINES, 3):
    flights.append({"flight_number": f"{code}{r.randint(10, 2999)}", "airline": airline,
                    "departure": random_clock(r, 6, 22),
                    "price_usd": round(base * r.uniform(0.8, 1.3))})
  return {"origin": args["origin"], "destination": args["destination"], "date": args["date"],
          "flights": sorted(flights, key=lambda f: f["departure"])}


@_tool("get_flight_status", "travel", "Get the live status of a flight by its flight number.",
       {"flight_number": str_arg("Flight number, e.g. BA117"),
        "date": str_arg("Flight date, YYYY-MM-DD (default today)")}, ["flight_number"],
       sample=lambda r: opts(r, {"flight_number": r.choice(_AIRLINES)[1]
                                                   + str(r.randint(10, 2999))},
                             date=lambda: random_date(r)),
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
  r = seeded("status", args["flight_number"].upper(), args.get("date"))
  dep, arr = r.sample(sorted(AIRPORTS), 2)
  scheduled = random_clock(r, 6, 22)
  status = r.choice(("on time", "on time", "delayed", "boarding", "in the air"))
  delay = r.choice((25, 40, 75, 120)) if status == "delayed" else 0
  return {"flight_number": args["flight_number"], "status": status, "departure_airport": dep,
          "arrival_airport": arr, "scheduled_departure": scheduled,
          "estimated_departure": add_minutes(scheduled, delay)[0],
          "gate": f"{r.choice('ABCDE')}{r.randint(1, 40)}"}


_HOTELS = ("Grand Central Hotel", "The City Inn", "Hotel Aurora", "Riverside Suites",
           "Park View Lodge", "Harbor Lights Hotel", "Old Town Residence", "Skyline Hotel")


@_tool("search_hotels", "travel", "Search hotels in a city for given dates.",
       {"city": str_arg("City name"), "check_in": str_arg("Check-in date, YYYY-MM-DD"),
        "nights": int_arg("Number of nights", 1, 30), "guests": int_arg("Guests (default 2)", 1, 8),
        "max_price": num_arg("Highest nightly price in USD")}, ["city", "check_in", "nights"],
       sample=lambda r: opts(r, {"city": r.choice(CITY_NAMES), "check_in": random_date(r),
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
                                   cheapest(res["hotels"], "price_per_night_usd")))
def _search_hotels(args):
  r = seeded("hotels", args["city"].lower(), args["check_in"])
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
  a, b = r.sample(CURRENCIES, 2)
  return a, b


@_tool("convert_currency", "finance", "Convert an amount of money from one currency to another.",
       {"amount": num_arg("Amount to convert"),
        "from_currency": str_arg("ISO 4217 code of the source currency, e.g. USD"),
        "to_currency": str_arg("ISO 4217 code of the target currency, e.g. EUR")},
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
       {"base": str_arg("ISO 4217 code of the base currency"),
        "target": str_arg("ISO 4217 code of the quote currency")}, ["base", "target"],
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
       {"coin": str_arg("Cryptocurrency", sorted(_COINS)),
        "currency": str_arg("ISO 4217 code to quote in (default USD)")}, ["coin"],
       sample=lambda r: opts(r, {"coin": r.choice(sorted(_COINS))},
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
  r = seeded("coin", coin)
  usd = _COINS.get(coin, 1.0) * r.uniform(0.9, 1.1)
  price = usd * RATES.get(currency, 1.0)
  return {"coin": coin, "currency": currency,
          "price": round(price, 2) if price >= 1 else round(price, 4),
          "change_24h_percent": round(r.uniform(-6, 6), 2)}


@_tool("calculate_loan_payment", "finance", "Monthly payment and total interest of a fixed-rate "
       "loan.",
       {"principal": num_arg("Loan amount"),
        "annual_rate": num_arg("Annual interest rate in percent"),
        "years": int_arg("Loan term in years", 1, 40)}, ["principal", "annual_rate", "years"],
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
       {"company": str_arg("Company name")}, ["company"],
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
  r = seeded("stock", symbol.upper())
  base = SYMBOLS[symbol.upper()][3] if symbol.upper() in SYMBOLS else r.uniform(10, 300)
  return round(base * r.uniform(0.94, 1.06), 2), r


@_tool("get_stock_price", "stocks", "Get the latest stock price for a ticker symbol.",
       {"symbol": str_arg("Ticker symbol, e.g. AAPL")}, ["symbol"],
       sample=lambda r: {"symbol": r.choice(sorted(SYMBOLS))},
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
       {"symbol": str_arg("Ticker symbol"), "days": int_arg("Number of trading days", 2, 30)},
       ["symbol", "days"],
       sample=lambda r: {"symbol": r.choice(sorted(SYMBOLS)), "days": r.randint(3, 7)},
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
