#!/usr/bin/env python3
"""The training command (tools/train/train.py) end to end at 3 steps per stage (--smoke):
it runs every stage and exports a model directory that lion_ref loads, and it is
reproducible: a run stopped at a stage boundary and resumed (as after an interruption)
exports files byte-identical to an uninterrupted run's."""
import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TRAIN = os.path.join(ROOT, "tools", "train", "train.py")
sys.path.insert(0, os.path.join(ROOT, "tools", "reference"))
sys.path.insert(0, os.path.join(ROOT, "tools", "train"))

import smoke_training  # noqa: E402  (tests/py)

FILES = ["model.json", "vision.safetensors", "tagger.safetensors", "aggregator.safetensors",
         "llm.safetensors", "spiece.model", "vocab.txt"]


class TrainSmokeTest(smoke_training.SmokeTraining):
    SCRIPT = TRAIN
    PREFIX = "tinytrain_"
    TIMEOUT = 600

    def test_every_stage_runs_and_exports(self):
        import train
        for name in train.STAGES:
            self.assertIn("%s done" % name, self.log)
        self.assertIn("tagger: calibration F1", self.log)
        for f in FILES:
            self.assertTrue(os.path.isfile(os.path.join(self.model_dir(self.whole), f)), f)

    def test_export_loads(self):
        import torch
        from lion_ref.lion import load_model_dir
        model = load_model_dir(self.model_dir(self.whole))
        self.assertEqual(len(model.cfg["tagger"]["tags"]), model.ram.class_threshold.numel())
        # the exported files carry no training-only heads
        for k in model.state_dict():
            self.assertFalse(k.startswith("aux"), k)
        self.assertTrue(torch.isfinite(model.query_tokens).all())

    def test_resumed_run_is_identical(self):
        work = os.path.join(self.tmp, "resumed")
        log = self.train(work, "--stop-after", "stage2")
        self.assertIn("stopped after stage2", log)
        self.assertFalse(os.path.exists(self.model_dir(work)))
        log = self.train(work)
        self.assertIn("resumed: done ['stage0', 'stage0b', 'stage1', 'stage2']", log)
        self.assertNotIn("stage1 done", log)
        for f in FILES:
            with open(os.path.join(self.model_dir(self.whole), f), "rb") as a, \
                    open(os.path.join(self.model_dir(work), f), "rb") as b:
                self.assertTrue(a.read() == b.read(), "%s differs between the whole and the resumed run" % f)


if __name__ == "__main__":
    unittest.main()
