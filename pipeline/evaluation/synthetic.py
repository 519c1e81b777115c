"""LongEmbed-style passkey and needle retrieval tasks: real haystack text with one planted sentence per document.

Each target length gets its own BEIR folder `<out>/<task>-<length>` (corpus.jsonl, queries.jsonl, qrels/test.tsv,
meta.json). Every document holds one planted sentence at a relative depth, and one query asks for exactly that
sentence's answer, so each query has exactly one relevant document. Output is a pure function of the arguments.

    python -m pipeline.evaluation.synthetic --haystack ../shared/data/cisi --out runs/synth --task passkey \
        --lengths 256,512,1024,2048 --depths 0,0.25,0.5,0.75,1 --per-cell 4 --seed 0
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineValueError
from pipeline.ingest.load import FieldNames, load_documents

TASKS = ("passkey", "needle")
SENTENCE_ENDS = (".", "!", "?")

FIRST_NAMES = (
    "Ada",
    "Bruno",
    "Carmen",
    "Dmitri",
    "Elena",
    "Farid",
    "Greta",
    "Hiroshi",
    "Ingrid",
    "Jonas",
    "Kavya",
    "Lars",
    "Mateo",
    "Nadia",
    "Oskar",
    "Priya",
    "Quentin",
    "Rosa",
    "Samir",
    "Tamsin",
    "Ulrich",
    "Vera",
    "Wen",
    "Ximena",
    "Yusuf",
    "Zofia",
    "Amara",
    "Bastian",
    "Chiara",
    "Declan",
)
SURNAMES = (
    "Lindqvist",
    "Okafor",
    "Moreau",
    "Tanaka",
    "Kowalski",
    "Haddad",
    "Fischer",
    "Castillo",
    "Novak",
    "Brennan",
    "Sato",
    "Ivanova",
    "Mensah",
    "Rossi",
    "Andersen",
    "Petrov",
    "Nakamura",
    "Silva",
    "Duarte",
    "Keller",
    "Varga",
    "Quinn",
    "Osei",
    "Larsen",
    "Romero",
    "Yilmaz",
    "Berg",
    "Costa",
    "Dubois",
    "Ferreira",
)
FILLERS = {
    "city": (
        "Lisbon",
        "Osaka",
        "Nairobi",
        "Quebec",
        "Tromso",
        "Valparaiso",
        "Krakow",
        "Hobart",
        "Marrakesh",
        "Bergen",
        "Cusco",
        "Tbilisi",
        "Galway",
        "Hanoi",
        "Ljubljana",
        "Porto",
        "Reykjavik",
        "Seville",
        "Tallinn",
        "Zanzibar",
        "Bruges",
        "Cordoba",
        "Dunedin",
        "Granada",
        "Kyoto",
        "Lucerne",
        "Mombasa",
        "Salzburg",
        "Trieste",
        "Ushuaia",
    ),
    "activity": (
        "eat a sandwich and sit in the park on a sunny day",
        "ride the old funicular at dusk",
        "swim in the cold harbour before breakfast",
        "listen to the street musicians by the fish market",
        "climb the hill behind the cathedral at sunrise",
        "rent a rowing boat on the quiet lake",
        "browse the secondhand bookshops near the station",
        "watch the ferries from the sea wall",
    ),
    "colour": ("turquoise", "vermilion", "ochre", "lavender", "crimson", "olive green", "saffron", "indigo"),
    "food": (
        "smoked paprika",
        "roasted chestnuts",
        "pickled lemon",
        "wild fennel",
        "black garlic",
        "candied ginger",
        "toasted sesame",
        "sour cherries",
    ),
    "animal": ("tortoise", "ferret", "heron", "hedgehog", "axolotl", "lynx", "pelican", "salamander"),
    "instrument": ("cello", "bagpipes", "harmonium", "banjo", "oboe", "marimba", "zither", "trombone"),
    "object": (
        "brass compasses",
        "antique keys",
        "glass floats",
        "tin soldiers",
        "pocket watches",
        "old maps",
        "porcelain thimbles",
        "wooden spoons",
    ),
    "drink": ("cardamom coffee", "nettle tea", "cold hibiscus tea", "spiced cider", "barley water", "mint lemonade"),
    "sport": ("water polo", "curling", "fencing", "hurling", "lacrosse", "bouldering", "handball", "rowing"),
    "flower": ("sunflowers", "marigolds", "peonies", "foxgloves", "lilacs", "camellias", "tulips", "poppies"),
    "metal": ("bronze", "copper", "pewter", "cast iron", "brass", "silver"),
    "language": ("Basque", "Welsh", "Icelandic", "Swahili", "Catalan", "Estonian", "Maltese", "Tagalog"),
    "weekday": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    "month": ("January", "March", "May", "July", "September", "November", "February", "October"),
    "gem": ("sapphire", "garnet", "emerald", "topaz", "amethyst", "opal", "ruby", "jade"),
}


@dataclass(frozen=True)
class Template:
    """A fact sentence and the question it answers; `subject` tells documents apart, `answer` is what is asked."""

    fact: str
    question: str
    subject: str
    answer: str


NEEDLES = (
    Template(
        "The best thing to do in {city} is {activity}.", "What is the best thing to do in {city}?", "city", "activity"
    ),
    Template("{person}'s favourite colour is {colour}.", "What is {person}'s favourite colour?", "person", "colour"),
    Template(
        "The secret ingredient in {person}'s soup is {food}.",
        "What is the secret ingredient in {person}'s soup?",
        "person",
        "food",
    ),
    Template(
        "{person} keeps a pet {animal} in the garden shed.",
        "What pet does {person} keep in the garden shed?",
        "person",
        "animal",
    ),
    Template(
        "The oldest bakery in {city} is famous for its {food}.",
        "What is the oldest bakery in {city} famous for?",
        "city",
        "food",
    ),
    Template(
        "{person} learned to play the {instrument} at the age of nine.",
        "Which instrument did {person} learn to play at the age of nine?",
        "person",
        "instrument",
    ),
    Template(
        "The lighthouse keeper of {city} collects {object}.",
        "What does the lighthouse keeper of {city} collect?",
        "city",
        "object",
    ),
    Template(
        "{person} always drinks {drink} before a long journey.",
        "What does {person} always drink before a long journey?",
        "person",
        "drink",
    ),
    Template(
        "The town hall of {city} is painted {colour}.",
        "What colour is the town hall of {city} painted?",
        "city",
        "colour",
    ),
    Template("{person}'s lucky number is {number}.", "What is {person}'s lucky number?", "person", "number"),
    Template(
        "The annual festival in {city} celebrates the {animal}.",
        "Which animal does the annual festival in {city} celebrate?",
        "city",
        "animal",
    ),
    Template(
        "{person} hid the spare key among the {object}.", "Where did {person} hide the spare key?", "person", "object"
    ),
    Template(
        "The most popular sport in {city} is {sport}.", "What is the most popular sport in {city}?", "city", "sport"
    ),
    Template("{person} grows {flower} on the balcony.", "What does {person} grow on the balcony?", "person", "flower"),
    Template(
        "The statue in the main square of {city} is made of {metal}.",
        "What is the statue in the main square of {city} made of?",
        "city",
        "metal",
    ),
    Template(
        "{person} speaks {language} with the neighbours.",
        "Which language does {person} speak with the neighbours?",
        "person",
        "language",
    ),
    Template("{person}'s grandmother was born in {city}.", "Where was {person}'s grandmother born?", "person", "city"),
    Template(
        "{person} once won a prize for a sculpture of a {animal}.",
        "What was {person}'s prize-winning sculpture of?",
        "person",
        "animal",
    ),
    Template(
        "The museum in {city} displays a giant collection of {object}.",
        "What does the museum in {city} display a giant collection of?",
        "city",
        "object",
    ),
    Template(
        "{person} always orders {food} at the harbour cafe.",
        "What does {person} always order at the harbour cafe?",
        "person",
        "food",
    ),
    Template(
        "The school choir of {city} sings every {weekday}.",
        "On which day does the school choir of {city} sing?",
        "city",
        "weekday",
    ),
    Template("{person} was born in the month of {month}.", "In which month was {person} born?", "person", "month"),
    Template(
        "The mayor of {city} wears a ring set with a {gem}.",
        "What stone is set in the ring the mayor of {city} wears?",
        "city",
        "gem",
    ),
    Template(
        "{person} painted the front door {colour} last spring.",
        "What colour did {person} paint the front door last spring?",
        "person",
        "colour",
    ),
    Template(
        "The favourite drink in the cafes of {city} is {drink}.",
        "What is the favourite drink in the cafes of {city}?",
        "city",
        "drink",
    ),
    Template(
        "The old bridge in {city} was built by {person}.", "Who built the old bridge in {city}?", "city", "person"
    ),
    Template(
        "{person}'s bicycle has a basket full of {flower}.",
        "What is in the basket of {person}'s bicycle?",
        "person",
        "flower",
    ),
    Template(
        "The first public library in {city} opened in {year}.",
        "When did the first public library in {city} open?",
        "city",
        "year",
    ),
    Template(
        "The tallest tower in {city} has {number} steps.",
        "How many steps does the tallest tower in {city} have?",
        "city",
        "number",
    ),
    Template(
        "The orchestra of {city} is led by a {instrument} player.",
        "What instrument does the leader of the orchestra of {city} play?",
        "city",
        "instrument",
    ),
    Template(
        "{person} keeps the family recipes in a tin of {metal}.",
        "What is the tin that holds {person}'s family recipes made of?",
        "person",
        "metal",
    ),
    Template(
        "{person} plays {sport} with old friends every summer.",
        "Which sport does {person} play with old friends every summer?",
        "person",
        "sport",
    ),
)
PASSKEY = Template(
    "{person}'s pass key is {number}. Remember it. {number} is the pass key of {person}.",
    "What is {person}'s pass key?",
    "person",
    "number",
)


@dataclass(frozen=True)
class Plant:
    """What goes into one document: the sentence, the query that asks for it, and the answer it holds."""

    sentence: str
    query: str
    answer: str


def count_words(text: str) -> int:
    """Whitespace word count: the default length measure; the real pipeline passes its model tokenizer's counter."""
    return len(text.split())


