"""Text about scenes: captions, short-answer questions, descriptions, conversations, preceding passages, text-only.

Every answer about an image is computed by the generator from the object it picked; ``answer_from_scene``
re-derives it independently from the scene and the question spec (a dict), so tests can check one against the
other. Question specs are JSON-serialisable dicts:

    {"kind": "colour" | "shape" | "size", "ref": REF}      REF = a subset of {"shape","colour","size","position"}
    {"kind": "position", "ref": REF}                          answer: a position name ("top left", "centre", ...)
    {"kind": "count", "filter": {} | {"colour": c} | {"shape": s}}   answer: a number word ("zero".."nine")
    {"kind": "exist", "filter": {"colour": c, "shape": s}}    answer: "yes" / "no"
    {"kind": "relation", "axis": "horizontal" | "vertical", "a": REF, "b": REF}
                                                              answer: "left"/"right" or "above"/"below" (a vs b)

Words fall into two classes that the study needs apart: ``ATTRIBUTE_WORDS`` (need the image) and everything else
(template words and repeated structure, predictable from the text alone).
"""

from __future__ import annotations

import random
import re

from vista.world.scenes import COLOURS, GRID, MAX_OBJECTS, POSITIONS, SHAPES, SIZES, Scene, SceneObject

NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SHORT_ANSWER_PROMPT = "Answer the question using a single word or phrase."
DESCRIBE_PROMPTS = (
    "Describe the image in detail.",
    "Give a detailed description of the picture.",
    "What do you see in this image? Describe every object.",
)
CAPTION_PROMPTS = (
    "Give a brief description of the image.",
    "Write a short caption for the picture.",
    "Summarize the image in a few words.",
)
ATTRIBUTE_WORDS: frozenset[str] = frozenset(
    [
        *COLOURS,
        *SHAPES,
        *(s + "s" for s in SHAPES),
        "crosses",
        *SIZES,
        *NUMBERS,
        "yes",
        "no",
        "above",
        "below",
    ]
    + [w for p in POSITIONS.values() for w in p.split()]
)
_TOKEN_RE = re.compile(r"\w+|[^\w\s]")


def count_words(text: str) -> int:
    """Words plus punctuation marks: a tokenizer-free length close to a word-level tokenizer's count."""
    return len(_TOKEN_RE.findall(text))


def position_phrase(position: str) -> str:
    """'at the top left', 'in the centre', 'on the left', 'at the bottom'."""
    if position == "centre":
        return "in the centre"
    if position in ("left", "right"):
        return f"on the {position}"
    return f"at the {position}"


def plural(shape: str) -> str:
    return shape + ("es" if shape.endswith("s") else "s")


# ---- the checker ------------------------------------------------------------------------------------------------
def matches(obj: SceneObject, ref: dict) -> bool:
    return all(getattr(obj, key) == value for key, value in ref.items())


def resolve(scene: Scene, ref: dict) -> SceneObject:
    """The single object matching ``ref``; ValueError if none or several (an ambiguous question)."""
    found = [o for o in scene.objects if matches(o, ref)]
    if len(found) != 1:
        raise ValueError(f"reference {ref} matches {len(found)} objects in scene {scene.to_dict()}")
    return found[0]


def answer_from_scene(scene: Scene, spec: dict) -> str:
    """Re-derive the answer of question ``spec`` (see the module docstring) from the scene alone."""
    kind = spec["kind"]
    if kind in ("colour", "shape", "size", "position"):
        return getattr(resolve(scene, spec["ref"]), kind)
    if kind == "count":
        return NUMBERS[sum(matches(o, spec["filter"]) for o in scene.objects)]
    if kind == "exist":
        return "yes" if any(matches(o, spec["filter"]) for o in scene.objects) else "no"
    if kind == "relation":
        a, b = resolve(scene, spec["a"]), resolve(scene, spec["b"])
        if spec["axis"] == "horizontal":
            if a.col == b.col:
                raise ValueError(f"relation {spec}: both objects are in column {a.col}")
            return "left" if a.col < b.col else "right"
        if a.row == b.row:
            raise ValueError(f"relation {spec}: both objects are in row {a.row}")
        return "above" if a.row < b.row else "below"
    raise ValueError(f"unknown question kind {kind!r} in {spec}")


