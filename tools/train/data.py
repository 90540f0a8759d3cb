"""Batches for the tiny LION's training stages, deterministic from (stage, step).

Scenes come from world.py; pixels go through lion_ref's own preprocess (PIL resize to
vision.image_size bicubic / tagger.image_size bilinear, then normalization), exactly as
the serving pipeline does.  Texts are tokenized with lion_ref's tokenizers.
Batches are plain dicts of tensors (picklable, so a separate process can make them).
"""
import random

import numpy as np
import torch

import world
from tinylion import LionModel  # noqa: F401  (puts lion_ref on sys.path)
from lion_ref.lion import preprocess
from lion_ref.tokenizers import BertTokenizer, T5Tokenizer

# seed ranges: training scenes never collide with the held-out evaluation scenes
TRAIN_SEED_BASE = 1_000_000
EVAL_SEED_BASE = 900_000_000

IMAGE_TASK_WEIGHTS = {"caption": 1.0, "vqa_colour": 1.5, "vqa_shape": 2.0, "count": 1.5, "relation": 1.0}
REGION_TASK_WEIGHTS = {"rec": 2.0, "region_caption": 1.0}


def step_seed(stage, step, salt=0):
    return TRAIN_SEED_BASE + (hash_int(stage) % 1000) * 10_000_000 + step * 97 + salt


def hash_int(s):
    h = 2166136261
    for ch in str(s).encode():
        h = ((h ^ ch) * 16777619) & 0xFFFFFFFF
    return h