def make_passkey(
    haystack_texts: Sequence[str],
    out: Path,
    lengths_tokens: Sequence[int],
    depths: Sequence[float],
    n_per_cell: int,
    seed: int,
    count_tokens: Callable[[str], int] = count_words,
) -> dict[int, Path]:
    """Passkey task: each document holds "<Name>'s pass key is <5 digits>" and the query asks for that name's key."""
    return _make("passkey", haystack_texts, out, lengths_tokens, depths, n_per_cell, seed, count_tokens)


def make_needle(
    haystack_texts: Sequence[str],
    out: Path,
    lengths_tokens: Sequence[int],
    depths: Sequence[float],
    n_per_cell: int,
    seed: int,
    count_tokens: Callable[[str], int] = count_words,
) -> dict[int, Path]:
    """Needle task: each document holds one generated fact (from 32 templates) and the query asks about it."""
    return _make("needle", haystack_texts, out, lengths_tokens, depths, n_per_cell, seed, count_tokens)


def _make(
    task: str,
    haystack_texts: Sequence[str],
    out: Path,
    lengths: Sequence[int],
    depths: Sequence[float],
    n_per_cell: int,
    seed: int,
    count_tokens: Callable[[str], int],
) -> dict[int, Path]:
    """One BEIR folder per target length; returns length -> folder."""
    haystack = [text.split() for text in haystack_texts if text.strip()]
    if not haystack:
        raise PipelineValueError("the haystack holds no text")
    if n_per_cell < 1 or not depths or any(not 0 <= d <= 1 for d in depths):
        raise PipelineValueError(f"need per-cell >= 1 and depths in [0, 1], got {n_per_cell} and {list(depths)}")
    cells = [depth for depth in depths for _ in range(n_per_cell)]
    if len(cells) > len(FIRST_NAMES) * len(SURNAMES):
        raise PipelineValueError(
            f"{len(cells)} documents per length is more than the {len(FIRST_NAMES) * len(SURNAMES)} "
            "distinct names available; lower --per-cell or use fewer depths"
        )
    folders = {}
    for length in lengths:
        rng = random.Random(f"{task}-{seed}-{length}")
        plants = _plants(task, rng, len(cells))
        documents = [
            _document(rng, haystack, plant.sentence, length, depth, count_tokens) for plant, depth in zip(plants, cells)
        ]
        folders[length] = _write(Path(out) / f"{task}-{length}", task, seed, length, cells, plants, documents)
    return folders