# ---- referring expressions --------------------------------------------------------------------------------------
def unique_ref(scene: Scene, obj: SceneObject, rng: random.Random, exclude: tuple[str, ...] = ()) -> dict:
    """A shortest attribute description that picks out ``obj`` alone, never using the ``exclude`` attributes.

    Falls back to the position (always unique). Candidates are tried in a random order for variety.
    """
    candidates = [
        ("shape",),
        ("colour",),
        ("colour", "shape"),
        ("size", "shape"),
        ("size", "colour", "shape"),
    ]
    rng.shuffle(candidates)
    candidates.sort(key=len)  # stable: random order within each length
    for keys in candidates:
        if set(keys) & set(exclude):
            continue
        ref = {k: getattr(obj, k) for k in keys}
        if sum(matches(o, ref) for o in scene.objects) == 1:
            return ref
    return {"position": obj.position}


def ref_phrase(ref: dict) -> str:
    """'the red circle', 'the large square', 'the blue object', 'the object at the top left'."""
    if "position" in ref:
        return f"the object {position_phrase(ref['position'])}"
    words = [ref[k] for k in ("size", "colour") if k in ref]
    return "the " + " ".join(words + [ref.get("shape", "object")])


# ---- questions ----------------------------------------------------------------------------------------------------
def question_text(spec: dict) -> str:
    """The natural-language question for ``spec``."""
    kind = spec["kind"]
    if kind == "colour":
        return f"What colour is {ref_phrase(spec['ref'])}?"
    if kind == "shape":
        return f"What shape is {ref_phrase(spec['ref'])}?"
    if kind == "size":
        return f"Is {ref_phrase(spec['ref'])} small or large?"
    if kind == "position":
        return f"Where is {ref_phrase(spec['ref'])}?"
    if kind == "count":
        f = spec["filter"]
        if not f:
            return "How many objects are there?"
        if "colour" in f:
            return f"How many {f['colour']} objects are there?"
        return f"How many {plural(f['shape'])} are there?"
    if kind == "exist":
        f = spec["filter"]
        return f"Is there a {f['colour']} {f['shape']}?"
    if kind == "relation":
        a, b = ref_phrase(spec["a"]), ref_phrase(spec["b"])
        if spec["axis"] == "horizontal":
            return f"Is {a} to the left or to the right of {b}?"
        return f"Is {a} above or below {b}?"
    raise ValueError(f"unknown question kind {kind!r}")


def sentence_answer(spec: dict, answer: str) -> str:
    """A full-sentence answer (multi-turn conversations mix these with single words)."""
    kind = spec["kind"]
    if kind in ("colour", "shape", "size"):
        subject = ref_phrase(spec["ref"])
        subject = subject[0].upper() + subject[1:]
        return f"{subject} is {'a ' + answer if kind == 'shape' else answer}."
    if kind == "position":
        return f"It is {position_phrase(answer)}."
    if kind == "count":
        return f"There {'is' if answer == 'one' else 'are'} {answer}."
    if kind == "exist":
        return "Yes, there is." if answer == "yes" else "No, there is not."
    if kind == "relation":
        if answer in ("left", "right"):
            return f"It is to the {answer} of {ref_phrase(spec['b'])}."
        return f"It is {answer} {ref_phrase(spec['b'])}."
    raise ValueError(f"unknown question kind {kind!r}")


KINDS = ("colour", "shape", "size", "position", "count", "exist", "relation")


