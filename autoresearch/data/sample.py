"""A built-in corpus that needs no network: procedurally generated short stories.

`generate_stories(seed, target_chars)` writes simple children's stories from a small grammar:
a hero (name, kind, trait, pronoun) who lives in a place, owns a coloured object, loses it or
wants something, asks a friend, searches a few places, counts things on the way (the sums are
right), and ends happily. Within a story the names, the object and its colour, and the pronouns
stay consistent and are repeated, so even a tiny model has something to learn beyond word
frequencies: copying from context, agreement, simple arithmetic. Names are built from syllables,
which gives the BPE trainer enough distinct words to learn a vocabulary of several thousand tokens.

The same (seed, target_chars) always yields the same stories, on every machine and Python
version (only `random.Random` with an integer seed and fixed word lists are used).

What this does NOT give you: real language. A model trained on it says nothing about how an
idea will do on web text; it exists for demos, smoke tests and CPU-sized experiments.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

GENERATOR_VERSION = 1  # bump when the stories change, so prepared datasets are rebuilt
DEFAULT_SEED = 1337
DEFAULT_TARGET_CHARS = 4_000_000
BATCH_STORIES = 512

# --- Word lists -------------------------------------------------------------------------------
ONSETS = ["b", "br", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "sh", "t", "th", "v", "w",
          "z", "ch", "st", "tr", "cl", "gr", "pl", "fl", "sn", "qu", "y"]
VOWELS = ["a", "e", "i", "o", "u", "ai", "ee", "oo", "ou", "ia", "y"]
CODAS = ["", "", "", "n", "l", "r", "s", "m", "th", "x", "ck", "nd", "lly", "tt", "ss", "ph"]

KINDS = ["fox", "rabbit", "owl", "bear", "mouse", "frog", "turtle", "duck", "cat", "dog", "girl", "boy",
         "robot", "dragon", "hedgehog", "squirrel", "badger", "goat", "lamb", "pig", "cow", "horse", "pony",
         "crow", "sparrow", "whale", "otter", "beaver", "moose", "deer", "wolf", "lion", "tiger", "panda",
         "koala", "penguin", "seal", "crab", "snail", "bee", "ant", "beetle", "bat", "giraffe", "zebra",
         "monkey", "elephant", "hippo", "kitten", "puppy", "knight", "princess", "wizard", "baker",
         "farmer", "sailor"]
TRAITS = ["brave", "shy", "curious", "kind", "clever", "sleepy", "cheerful", "gentle", "quiet", "silly",
          "careful", "busy", "proud", "tiny", "tall", "happy", "grumpy", "friendly", "patient", "bold",
          "quick", "slow", "honest", "helpful", "polite", "noisy", "calm", "wise", "young", "old"]
PLACES = ["forest", "village", "garden", "river", "hill", "beach", "cave", "castle", "meadow", "farm",
          "library", "market", "bakery", "harbor", "school", "park", "valley", "island", "pond", "orchard",
          "barn", "kitchen", "attic", "field", "bridge", "tower", "mountain", "lake", "swamp", "desert",
          "station", "museum", "playground", "jungle", "city", "town", "lighthouse", "mill", "cottage",
          "shop"]
PLACE_ADJECTIVES = ["quiet", "sunny", "old", "busy", "foggy", "green", "snowy", "windy", "little", "big",
                    "shady", "bright", "dark", "peaceful", "magic", "far", "hidden", "friendly", "muddy",
                    "golden"]
OBJECTS = ["kite", "ball", "hat", "key", "book", "lamp", "drum", "shell", "map", "ribbon", "boat", "cup",
           "scarf", "bell", "coin", "flute", "basket", "blanket", "clock", "crayon", "feather", "glove",
           "jar", "kettle", "ladder", "mitten", "necklace", "pencil", "pillow", "puzzle", "ring", "rope",
           "sock", "spoon", "stone", "teapot", "top", "toy", "trumpet", "umbrella", "wagon", "whistle",
           "yo-yo", "balloon", "brush", "candle", "compass", "crown", "marble", "mirror", "paintbox",
           "shovel", "sled", "telescope", "violin", "wheel", "button", "comb", "letter", "lantern"]
COLORS = ["red", "blue", "green", "yellow", "purple", "orange", "pink", "white", "black", "brown", "gray",
          "silver", "golden", "striped", "spotted"]
COUNTABLES = ["stars", "birds", "apples", "flowers", "clouds", "boats", "trees", "stones", "butterflies",
              "ducks", "leaves", "shells", "mushrooms", "carrots", "bees", "fish", "houses", "lanterns"]
HIDING_SPOTS = ["under a bush", "behind a big rock", "inside an old box", "next to the door",
                "on top of a tall shelf", "in a pile of leaves", "under the bed", "beside the well",
                "behind the curtain", "in the tall grass", "near the fence", "under a bench"]
TIMES = ["morning", "afternoon", "evening", "day", "night"]
WEATHERS = ["the sun was shining", "it was raining softly", "the wind was blowing", "snow was falling",
            "the sky was gray", "the air was warm", "a rainbow was in the sky"]
FEELINGS = ["sad", "worried", "upset", "lonely", "confused"]
MORALS = ["It is good to ask friends for help.", "Sharing makes everyone happy.", "Being patient pays off.",
          "Friends make every problem smaller.", "Looking carefully helps you find things.",
          "Kind words make a day brighter."]


def _make_names(rng: random.Random, count: int) -> list[str]:
    names: set[str] = set()
    while len(names) < count:
        syllables = rng.choice((2, 2, 2, 3))
        word = "".join(rng.choice(ONSETS) + rng.choice(VOWELS) for _ in range(syllables)) + rng.choice(CODAS)
        names.add(word.capitalize())
    return sorted(names)


class _Character:
    def __init__(self, rng: random.Random, names: list[str]):
        self.name = rng.choice(names)
        self.kind = rng.choice(KINDS)
        self.trait = rng.choice(TRAITS)
        gendered_kinds = {"girl": True, "princess": True, "boy": False, "knight": False}
        female = gendered_kinds.get(self.kind, rng.random() < 0.5)
        self.subject, self.object_pronoun = ("she", "her") if female else ("he", "him")


def _story(rng: random.Random, names: list[str], town_names: list[str]) -> str:
    hero, friend = _Character(rng, names), _Character(rng, names)
    while friend.name == hero.name:
        friend.name = rng.choice(names)
    home = rng.choice(PLACES)
    town = rng.choice(town_names)
    thing, color = rng.choice(OBJECTS), rng.choice(COLORS)
    h, f = hero.name, friend.name
    paragraphs = []

    opening = rng.choice([
        f"Once upon a time, in a {rng.choice(PLACE_ADJECTIVES)} {home} near {town}, there lived a "
        f"{hero.trait} {hero.kind} named {h}.",
        f"{h} was a {hero.trait} little {hero.kind} who lived by the {home} in {town}.",
        f"In the land of {town}, there was a {hero.trait} {hero.kind}. The {hero.kind} was called {h}.",
    ])
    paragraphs.append(f"{opening} {h} had a {color} {thing}. {hero.subject.capitalize()} loved the {color} "
                      f"{thing} more than anything.")

    plot = rng.random()
    when = rng.choice(TIMES)
    if plot < 0.6:  # the lost object
        paragraphs.append(f"One {when}, {rng.choice(WEATHERS)}. {h} looked for the {color} {thing}, but it "
                          f"was gone! {h} felt {rng.choice(FEELINGS)}.")
        paragraphs.append(f"{h} went to see {f} the {friend.kind}. \"{f}, have you seen my {color} "
                          f"{thing}?\" asked {h}. \"No,\" said {f}, \"but I will help you look for it.\"")
        searched = rng.sample([p for p in PLACES if p != home], rng.randint(1, 3))
        lines = [f"First they looked in the {searched[0]}, but the {thing} was not there."]
        for place in searched[1:]:
            lines.append(f"Then they looked by the {place}. The {thing} was not there either.")
        if rng.random() < 0.7:
            a, b, counted = rng.randint(1, 9), rng.randint(1, 9), rng.choice(COUNTABLES)
            lines.append(f"On the way, {h} counted {a} {counted} and {f} counted {b} more. "
                         f"\"That makes {a + b} {counted}!\" said {f}.")
        spot = rng.choice(HIDING_SPOTS)
        lines.append(f"At last, {f} saw something {color} {spot}. It was the {color} {thing}!")
        paragraphs.append(" ".join(lines))
        paragraphs.append(f"{h} hugged {f}. \"Thank you, {f}!\" {hero.subject} said. From that day on, {h} "
                          f"kept the {color} {thing} in a safe place, and {h} and {f} were best friends.")
    else:  # the shared object
        wish = rng.choice([o for o in OBJECTS if o != thing])
        paragraphs.append(f"One {when}, {h} met {f}, a {friend.trait} {friend.kind}. {f} looked "
                          f"{rng.choice(FEELINGS)}. \"I wish I had a {wish},\" said {f}.")
        paragraphs.append(f"{h} thought for a moment. {hero.subject.capitalize()} did not have a {wish}, but "
                          f"{hero.subject} had the {color} {thing}. \"We can share my {color} {thing},\" "
                          f"said {h}. {f} smiled at {hero.object_pronoun}.")
        a, b, counted = rng.randint(2, 9), rng.randint(1, 9), rng.choice(COUNTABLES)
        paragraphs.append(f"They played with the {color} {thing} all {when} by the {home}. They saw {a} "
                          f"{counted}, and later {b} more, so they saw {a + b} {counted} in all.")
        paragraphs.append(f"When it was time to go home, {f} said, \"Thank you for sharing, {h}!\" "
                          f"{h} felt warm inside.")
    paragraphs.append(rng.choice(MORALS))
    return "\n\n".join(paragraphs)


def generate_stories(seed: int = DEFAULT_SEED,
                     target_chars: int = DEFAULT_TARGET_CHARS) -> Iterator[list[str]]:
    """Batches of stories, about `target_chars` characters in all (the last story may overshoot)."""
    rng = random.Random(seed)
    names = _make_names(rng, 2000)
    town_names = _make_names(rng, 400)
    produced = 0
    while produced < target_chars:
        batch = []
        for _ in range(BATCH_STORIES):
            story = _story(rng, names, town_names)
            batch.append(story)
            produced += len(story)
            if produced >= target_chars:
                break
        yield batch
