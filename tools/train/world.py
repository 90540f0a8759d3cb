"""The generated "shapes world" used to train and evaluate the tiny LION.

Every scene is a deterministic function of an integer seed: a 64x64 RGB image with
1..4 coloured shapes (circle, square, triangle, cross; five colours) on one of five
backgrounds with mild pixel noise, plus full annotations (class, colour, pixel box,
visible mask, per-patch targets).  Positions and sizes are multiples of 4 px, so every
box coordinate is k/16 and prints with 3 decimals exactly ("0.062", "0.188", ...).

Task samples follow LION's prompt formats (image level: captions, VQA on colour, shape,
count and relations; region level: referring expression -> box "[x0,y0,x1,y1]" and
"what is at [box]" -> object; tags for RAM).  Python + numpy + PIL only, no torch.
"""
import random

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 64          # native size of generated images (== vision.image_size)
GRID = 4                 # positions / sizes are multiples of this (px)
SUPERSAMPLE = 4          # shapes are drawn at 4x and box-filtered down (antialiasing)

SHAPES = ["circle", "square", "triangle", "cross"]
SHAPE_PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "cross": "crosses"}
COLOURS = ["red", "green", "blue", "yellow", "purple"]
COLOUR_RGB = {
    "red": (215, 40, 40),
    "green": (40, 165, 60),
    "blue": (45, 85, 225),
    "yellow": (235, 200, 30),
    "purple": (150, 60, 190),
}
BACKGROUNDS = [(238, 238, 238), (190, 190, 190), (230, 220, 195), (205, 225, 238), (55, 55, 60)]
# RAM's tag list of the tiny model: the shape and colour words (RAM's order = this order)
TAGS = SHAPES + COLOURS
NUMBER_WORDS = ["zero", "one", "two", "three", "four"]
MAX_OBJECTS = 4

TAG_PROMPT = "According to <extra_id_0>, you are allowed to use or partially use the following tags: [{}]. "

# task name -> task type ("image" -> adapter idx 1, "region" -> adapter idx 0)
TASKS = {
    "caption": "image",
    "vqa_colour": "image",
    "vqa_shape": "image",
    "count": "image",
    "relation": "image",
    "rec": "region",
    "region_caption": "region",
}
TASK_IDX = {"region": 0, "image": 1}


def fmt_coord(v):
    return "%.3f" % v


def fmt_box(box, size=IMAGE_SIZE):
    """Pixel box (x0,y0,x1,y1), x1/y1 exclusive edges -> LION's "[0.125,0.250,0.500,0.625]"."""
    return "[" + ",".join(fmt_coord(c / size) for c in box) + "]"


def parse_box(text):
    """First "[a,b,c,d]" in text -> 4 floats, or None."""
    import re
    m = re.search(r"\[\s*([-0-9.]+)\s*,\s*([-0-9.]+)\s*,\s*([-0-9.]+)\s*,\s*([-0-9.]+)\s*\]", text)
    if not m:
        return None
    try:
        return [float(m.group(i)) for i in range(1, 5)]
    except ValueError:
        return None


def iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    ua = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / ua if ua > 0 else 0.0


def _draw_shape(draw, shape, box, fill, ss):
    x0, y0, x1, y1 = [c * ss for c in box]
    x1 -= 1
    y1 -= 1
    if shape == "circle":
        draw.ellipse([x0, y0, x1, y1], fill=fill)
    elif shape == "square":
        draw.rectangle([x0, y0, x1, y1], fill=fill)
    elif shape == "triangle":
        draw.polygon([(x0, y1), (x1, y1), ((x0 + x1) / 2.0, y0)], fill=fill)
    elif shape == "cross":
        w = (x1 - x0 + 1) / 3.0
        draw.rectangle([x0 + w, y0, x1 - w, y1], fill=fill)
        draw.rectangle([x0, y0 + w, x1, y1 - w], fill=fill)
    else:
        raise ValueError(shape)


def _shape_mask(shape, box, size=IMAGE_SIZE, ss=SUPERSAMPLE):
    """Float coverage [0,1] of the shape at native resolution."""
    m = Image.new("L", (size * ss, size * ss), 0)
    _draw_shape(ImageDraw.Draw(m), shape, box, 255, ss)
    m = m.resize((size, size), Image.BOX)
    return np.asarray(m, dtype=np.float32) / 255.0


