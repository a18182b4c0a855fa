"""Closed word classes the scene-graph rules need and a dependency parse does not provide.

Each set is a general class of English words (materials, garments, quantity nouns, ...), not a list
of phrases taken from any caption set. Lemmas are lowercase.
"""

from __future__ import annotations

#: Nouns that, before ``of``, measure or count the noun after it: "a couple of people", "a bunch of
#: kites". The object is the noun after ``of``.
QUANTITY_NOUNS = frozenset(
    {
        "bit", "bunch", "couple", "dozen", "few", "handful", "lot", "lots", "number", "pair", "pile",
        "plenty", "row", "set", "stack", "variety", "piece", "line", "cluster", "series", "bundle",
        "collection", "assortment", "array", "loads", "ton", "tons", "alot",
    }
)  # fmt: skip

#: Collective nouns before ``of``: the object is the noun after ``of`` and the collective is kept as
#: an attribute of it ("a group of people" -> people, attribute "group of").
COLLECTIVE_NOUNS = frozenset({"group", "crowd", "herd", "flock", "team", "family", "school", "pack", "swarm"})

#: Nouns that turn ``PREP the NOUN of`` into one spatial preposition: "in front of", "on top of",
#: "on the side of", "to the left of".
SPATIAL_NOUNS = frozenset(
    {
        "front", "top", "side", "back", "middle", "end", "corner", "edge", "left", "right", "bottom",
        "center", "centre", "rear", "base", "tip", "underside", "inside", "outside", "rest", "surface",
    }
)  # fmt: skip

#: Directions whose relation is named without the preposition before them: "to the left of" ->
#: "left of", the way the synthetic scene captions and their relation vocabulary say it.
DIRECTION_NOUNS = frozenset({"left", "right"})

#: Adverbs and adjectives that head a two-word preposition: "next to", "close to", "out of".
PREPOSITION_HEADS = frozenset({"next", "close", "out", "left", "right", "adjacent", "near", "ahead", "away"})

#: Material nouns used as noun modifiers describe the object rather than name it: "metal cube" is a
#: cube with the attribute metal, while "tennis racket" names one thing.
MATERIAL_NOUNS = frozenset(
    {
        "metal", "rubber", "wood", "plastic", "glass", "stone", "brick", "leather", "wire", "dirt",
        "concrete", "steel", "paper", "cloth", "denim", "marble", "tile", "iron", "gold", "silver",
        "cotton", "wool", "straw", "ceramic", "porcelain", "asphalt", "cement", "chrome", "copper",
        "bamboo", "cardboard", "wicker", "aluminum", "aluminium", "tin", "fur", "lace", "silk", "velvet",
        "vinyl", "rock", "clay", "granite", "mesh", "canvas", "felt", "foam", "gravel", "sand",
    }
)  # fmt: skip

#: Determiner-like adjectives that quantify rather than describe: not attributes ("many animals").
#: "one" is the indefinite article's meaning, not a count worth an attribute.
QUANTIFIER_WORDS = frozenset(
    {"many", "several", "some", "few", "various", "numerous", "multiple", "other", "another", "each",
     "every", "more", "most", "much", "lots", "one", "1", "all", "both", "any", "no", "such"}
)  # fmt: skip

#: Position words before a noun that name a part, not a property: "front legs", "left shoe".
POSITION_MODIFIERS = frozenset(
    {"front", "back", "left", "right", "rear", "top", "bottom", "side", "upper", "lower"}
)

#: Verb lemmas written two ways in captions, mapped to one relation name ("lying on" = "laying on").
VERB_LEMMA_ALIASES = {"lie": "lay"}

#: Containers before "of", with where their content is: "a plate of food" -> food on plate.
CONTAINER_NOUNS = {
    "plate": "on", "tray": "on", "platter": "on", "dish": "on", "glass": "in", "cup": "in", "bowl": "in",
    "basket": "in", "box": "in", "bottle": "in", "jar": "in", "bag": "in", "mug": "in", "pot": "in",
    "bucket": "in", "vase": "in", "carton": "in", "pan": "in", "container": "in", "crate": "in",
}  # fmt: skip

#: Body parts: "holding a cup in his hand" says where the cup is (cup in hand).
BODY_PART_NOUNS = frozenset(
    {
        "hand", "mouth", "head", "arm", "lap", "finger", "paw", "tooth", "trunk", "shoulder", "foot",
        "leg", "neck", "ear", "face", "lip", "wrist", "hip", "knee", "beak", "claw", "fist", "palm",
    }
)  # fmt: skip

#: Prepositions written several ways, named by the common one.
PREPOSITION_ALIASES = {"beneath": "under", "underneath": "under"}

#: Colour words, so that a shade before one merges with it: "dark green", "light blue".
COLOUR_WORDS = frozenset(
    {
        "white", "black", "blue", "green", "red", "brown", "grey", "gray", "silver", "orange", "yellow",
        "pink", "purple", "tan", "beige", "gold", "golden", "maroon", "navy", "teal", "turquoise",
        "violet", "cream", "colored", "coloured",
    }
)  # fmt: skip
SHADE_WORDS = frozenset({"dark", "light", "bright", "pale", "deep", "neon", "lighter", "darker"})

#: Garments and worn accessories: "a girl in a pink shirt" / "a man with a hat" -> wear.
CLOTHING_NOUNS = frozenset(
    {
        "shirt", "t-shirt", "tshirt", "jacket", "coat", "hat", "cap", "helmet", "dress", "skirt",
        "pant", "pants", "jean", "jeans", "short", "shorts", "suit", "sweater", "hoodie", "uniform",
        "jersey", "vest", "glass", "glasses", "sunglass", "sunglasses", "goggle", "goggles", "scarf",
        "tie", "shoe", "boot", "sneaker", "glove", "wetsuit", "outfit", "costume", "clothes",
        "clothing", "blouse", "apron", "bikini", "swimsuit", "robe", "sweatshirt", "sock", "hood",
        "gown", "trunk", "legging", "overall", "visor", "beanie", "bandana", "headband", "wristband",
        "necklace", "bracelet", "earring", "watch", "backpack", "mask", "tank top", "top", "attire",
        "trousers", "parka", "kimono", "tuxedo", "blazer", "cardigan", "poncho", "sandal", "slipper",
    }
)  # fmt: skip

#: Personal and possessive pronouns resolved to an earlier noun, with the grammatical number that
#: noun must have ("it" and "its" a singular one, "they" a plural one; None: either).
PRONOUN_NUMBER = {
    "it": "Sing", "its": "Sing", "he": "Sing", "him": "Sing", "his": "Sing", "she": "Sing",
    "her": "Sing", "hers": "Sing", "they": "Plur", "them": "Plur", "their": "Plur", "theirs": "Plur",
    "itself": "Sing", "himself": "Sing", "herself": "Sing", "themselves": "Plur",
}  # fmt: skip

#: Relative pronouns: the subject they stand for is the noun the relative clause hangs on.
RELATIVE_PRONOUNS = frozenset({"that", "which", "who", "whom", "whose"})

#: Number words to digits, as numbers are attributes written in digits ("two dogs" -> 2).
_NUMBER_NAMES = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
    "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty",
)  # fmt: skip
NUMBER_WORDS = {word: str(value) for value, word in enumerate(_NUMBER_NAMES)}
