"""Questions that need no tool: (question variants, answer variants, tool domains not to offer)."""

import random

from swiftjax.agent.toolbox._base import plain_number

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
    ans = f"{p}% of {x} is {plain_number(x * p / 100)}."
  return q, ans, ("math",)
