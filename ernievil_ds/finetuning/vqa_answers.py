"""VQA answer normalisation and accuracy, as the standard VQA evaluation (``vqaEval.py`` of the VQA API)
computes them: punctuation, number words, articles and contractions are normalised, and an answer is
worth min(1, humans who gave it / 3), averaged over the ten leave-one-out subsets of the human answers.
"""

from __future__ import annotations

import re

#: The evaluation's table of contractions written without their apostrophes.
CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's",
    "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll",
    "let's": "let's", "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're",
    "theres": "there's", "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't",
    "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll",
    "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}  # fmt: skip
NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
ARTICLES = frozenset({"a", "an", "the"})
PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")  # fmt: skip
#: A comma between digits ("1,000") makes every punctuation mark vanish instead of becoming a space.
_DIGIT_COMMA = re.compile(r"(\d)(,)(\d)")
#: The evaluation's period pattern, ``(?!<=\d)(\.)(?!\d)``, opens with a lookahead (not a lookbehind) that
#: always holds: it removes every period that no digit follows, "2." included.
_PERIOD = re.compile(r"\.(?!\d)")
HUMAN_ANSWERS_PER_QUESTION = 10
HUMANS_FOR_FULL_CREDIT = 3


def process_punctuation(text: str) -> str:
    """The evaluation's ``processPunctuation``: a mark next to a space (or any mark, when a digit comma
    is present) is removed, any other mark becomes a space; periods not followed by a digit are removed."""
    glued = _DIGIT_COMMA.search(text) is not None
    out = text
    for mark in PUNCTUATION:
        if glued or f"{mark} " in text or f" {mark}" in text:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD.sub("", out)


def process_digit_article(text: str) -> str:
    """The evaluation's ``processDigitArticle``: lower case, number words to digits, articles dropped,
    contractions given their apostrophes, words joined by single spaces."""
    words = [NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    return " ".join(CONTRACTIONS.get(word, word) for word in words if word not in ARTICLES)


def normalize_vqa_answer(answer: str) -> str:
    """An answer as the evaluation compares it: newlines and tabs to spaces, stripped, then
    ``process_punctuation`` and ``process_digit_article``."""
    answer = answer.replace("\n", " ").replace("\t", " ").strip()
    return process_digit_article(process_punctuation(answer))


def vqa_answer_accuracy(answer: str, human_answers: list[str]) -> float:
    """The VQA accuracy of ``answer`` against the human answers (ten in VQA v2): for each human left
    out, min(1, matches among the others / 3), averaged.

    Both sides are normalised. (The evaluation script normalises only when the humans disagree; a
    classifier's answers come from a normalised vocabulary, where the two agree.)
    """
    if not human_answers:
        raise ValueError("a VQA question needs at least one human answer")
    answer = normalize_vqa_answer(answer)
    humans = [normalize_vqa_answer(human) for human in human_answers]
    matches = sum(human == answer for human in humans)
    per_left_out = [min(1.0, (matches - (human == answer)) / HUMANS_FOR_FULL_CREDIT) for human in humans]
    return sum(per_left_out) / len(per_left_out)


__all__ = [
    "normalize_vqa_answer",
    "process_digit_article",
    "process_punctuation",
    "vqa_answer_accuracy",
]