def make_question(scene: Scene, kind: str, rng: random.Random, balanced: bool = True) -> dict | None:
    """A question spec of ``kind`` about ``scene`` with its answer under key ``"answer"``; None if impossible.

    ``balanced`` keeps every answer independent of the question text (uniform over its options): counts ask for
    all objects, existence asks about a present object or a uniformly drawn absent one with probability 1/2 each.
    """
    objs = scene.objects
    if kind in ("colour", "shape", "size", "position"):
        obj = rng.choice(objs)
        exclude = (kind,) if kind != "position" else ("position",)
        ref = unique_ref(scene, obj, rng, exclude=exclude)
        if kind == "position" and "position" in ref:
            return None  # cannot name it without giving the answer away
        return {"kind": kind, "ref": ref, "answer": getattr(obj, kind)}
    if kind == "count":
        if balanced or rng.random() < 0.4:
            return {"kind": "count", "filter": {}, "answer": NUMBERS[len(objs)]}
        key = rng.choice(("colour", "shape"))
        value = rng.choice(sorted(COLOURS) if key == "colour" else SHAPES)
        n = sum(getattr(o, key) == value for o in objs)
        return {"kind": "count", "filter": {key: value}, "answer": NUMBERS[n]}
    if kind == "exist":
        present = sorted({(o.colour, o.shape) for o in objs})
        absent = [(c, s) for c in sorted(COLOURS) for s in SHAPES if (c, s) not in present]
        colour, shape = rng.choice(present) if rng.random() < 0.5 else rng.choice(absent)
        answer = "yes" if (colour, shape) in present else "no"
        return {"kind": "exist", "filter": {"colour": colour, "shape": shape}, "answer": answer}
    if kind == "relation":
        axis = rng.choice(("horizontal", "vertical"))
        key = "col" if axis == "horizontal" else "row"
        pairs = [(a, b) for a in objs for b in objs if getattr(a, key) != getattr(b, key)]
        if not pairs:
            return None
        a, b = rng.choice(pairs)
        ref_a, ref_b = unique_ref(scene, a, rng, ("position",)), unique_ref(scene, b, rng, ("position",))
        if "position" in ref_a or "position" in ref_b:
            return None
        if axis == "horizontal":
            answer = "left" if a.col < b.col else "right"
        else:
            answer = "above" if a.row < b.row else "below"
        return {"kind": "relation", "axis": axis, "a": ref_a, "b": ref_b, "answer": answer}
    raise ValueError(f"unknown question kind {kind!r}; expected one of {KINDS}")


def sample_question(
    scene: Scene, rng: random.Random, kinds: tuple[str, ...] = KINDS, balanced: bool = True
) -> dict:
    """A random possible question of one of ``kinds`` (colour questions are always possible)."""
    for _ in range(20):
        q = make_question(scene, rng.choice(kinds), rng, balanced)
        if q is not None:
            return q
    return make_question(scene, "colour", rng, balanced)


def spec_of(question: dict) -> dict:
    """The question spec without its answer."""
    return {k: v for k, v in question.items() if k != "answer"}


# ---- captions and descriptions --------------------------------------------------------------------------------
def _noun(key: str, value: str, count: int) -> str:
    noun = f"{value} object" if key == "colour" else value
    return noun if count == 1 else (noun + "s" if key == "colour" else plural(value))


def object_phrase(obj: SceneObject) -> str:
    return f"a {obj.size} {obj.colour} {obj.shape}"


def caption(scene: Scene, rng: random.Random) -> str:
    """A short caption listing every object and where it is (pretraining text; 8-40 words)."""
    parts = [f"{object_phrase(o)} {position_phrase(o.position)}" for o in scene.objects]
    if len(parts) == 1:
        return parts[0][0].upper() + parts[0][1:] + "."
    body = ", ".join(parts[:-1]) + " and " + parts[-1]
    lead = rng.choice(("", f"{NUMBERS[len(parts)].capitalize()} objects: "))
    return (lead + body)[0].upper() + (lead + body)[1:] + "."


_OBJECT_SENTENCES = (
    "{Pos} there is {obj}.",
    "There is {obj} {pos}.",
    "{Obj} sits {pos}.",
    "{Pos} we can see {obj}.",
)