class Batcher:
    def __init__(self, cfg, spiece_path, vocab_path):
        self.cfg = cfg
        self.t5 = T5Tokenizer(spiece_path)
        self.bert = BertTokenizer(vocab_path, max_length=cfg["aggregator"]["qformer"]["max_text_len"])
        self.hint_id = self.t5.convert_tokens_to_ids("<extra_id_0>")
        v = cfg["vision"]
        self.patch = v["patch_size"]
        n = world.IMAGE_SIZE // self.patch
        ys, xs = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        self.pos = torch.tensor(np.stack([(xs.reshape(-1) + 0.5) / n, (ys.reshape(-1) + 0.5) / n], -1),
                                dtype=torch.float32)

    def pixels(self, images):
        v = self.cfg["vision"]
        return torch.stack([preprocess(im, v["image_size"], v["resize"], v["mean"], v["std"]) for im in images])

    def ram_pixels(self, images):
        t = self.cfg["tagger"]
        return torch.stack([preprocess(im, t["image_size"], t["resize"], t["mean"], t["std"]) for im in images])

    # ---------------------------------------------------------------- stage 0
    def stage0(self, seed, n_img):
        scenes = [world.make_scene(seed * 64 + i) for i in range(n_img)]
        out = self.dense_targets(scenes)
        out["pixels"] = self.pixels([sc.image for sc in scenes])
        return out

    def patch_targets(self, scenes):
        return [sc.patch_targets(self.patch) for sc in scenes]

    def dense_targets(self, scenes, pts=None):
        """Stage-0 targets of the scenes (per patch, per object, count); pts: their
        patch_targets when the caller has them."""
        K = world.MAX_OBJECTS
        cols, shps, boxes, covers, osh, ocol, counts = [], [], [], [], [], [], []
        for sc, t in zip(scenes, pts or self.patch_targets(scenes)):
            cols.append(t["colour"])
            shps.append(t["shape"])
            boxes.append(t["box"])
            cov = np.zeros((K, t["cover"].shape[1]), np.float32)
            cov[:len(sc.objects)] = t["cover"]
            covers.append(cov)
            s = np.full(K, -1, np.int64)
            c = np.full(K, -1, np.int64)
            for k, o in enumerate(sc.objects):
                s[k] = world.SHAPES.index(o["shape"])
                c[k] = world.COLOURS.index(o["colour"])
            osh.append(s)
            ocol.append(c)
            counts.append(len(sc.objects))
        return {
            "colour": torch.tensor(np.stack(cols)), "shape": torch.tensor(np.stack(shps)),
            "box": torch.tensor(np.stack(boxes)), "obj_cover": torch.tensor(np.stack(covers)),
            "obj_shape": torch.tensor(np.stack(osh)), "obj_colour": torch.tensor(np.stack(ocol)),
            "count": torch.tensor(counts), "pos": self.pos,
        }

    # ---------------------------------------------------------------- tagger
    def tags(self, seed, n_img):
        scenes = [world.make_scene(seed * 64 + i) for i in range(n_img)]
        y = torch.zeros(n_img, len(world.TAGS))
        for i, sc in enumerate(scenes):
            for t in sc.tags:
                y[i, world.TAGS.index(t)] = 1.0
        return {"pixels": self.ram_pixels([sc.image for sc in scenes]), "y": y}

    # ---------------------------------------------------------------- tasks
    def tasks(self, seed, n_img, q_per_img, kind, max_objects=world.MAX_OBJECTS, weights=None,
              dense=False):
        """kind: "image" or "region" (one router index per batch).  weights: task
        sampling weights of that kind (default the module's); dense: add the stage-0
        targets of the images ("dense") and the two-object pointer targets."""
        rng = random.Random(seed)
        if weights is None:
            weights = IMAGE_TASK_WEIGHTS if kind == "image" else REGION_TASK_WEIGHTS
        else:
            weights = {t: w for t, w in weights.items() if world.TASKS[t] == kind}
        names = list(weights)
        w = [weights[n] for n in names]
        scenes, samples, img_index = [], [], []
        for i in range(n_img):
            sc = world.make_scene(seed * 64 + i, max_objects=max_objects)
            scenes.append(sc)
            for _ in range(q_per_img):
                for _try in range(10):
                    t = rng.choices(names, w)[0]
                    s = world.task_samples(sc, rng, tasks=[t])
                    if s:
                        break
                s = s[0]
                s["tags"] = world.perturb_tags(sc.tags, rng)
                samples.append(s)
                img_index.append(i)
        batch = self.encode_samples([sc.image for sc in scenes], samples, img_index, kind)
        pts = self.patch_targets(scenes)
        batch.update(self.pointer_targets(scenes, samples, img_index, pts))
        if dense:
            batch["dense"] = self.dense_targets(scenes, pts)
            batch.update(self.pair_targets(scenes, samples, img_index, pts))
        return batch

    def pair_targets(self, scenes, samples, img_index, pts=None):
        """For two-object questions (relations): the patches of the first-named object
        and of the second, separately (the union target does not say which is which),
        and for every patch whether it lies left of / above the second object's centre
        (so the first object's patches carry the answer's comparison)."""
        P = (world.IMAGE_SIZE // self.patch) ** 2
        a, b = torch.zeros(len(samples), P), torch.zeros(len(samples), P)
        rel = torch.zeros(len(samples), P, 2)
        has = torch.zeros(len(samples))
        pts = pts or self.patch_targets(scenes)
        for j, (s, i) in enumerate(zip(samples, img_index)):
            if s["task"] == "relation" and len(s["objects"]) == 2:
                cov = pts[i]["cover"]
                a[j] = torch.tensor((cov[s["objects"][0]] >= 0.3).astype(np.float32))
                b[j] = torch.tensor((cov[s["objects"][1]] >= 0.3).astype(np.float32))
                bx, by = world.centre(scenes[i].objects[s["objects"][1]])
                rel[j, :, 0] = (self.pos[:, 0] * world.IMAGE_SIZE < bx).float()
                rel[j, :, 1] = (self.pos[:, 1] * world.IMAGE_SIZE < by).float()
                has[j] = 1.0
        return {"point_a": a, "point_b": b, "rel_xy": rel, "pair": has}

    def pointer_targets(self, scenes, samples, img_index, pts=None):
        """Auxiliary targets on the aggregator's patch tokens: which patches show the
        objects a sample is about (cover >= 0.3), and each patch's object box."""
        pts = pts or self.patch_targets(scenes)
        P = pts[0]["colour"].shape[0]
        mask = torch.zeros(len(samples), P)
        for j, (s, i) in enumerate(zip(samples, img_index)):
            for k in s["objects"]:
                mask[j] = torch.maximum(mask[j], torch.tensor((pts[i]["cover"][k] >= 0.3).astype(np.float32)))
        return {"point": mask,
                "patch_box": torch.tensor(np.stack([t["box"] for t in pts])),
                "patch_fg": torch.tensor(np.stack([t["owner"] >= 0 for t in pts]).astype(np.float32))}

    def encode_samples(self, images, samples, img_index, kind):
        prompts = [world.full_prompt(s["question"], s["tags"]) for s in samples]
        t5_ids, t5_mask = self.t5(prompts, max_length=self.cfg["llm"]["max_text_len"])
        qf_ids, qf_mask = self.bert([s["question"] for s in samples])
        lab, dmask = self.t5([s["answer"] for s in samples], max_length=self.cfg["llm"]["max_text_len"],
                             truncation_side="right")
        labels = lab.masked_fill(lab == self.t5.pad_id, -100)
        return {
            "pixels": self.pixels(images), "img_index": torch.tensor(img_index),
            "t5_ids": t5_ids, "t5_mask": t5_mask, "qf_ids": qf_ids, "qf_mask": qf_mask,
            "labels": labels, "dec_mask": dmask, "router_idx": world.TASK_IDX[kind],
            "tasks": [s["task"] for s in samples],
        }