def _plants(task: str, rng: random.Random, count: int) -> list[Plant]:
    """`count` sentences whose questions are pairwise distinct, so each query has one relevant document."""
    names = rng.sample([f"{first} {last}" for first in FIRST_NAMES for last in SURNAMES], count)
    if task == "passkey":
        keys = rng.sample(range(10_000, 100_000), count)
        return [_fill(PASSKEY, {"person": name, "number": str(key)}) for name, key in zip(names, keys)]
    plants: list[Plant] = []
    seen: set[tuple[object, str]] = set()
    while len(plants) < count:
        template = rng.choice(NEEDLES)
        values = {slot: rng.choice(options) for slot, options in FILLERS.items()}
        values.update(person=rng.choice(names), number=str(rng.randint(100, 9999)), year=str(rng.randint(1600, 1950)))
        if (template, values[template.subject]) in seen:
            continue
        seen.add((template, values[template.subject]))
        plants.append(_fill(template, values))
    return plants


def _fill(template: Template, values: dict[str, str]) -> Plant:
    """The template's sentence, question and answer with these slot values."""
    return Plant(template.fact.format(**values), template.question.format(**values), values[template.answer])


def _document(
    rng: random.Random,
    haystack: list[list[str]],
    sentence: str,
    length: int,
    depth: float,
    count_tokens: Callable[[str], int],
) -> tuple[str, int, float]:
    """(text, tokens, actual depth): haystack words cut to fit `length` tokens with `sentence` planted near `depth`."""
    if count_tokens(sentence) >= length:
        raise PipelineValueError(f"target length {length} is too short for the planted sentence {sentence!r}")
    words: list[str] = []
    index = rng.randrange(len(haystack))
    while count_tokens(" ".join(words)) < length:
        words += haystack[index % len(haystack)]
        index += 1
    low, high = 0, len(words)
    while low < high:
        middle = (low + high + 1) // 2
        if count_tokens(_insert(words[:middle], sentence, depth)[0]) <= length:
            low = middle
        else:
            high = middle - 1
    text, position = _insert(words[:low], sentence, depth)
    return text, count_tokens(text), position / max(low, 1)