class Scene:
    def __init__(self, seed, image, objects, background):
        self.seed = seed
        self.image = image            # PIL RGB, IMAGE_SIZE x IMAGE_SIZE
        self.objects = objects        # list of dict(shape, colour, box, mask(visible, float), area)
        self.background = background

    @property
    def tags(self):
        present = set()
        for o in self.objects:
            present.add(o["shape"])
            present.add(o["colour"])
        return [t for t in TAGS if t in present]

    def annotations(self):
        return {
            "seed": self.seed,
            "size": [IMAGE_SIZE, IMAGE_SIZE],
            "background": list(self.background),
            "objects": [{"shape": o["shape"], "colour": o["colour"], "box": list(o["box"]),
                         "box_norm": fmt_box(o["box"]), "visible": round(o["visible"], 3)}
                        for o in self.objects],
            "tags": self.tags,
        }

    def patch_targets(self, patch):
        """Dense per-patch targets for stage 0.

        Returns dict of numpy arrays over the (n x n) patch grid, row-major:
          owner  (n*n,) int   index of the object covering most of the patch (>= 25 %), else -1
          colour (n*n,) int   colour class + 1 of owner, 0 = background
          shape  (n*n,) int   shape class + 1 of owner, 0 = background
          box    (n*n,4) f32  normalized box of owner (0 for background)
          cover  (K, n*n) f32 fraction of each patch covered by object k (visible part)
        """
        n = IMAGE_SIZE // patch
        K = len(self.objects)
        cover = np.zeros((K, n * n), np.float32)
        for k, o in enumerate(self.objects):
            cover[k] = o["mask"].reshape(n, patch, n, patch).mean(axis=(1, 3)).reshape(-1)
        owner = np.full(n * n, -1, np.int64)
        if K:
            best = cover.argmax(0)
            ok = cover.max(0) >= 0.25
            owner[ok] = best[ok]
        colour = np.zeros(n * n, np.int64)
        shape = np.zeros(n * n, np.int64)
        box = np.zeros((n * n, 4), np.float32)
        for i in range(n * n):
            if owner[i] >= 0:
                o = self.objects[owner[i]]
                colour[i] = COLOURS.index(o["colour"]) + 1
                shape[i] = SHAPES.index(o["shape"]) + 1
                box[i] = np.array(o["box"], np.float32) / IMAGE_SIZE
        return {"owner": owner, "colour": colour, "shape": shape, "box": box, "cover": cover}


def make_scene(seed, max_objects=MAX_OBJECTS, min_objects=1):
    """Deterministic scene from an integer seed."""
    rng = random.Random(seed * 7919 + 17)
    n_obj = rng.randint(min_objects, max_objects)
    bg = BACKGROUNDS[rng.randrange(len(BACKGROUNDS))]
    sizes = {1: [20, 24, 28, 32], 2: [16, 20, 24, 28], 3: [16, 20, 24], 4: [16, 20, 24]}[n_obj]
    for _attempt in range(200):
        objs = []
        used = set()
        ok = True
        for _ in range(n_obj):
            placed = False
            for _try in range(60):
                shape = rng.choice(SHAPES)
                colour = rng.choice(COLOURS)
                if (shape, colour) in used:
                    continue
                s = rng.choice(sizes)
                x = rng.randrange(0, IMAGE_SIZE - s + 1, GRID)
                y = rng.randrange(0, IMAGE_SIZE - s + 1, GRID)
                box = (x, y, x + s, y + s)
                if any(iou(box, o["box"]) > 0.2 for o in objs):
                    continue
                objs.append({"shape": shape, "colour": colour, "box": box})
                used.add((shape, colour))
                placed = True
                break
            if not placed:
                ok = False
                break
        if not ok:
            continue
        # visibility: later objects are painted over earlier ones
        masks = [_shape_mask(o["shape"], o["box"]) for o in objs]
        vis_ok = True
        for i, o in enumerate(objs):
            m = masks[i].copy()
            for j in range(i + 1, len(objs)):
                m = m * (1.0 - masks[j])
            full = masks[i].sum()
            o["visible"] = float(m.sum() / max(full, 1e-6))
            o["mask"] = m
            o["area"] = float(m.sum())
            if o["visible"] < 0.75:
                vis_ok = False
        if vis_ok:
            break
    else:  # pragma: no cover - practically unreachable
        raise RuntimeError("could not place objects for seed %d" % seed)

    # render: background + noise, then shapes in order (antialiased through supersampling)
    nrng = np.random.RandomState(seed % (2 ** 31 - 1))
    img = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), np.float32)
    img[:] = np.array(bg, np.float32)
    for o, m in zip(objs, masks):
        jitter = np.array([rng.randint(-15, 15) for _ in range(3)], np.float32)
        rgb = np.clip(np.array(COLOUR_RGB[o["colour"]], np.float32) + jitter, 0, 255)
        img = img * (1.0 - m[..., None]) + rgb * m[..., None]
    img += nrng.uniform(-6, 6, size=img.shape).astype(np.float32)
    img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    image = Image.fromarray(img, "RGB")
    return Scene(seed, image, objs, bg)


# ---------------------------------------------------------------------------------------
# task samples (LION prompt formats)

def describe(o):
    return "%s %s" % (o["colour"], o["shape"])


def caption_text(scene):
    objs = sorted(scene.objects, key=lambda o: (o["box"][0] + o["box"][2], o["box"][1] + o["box"][3]))
    parts = ["a " + describe(o) for o in objs]
    if len(parts) == 1:
        s = parts[0]
    else:
        s = ", ".join(parts[:-1]) + " and " + parts[-1]
    return s


