"""Text about scenes: captions, questions with exact answers, descriptions, conversations, distractor notes.

Every answer is a function of the scene alone (``answer_*``), so a checker can re-derive it. Questions about the
image are chosen so that their answers are not predictable from the question text: the object asked about is drawn
uniformly among the scene's objects and its attributes are i.i.d. uniform, and yes/no questions are balanced by
construction (half ask about a present object, half about an absent one). Template words ("There are", "at the")
are predictable from the text; attribute words (:data:`IMAGE_WORDS`) need the image.

Length is controlled by the kind of text: one-word answers, full descriptions (1-5 sentences), multi-turn
conversations, and questions asked after a *distractor note*: descriptions of other scenes of a chosen word
budget, which make the text prior wrong and grow the preceding text without adding information about the image.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from vista.world.scenes import COLOURS, POSITIONS, SHAPES, SIZES, Scene, SceneObject

NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# Words whose value only the image determines (position words split into single words).
IMAGE_WORDS: tuple[str, ...] = tuple(
    sorted(
        set(COLOURS)
        | set(SHAPES)
        | {s + "s" for s in SHAPES}
        | set(SIZES)
        | set(NUMBERS)
        | {w for p in POSITIONS.values() for w in p.split()}
        | {"yes", "no"}
    )
)
DESCRIBE = "Describe the image in detail."
CAPTION_PROMPT = "Give a short caption."
QA = tuple[str, str]  # (question, answer)


# ---- phrases --------------------------------------------------------------------------------------------------
def noun(obj: SceneObject) -> str:
    """``"small red circle"``."""
    return f"{obj.size} {obj.colour} {obj.shape}"


def caption(scene: Scene) -> str:
    """A short caption: ``"A small red circle at the top left and a large blue square at the centre."``."""
    parts = [f"a {noun(o)} at the {o.position}" for o in scene.objects]
    text = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return text[0].upper() + text[1:] + "."


def count_phrase(n: int) -> str:
    return "There is one object." if n == 1 else f"There are {NUMBERS[n]} objects."


def description(scene: Scene) -> str:
    """The detailed description: a count sentence, then one sentence per object in reading order."""
    sentences = [count_phrase(len(scene.objects))]
    sentences += [f"At the {o.position} there is a {noun(o)}." for o in scene.objects]
    return " ".join(sentences)


# ---- answers (functions of the scene only) --------------------------------------------------------------------
def at(scene: Scene, position: str) -> SceneObject | None:
    return next((o for o in scene.objects if o.position == position), None)


def matching(scene: Scene, colour: str | None = None, shape: str | None = None) -> list[SceneObject]:
    return [
        o
        for o in scene.objects
        if (colour is None or o.colour == colour) and (shape is None or o.shape == shape)
    ]


def _unique(scene: Scene, obj: SceneObject, by: str) -> bool:
    """Whether ``obj`` is the only object with its colour ("colour"), shape ("shape") or both ("both")."""
    colour = obj.colour if by in ("colour", "both") else None
    shape = obj.shape if by in ("shape", "both") else None
    return len(matching(scene, colour, shape)) == 1


# ---- questions ------------------------------------------------------------------------------------------------
def q_colour(scene: Scene, rng: random.Random) -> QA:
    obj = rng.choice(scene.objects)
    if rng.random() < 0.5 and _unique(scene, obj, "shape"):
        return f"What colour is the {obj.shape}?", obj.colour
    return f"What colour is the object at the {obj.position}?", obj.colour


def q_shape(scene: Scene, rng: random.Random) -> QA:
    obj = rng.choice(scene.objects)
    if rng.random() < 0.5 and _unique(scene, obj, "colour"):
        return f"What shape is the {obj.colour} object?", obj.shape
    return f"What shape is the object at the {obj.position}?", obj.shape


def q_size(scene: Scene, rng: random.Random) -> QA:
    obj = rng.choice(scene.objects)
    return f"Is the object at the {obj.position} small or large?", obj.size


def q_count(scene: Scene, rng: random.Random) -> QA:
    r = rng.random()
    if r < 0.5:
        return "How many objects are there?", NUMBERS[len(scene.objects)]
    obj = rng.choice(scene.objects)  # ask about a present attribute: answers 1..n, not mostly "zero"
    if r < 0.75:
        return f"How many {obj.shape}s are there?", NUMBERS[len(matching(scene, shape=obj.shape))]
    return f"How many {obj.colour} objects are there?", NUMBERS[len(matching(scene, colour=obj.colour))]


def q_position(scene: Scene, rng: random.Random) -> QA | None:
    unique = [o for o in scene.objects if _unique(scene, o, "both")]
    if not unique:  # e.g. two red circles and nothing else
        return None
    obj = rng.choice(unique)
    return f"Where is the {obj.colour} {obj.shape}?", obj.position


def q_exist(scene: Scene, rng: random.Random) -> QA:
    if rng.random() < 0.5:
        obj = rng.choice(scene.objects)
        return f"Is there a {obj.colour} {obj.shape}?", "yes"
    absent = [(c, s) for c in sorted(COLOURS) for s in SHAPES if not matching(scene, c, s)]
    colour, shape = rng.choice(absent)
    return f"Is there a {colour} {shape}?", "no"


def q_relation(scene: Scene, rng: random.Random) -> QA | None:
    """``Is the A left of the B?`` / ``Is the A above the B?`` about two uniquely named objects (yes/no balanced)."""
    unique = [o for o in scene.objects if _unique(scene, o, "both")]
    pairs = [(a, b) for a in unique for b in unique if a.col < b.col or a.row < b.row]
    if not pairs:
        return None
    a, b = rng.choice(pairs)
    relation = "left of" if a.col < b.col and (a.row >= b.row or rng.random() < 0.5) else "above"
    if rng.random() < 0.5:
        a, b = b, a  # now the true answer is "no"
    return f"Is the {a.colour} {a.shape} {relation} the {b.colour} {b.shape}?", relation_answer(a, b, relation)


def relation_answer(a: SceneObject, b: SceneObject, relation: str) -> str:
    holds = a.col < b.col if relation == "left of" else a.row < b.row
    return "yes" if holds else "no"


QUESTION_KINDS: dict[str, Callable[[Scene, random.Random], QA | None]] = {
    "colour": q_colour,
    "shape": q_shape,
    "size": q_size,
    "count": q_count,
    "position": q_position,
    "exist": q_exist,
    "relation": q_relation,
}


def ask(scene: Scene, rng: random.Random, kind: str | None = None) -> tuple[str, QA]:
    """A question of ``kind`` (uniform over kinds if None; falls back to colour if the kind does not apply)."""
    kind = kind or rng.choice(sorted(QUESTION_KINDS))
    qa = QUESTION_KINDS[kind](scene, rng)
    if qa is None:
        kind, qa = "colour", q_colour(scene, rng)
    return kind, qa


# ---- distractor notes -----------------------------------------------------------------------------------------
def distractor_note(scenes: list[Scene], words: int) -> str:
    """Descriptions of other scenes, cut at a sentence boundary to at most ``words`` words ("" for 0)."""
    if words <= 0:
        return ""
    sentences = ["Notes about other pictures."]
    for i, other in enumerate(scenes):
        sentences.append(f"Picture {NUMBERS[(i % 9) + 1]}:")
        sentences += description(other).split(". ")
    out, used = [], 0
    for s in sentences:
        s = s if s.endswith((".", ":")) else s + "."
        n = len(s.split())
        if used + n > words:
            break
        out.append(s)
        used += n
    if out and out[-1].endswith(":"):
        out.pop()
    return " ".join(out)


def after_note(note: str, question: str) -> str:
    """The user text of a question asked after a distractor note."""
    return f"{note} Now look at this picture. {question}" if note else question
