"""World data the fake tools share (so chained calls agree with each other)."""

import datetime
import math
import random

from swiftjax.agent.toolbox._base import seeded

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
CITY_NAMES = sorted(CITIES)
AIRPORTS = {v[5]: k for k, v in CITIES.items()}
TZ_OFFSET = {v[3]: v[4] for v in CITIES.values()}
# Units of each currency per US dollar.
RATES = {"USD": 1.0, "EUR": 0.92, "GBP": 0.79, "JPY": 151.0, "AUD": 1.52, "CAD": 1.36,
         "CHF": 0.9, "INR": 83.3, "BRL": 5.05, "MXN": 17.0, "KRW": 1350.0, "SGD": 1.35,
         "SEK": 10.6, "NOK": 10.7, "ZAR": 18.7, "CNY": 7.2, "AED": 3.67, "THB": 36.5}
CURRENCIES = sorted(RATES)
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
SYMBOLS = {v[0]: (k,) + v for k, v in COMPANIES.items()}
CONTACTS = ("Maria Garcia", "John Smith", "Aisha Khan", "Wei Chen", "Lucas Silva", "Emma Johnson",
            "Olivia Brown", "Noah Williams", "Yuki Tanaka", "Priya Patel", "Ahmed Hassan",
            "Sofia Rossi", "Carlos Mendez", "Fatima Ali", "Daniel Kim", "Chloe Martin",
            "Ivan Petrov", "Grace Lee")
EMAILS = (("Lunch on Friday", "Are you free for lunch on Friday at 12:30?"),
          ("Project update", "The first draft of the report is ready for your review."),
          ("Meeting moved", "Our meeting has moved to Thursday at 3 pm."),
          ("Thank you", "Thanks again for your help with the presentation."),
          ("Invoice for March", "Please find the invoice for March attached."),
          ("Weekend plans", "Do you want to go hiking on Saturday morning?"),
          ("Flight details", "My flight lands at 6:40 pm, see you at the airport."),
          ("Quick question", "Could you send me the slides from yesterday?"))
EVENTS = ("Team standup", "Dentist appointment", "Lunch with Sofia", "Quarterly review",
          "Yoga class", "Project kickoff", "Call with the bank", "Book club", "Budget meeting",
          "Parent-teacher meeting", "Design review", "Coffee with Daniel")
TEAMS = {"Premier League": ("Arsenal", "Liverpool", "Chelsea", "Manchester City", "Tottenham",
                            "Newcastle"),
         "La Liga": ("Real Madrid", "Barcelona", "Atletico Madrid", "Sevilla", "Valencia",
                     "Real Sociedad"),
         "Serie A": ("Juventus", "Inter", "AC Milan", "Napoli", "Roma", "Lazio"),
         "NBA": ("Lakers", "Celtics", "Warriors", "Bulls", "Heat", "Knicks")}
LEAGUE_OF = {t: lg for lg, ts in TEAMS.items() for t in ts}
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
PHRASE_INDEX = {text: (i, LANGUAGES[j]) for i, row in enumerate(PHRASES)
                for j, text in enumerate(row)}


def random_date(rng: random.Random, year: int = 2025) -> str:
  """A day of `year`, `YYYY-MM-DD`."""
  return (datetime.date(year, 1, 1) + datetime.timedelta(days=rng.randrange(365))).isoformat()


def random_clock(rng: random.Random, lo: int = 7, hi: int = 21) -> str:
  """A time `HH:MM` on the quarter hour, hours `lo`..`hi`."""
  return f"{rng.randint(lo, hi):02d}:{rng.choice((0, 15, 30, 45)):02d}"


def add_minutes(clock: str, minutes: float) -> tuple[str, int]:
  """`HH:MM` plus minutes, and the day offset (-1, 0, 1)."""
  h, m = map(int, clock.split(":"))
  total = h * 60 + m + int(round(minutes))
  return f"{total % 1440 // 60:02d}:{total % 60:02d}", total // 1440


def coords(place: str) -> tuple[float, float]:
  """(latitude, longitude) of a known city; a fixed made-up point for any other place."""
  if place in CITIES:
    return CITIES[place][1], CITIES[place][2]
  r = seeded("coords", place.lower())
  return round(r.uniform(-50, 60), 4), round(r.uniform(-120, 140), 4)


def great_circle_km(a: tuple[float, float], b: tuple[float, float]) -> float:
  """Great-circle distance (haversine, Earth radius 6371 km)."""
  la1, lo1, la2, lo2 = map(math.radians, (*a, *b))
  h = (math.sin((la2 - la1) / 2) ** 2
       + math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2)
  return 2 * 6371 * math.asin(math.sqrt(h))