def centre(o):
    b = o["box"]
    return ((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0)


def task_samples(scene, rng, tasks=None):
    """All applicable samples of the scene, as dicts, one per task (random choice inside a task).

    dict: task, type ("image"/"region"), question (without the tag prompt), answer,
    objects (indices of the objects the answer is about; an auxiliary training target).
    """
    objs = scene.objects
    out = []
    want = set(tasks) if tasks else set(TASKS)

    def add(task, q, a, targets):
        if task in want:
            out.append({"task": task, "type": TASKS[task], "question": q, "answer": a,
                        "objects": [objs.index(t) for t in targets]})

    # caption
    add("caption", "A short image caption:", caption_text(scene), objs)
    # colour VQA: ask about a shape that is unique in the scene
    shape_counts = {}
    colour_counts = {}
    for o in objs:
        shape_counts[o["shape"]] = shape_counts.get(o["shape"], 0) + 1
        colour_counts[o["colour"]] = colour_counts.get(o["colour"], 0) + 1
    uniq_shape = [o for o in objs if shape_counts[o["shape"]] == 1]
    if uniq_shape:
        o = rng.choice(uniq_shape)
        add("vqa_colour", "Question: What color is the %s? Short answer:" % o["shape"], o["colour"], [o])
    uniq_colour = [o for o in objs if colour_counts[o["colour"]] == 1]
    if uniq_colour:
        o = rng.choice(uniq_colour)
        add("vqa_shape", "Question: What shape is the %s object? Short answer:" % o["colour"], o["shape"], [o])
    # counting
    r = rng.random()
    if r < 0.5:
        add("count", "Question: How many shapes are there? Short answer:", str(len(objs)), objs)
    elif r < 0.75:
        sh = rng.choice(SHAPES)
        add("count", "Question: How many %s are there? Short answer:" % SHAPE_PLURALS[sh],
            str(shape_counts.get(sh, 0)), [o for o in objs if o["shape"] == sh])
    else:
        c = rng.choice(COLOURS)
        add("count", "Question: How many %s shapes are there? Short answer:" % c, str(colour_counts.get(c, 0)),
            [o for o in objs if o["colour"] == c])
    # relations between two objects with a clear separation
    if len(objs) >= 2:
        pairs = [(a, b) for a in objs for b in objs if a is not b]
        rng.shuffle(pairs)
        for a, b in pairs:
            (ax, ay), (bx, by) = centre(a), centre(b)
            if rng.random() < 0.5 and abs(ax - bx) >= 8:
                add("relation", "Question: Is the %s left or right of the %s? Short answer:" % (describe(a), describe(b)),
                    "left" if ax < bx else "right", [a, b])
                break
            if abs(ay - by) >= 8:
                add("relation", "Question: Is the %s above or below the %s? Short answer:" % (describe(a), describe(b)),
                    "above" if ay < by else "below", [a, b])
                break
    # region level
    o = rng.choice(objs)
    add("rec", "Please provide the bounding box coordinate of the region this sentence describes: the %s." % describe(o),
        fmt_box(o["box"]), [o])
    o = rng.choice(objs)
    add("region_caption", "Please provide a short description for this region: %s." % fmt_box(o["box"]), describe(o), [o])
    return out


def full_prompt(question, tags):
    return TAG_PROMPT.format(", ".join(tags)) + question


def perturb_tags(tags, rng, p=0.1):
    """Tags as a slightly imperfect tagger would give them (training robustness)."""
    tags = list(tags)
    if rng.random() < p and len(tags) > 1:
        tags.pop(rng.randrange(len(tags)))
    if rng.random() < p:
        extra = [t for t in TAGS if t not in tags]
        if extra:
            tags.append(rng.choice(extra))
            tags = [t for t in TAGS if t in tags]
    return tags


def corpus_lines(n_scenes=3000, seed=12345):
    """Text of the world (prompts and answers), for training the tokenizers."""
    rng = random.Random(seed)
    lines = []
    for i in range(n_scenes):
        sc = make_scene(seed * 1000003 + i)
        for s in task_samples(sc, rng):
            lines.append(full_prompt(s["question"], sc.tags))
            lines.append(s["answer"])
    # make sure every coordinate / word appears
    for k in range(IMAGE_SIZE // GRID + 1):
        lines.append(fmt_coord(k * GRID / IMAGE_SIZE))
    for w in TAGS + list(SHAPE_PLURALS.values()) + NUMBER_WORDS + ["left", "right", "above", "below"]:
        lines.append(w)
    return lines


if __name__ == "__main__":
    import json
    import sys
    seed = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    sc = make_scene(seed)
    print(json.dumps(sc.annotations(), indent=1))
    for s in task_samples(sc, random.Random(seed)):
        print(s)
    if len(sys.argv) > 2:
        sc.image.resize((256, 256), Image.NEAREST).save(sys.argv[2])


# ---------------------------------------------------------------- scoring (evaluate.py, eval_c_pipeline.py)

def norm(s):
    s = s.strip().lower()
    while s.endswith("."):
        s = s[:-1].rstrip()
    return s


def score(task, expected, answer):
    """Held-out scoring: IoU >= 0.5 for boxes (REC), normalised exact match otherwise."""
    if task == "rec":
        pb, gb = parse_box(answer), parse_box(expected)
        return bool(pb is not None and iou(pb, gb) >= 0.5)
    return norm(answer) == norm(expected)