def _insert(words: list[str], sentence: str, depth: float) -> tuple[str, int]:
    """Put `sentence` at the sentence boundary (or either end) nearest `depth` of the way through `words`."""
    target = depth * len(words)
    boundaries = [0, len(words)] + [i for i in range(1, len(words)) if words[i - 1].endswith(SENTENCE_ENDS)]
    position = min(boundaries, key=lambda b: (abs(b - target), b))
    return " ".join(words[:position] + [sentence] + words[position:]), position


def _write(
    folder: Path,
    task: str,
    seed: int,
    length: int,
    depths: list[float],
    plants: list[Plant],
    documents: list[tuple[str, int, float]],
) -> Path:
    """corpus.jsonl, queries.jsonl, qrels/test.tsv and meta.json (doc id -> target length, depth, answer)."""
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {"task": task, "seed": seed, "target_tokens": length, "documents": {}}
    with (
        (folder / "corpus.jsonl").open("w", encoding="utf-8") as corpus,
        (folder / "queries.jsonl").open("w", encoding="utf-8") as queries,
        (folder / "qrels" / "test.tsv").open("w", encoding="utf-8") as qrels,
    ):
        qrels.write("query-id\tcorpus-id\tscore\n")
        for number, (plant, depth, (text, tokens, actual)) in enumerate(zip(plants, depths, documents)):
            doc_id, query_id = f"doc-{number:04d}", f"q-{number:04d}"
            corpus.write(json.dumps({"_id": doc_id, "title": "", "text": text}, ensure_ascii=False) + "\n")
            queries.write(json.dumps({"_id": query_id, "text": plant.query}, ensure_ascii=False) + "\n")
            qrels.write(f"{query_id}\t{doc_id}\t1\n")
            meta["documents"][doc_id] = {
                "target_tokens": length,
                "tokens": tokens,
                "depth": depth,
                "actual_depth": round(actual, 4),
                "query_id": query_id,
                "answer": plant.answer,
            }
    (folder / "meta.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return folder


def tokenizer_counter(model: str) -> Callable[[str], int]:
    """Token counter of a model's tokenizer (registry name or local folder), without special tokens."""
    from transformers import AutoTokenizer

    from htp.models import resolve_model_source

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_source(model))
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


def main(argv: list[str] | None = None) -> None:
    """Command line: write the task's BEIR folders and print where they went."""
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.evaluation.synthetic",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--haystack",
        type=Path,
        required=True,
        help="documents whose texts become the haystack (any input `htp build` reads)",
    )
    parser.add_argument("--out", type=Path, required=True, help="folder that receives <task>-<length>/ BEIR folders")
    parser.add_argument("--task", choices=TASKS, required=True)
    parser.add_argument("--lengths", default="256,512,1024,2048", help="comma list of target lengths in tokens")
    parser.add_argument("--depths", default="0,0.25,0.5,0.75,1", help="comma list of relative depths in [0, 1]")
    parser.add_argument("--per-cell", type=int, default=4, help="documents per (length, depth) cell")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tokenizer", help="count tokens with this model's tokenizer (default: whitespace words)")
    args = parser.parse_args(argv[1:] if argv and argv[0] == "--" else argv)
    texts = list(load_documents(args.haystack, FieldNames()).dataset["text"])
    count = tokenizer_counter(args.tokenizer) if args.tokenizer else count_words
    make = make_passkey if args.task == "passkey" else make_needle
    folders = make(
        texts,
        args.out,
        [int(x) for x in args.lengths.split(",")],
        [float(x) for x in args.depths.split(",")],
        args.per_cell,
        args.seed,
        count,
    )
    for length, folder in folders.items():
        print(f"synth: {args.task} at {length} tokens -> {folder}")


if __name__ == "__main__":
    main()