def describe(scene: Scene, rng: random.Random, detail: int = 2) -> str:
    """A detailed description: an opening, one sentence per object, then (``detail`` >= 1) a summary of colours
    and shapes and (``detail`` >= 2) pairwise spatial relations. 15 to about 300 words.

    Each object sentence names exactly one full ``size colour shape`` triple and its position; no other sentence
    contains a full triple (the benchmark's parser relies on this).
    """
    n = len(scene.objects)
    out = [
        f"The image shows {NUMBERS[n]} object{'s' if n > 1 else ''} on a dark grey background, "
        f"arranged on a {NUMBERS[GRID]} by {NUMBERS[GRID]} grid."
    ]
    for o in scene.objects:
        template = rng.choice(_OBJECT_SENTENCES)
        pos, obj = position_phrase(o.position), object_phrase(o)
        out.append(
            template.format(Pos=pos[0].upper() + pos[1:], pos=pos, obj=obj, Obj=obj[0].upper() + obj[1:])
        )
    if detail >= 1 and n > 1:
        for key, names in (("colour", sorted(COLOURS)), ("shape", SHAPES)):
            counts = [(v, sum(getattr(o, key) == v for o in scene.objects)) for v in names]
            listed = [f"{NUMBERS[c]} {_noun(key, v, c)}" for v, c in counts if c]
            joined = ", ".join(listed[:-1]) + " and " + listed[-1] if len(listed) > 1 else listed[0]
            out.append(f"By {key}: {joined}.")
    if detail >= 2 and n > 1:
        for i, a in enumerate(scene.objects):
            for b in scene.objects[i + 1 :]:
                ra, rb = unique_ref(scene, a, rng, ("position",)), unique_ref(scene, b, rng, ("position",))
                if any("position" in r or len(r) == 3 for r in (ra, rb)):
                    continue  # no full triple outside the object sentences
                pa, pb = ref_phrase(ra), ref_phrase(rb)
                pa = pa[0].upper() + pa[1:]
                if a.row != b.row:
                    out.append(f"{pa} is {'above' if a.row < b.row else 'below'} {pb}.")
                else:
                    out.append(f"{pa} is to the {'left' if a.col < b.col else 'right'} of {pb}.")
    return " ".join(out)


# ---- image-independent passages (long preceding text, text-only samples) ---------------------------------------
_FACTS = (
    "A triangle has three corners.",
    "A square has four corners and four equal sides.",
    "A circle has no corners.",
    "A cross is made of two bars.",
    "Objects in these pictures never overlap.",
    f"Each picture has between one and {NUMBERS[MAX_OBJECTS]} objects.",
    f"The grid has {NUMBERS[GRID]} rows and {NUMBERS[GRID]} columns.",
    "Every object has a colour, a shape and a size.",
    "A large object is about twice as wide as a small object.",
    "The background of every picture is dark grey.",
    "There are six colours: red, green, blue, yellow, purple and white.",
    "There are four shapes: circle, square, triangle and cross.",
    "Two objects can have the same colour.",
    "Two objects can have the same shape.",
    "The top row is above the bottom row.",
    "The left column is to the left of the right column.",
)


def passage(rng: random.Random, n_words: int) -> str:
    """About ``n_words`` words (at least ``n_words``) of text that says nothing about any particular image."""
    out: list[str] = []
    while sum(count_words(s) for s in out) < n_words:
        out.append(rng.choice(_FACTS))
    return " ".join(out)


def with_preceding(question: str, preceding: str) -> str:
    return f"{preceding}\n{question}" if preceding else question


def text_only_conversation(rng: random.Random, scene: Scene) -> list[dict]:
    """A conversation answerable from the text alone: the scene is given in words (reading comprehension)
    or the question is about the world's rules."""
    if rng.random() < 0.3:
        fact_qa = (
            ("How many corners does a triangle have?", "three"),
            ("How many corners does a square have?", "four"),
            ("How many corners does a circle have?", "zero"),
            ("How many rows does the grid have?", NUMBERS[GRID]),
            ("What is the most objects a picture can have?", NUMBERS[MAX_OBJECTS]),
            ("What colour is the background?", "dark grey"),
        )
        q, a = rng.choice(fact_qa)
        return [{"from": "human", "value": f"{q}\n{SHORT_ANSWER_PROMPT}"}, {"from": "gpt", "value": a}]
    q = sample_question(scene, rng)
    text = f"Here is a description of a picture: {caption(scene, rng)}\n{question_text(q)}\n{SHORT_ANSWER_PROMPT}"
    return [{"from": "human", "value": text}, {"from": "gpt", "value": q["answer"]}]


def to_words(text: str) -> list[str]:
    return _TOKEN_RE.findall(text.lower())


GRID_SIZE = GRID  # re-exported for callers that only import text
