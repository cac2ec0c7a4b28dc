"""Recipes and nutrition, unit conversion, and language (translation, detection, definitions)."""

import random
import re

from swiftjax.agent.toolbox._base import (Tool, int_arg, join, num_arg, opts, registrar, seeded,
                                          str_arg)
from swiftjax.agent.toolbox.world import LANGUAGES, PHRASE_INDEX, PHRASES

TOOLS: list[Tool] = []
_tool = registrar(TOOLS)

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
       {"ingredient": str_arg("Main ingredient"), "diet": str_arg("Dietary restriction", _DIETS),
        "max_time_minutes": int_arg("Longest total cooking time", 5, 240)}, ["ingredient"],
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
  r = seeded("recipes", ingredient, args.get("diet"))
  found = []
  for idx in r.sample(range(len(_STYLES)), len(_STYLES)):
    recipe = _recipe(ingredient, idx)
    if (args.get("diet") in _STYLES[idx][3]
        or recipe["time_minutes"] > args.get("max_time_minutes", 1e9)):
      continue
    found.append(recipe)
  return {"ingredient": ingredient, "recipes": found[:3]}


@_tool("get_recipe_details", "recipes", "Get the ingredients and cooking time of a recipe.",
       {"recipe_id": str_arg("Recipe id from search_recipes, e.g. rcp_tofu_3")}, ["recipe_id"],
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
       {"food": str_arg("Food name"), "quantity_grams": num_arg("Amount in grams (default 100)")},
       ["food"],
       sample=lambda r: opts(r, {"food": r.choice(sorted(NUTRITION))},
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
       {"value": num_arg("Quantity to convert"), "from_unit": str_arg("Unit of the value", UNITS),
        "to_unit": str_arg("Unit to convert to", UNITS)}, ["value", "from_unit", "to_unit"],
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
       {"value": num_arg("Temperature to convert"),
        "from_scale": str_arg("Scale of the value", _SCALES),
        "to_scale": str_arg("Scale to convert to", _SCALES)}, ["value", "from_scale", "to_scale"],
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
  return opts(r, {"text": row[LANGUAGES.index(src)], "target_language": dst}, p=0.3,
              source_language=lambda: src)


@_tool("translate_text", "language", "Translate text into another language.",
       {"text": str_arg("Text to translate"),
        "target_language": str_arg("Language to translate into", LANGUAGES),
        "source_language": str_arg("Language of the text (default: detect)", LANGUAGES)},
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
  found = PHRASE_INDEX.get(args["text"].strip())
  dst = args["target_language"]
  if found is None:
    return {"translated_text": f"[{dst}] {args['text']}", "target_language": dst}
  row, src = found
  return {"translated_text": PHRASES[row][LANGUAGES.index(dst)],
          "source_language": args.get("source_language", src), "target_language": dst}


@_tool("detect_language", "language", "Detect which language a text is written in.",
       {"text": str_arg("Text to analyse")}, ["text"],
       sample=lambda r: {"text": r.choice(r.choice(PHRASES)[1:])},
       questions=("What language is '{text}' written in?", "Which language is this: \"{text}\"?",
                  "Can you identify the language of \"{text}\"?"),
       intent="detect the language of \"{text}\"",
       answers=("That's {language} (confidence {confidence}).",
                "\"{text}\" is written in {language}."))
def _detect_language(args):
  found = PHRASE_INDEX.get(args["text"].strip())
  r = seeded("detect", args["text"])
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
       {"word": str_arg("The word")}, ["word"],
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
