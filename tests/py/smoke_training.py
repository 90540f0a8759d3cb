"""What the training smoke tests (test_train.py, test_train_pink.py) share: running a training
command with --smoke into a work folder, and a test class that trains once, into a temporary
folder, before its tests. Not a test itself (no test_ prefix)."""
import os
import shutil
import subprocess
import sys
import tempfile
import unittest


def train(script, work, *extra, timeout=600):
    """Runs `script --smoke --work WORK EXTRA...`; its output, or AssertionError with its tail."""
    r = subprocess.run([sys.executable, script, "--smoke", "--work", work, *extra],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    if r.returncode != 0:
        raise AssertionError("%s %s failed:\n%s" % (os.path.basename(script), " ".join(extra), r.stdout[-3000:]))
    return r.stdout


class SmokeTraining(unittest.TestCase):
    """Subclasses set SCRIPT (and PREFIX, TIMEOUT); cls.whole is the uninterrupted run's work
    folder, cls.log its output."""
    SCRIPT = None
    PREFIX = "smoke_"
    TIMEOUT = 600

    @classmethod
    def train(cls, work, *extra):
        return train(cls.SCRIPT, work, *extra, timeout=cls.TIMEOUT)

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix=cls.PREFIX)
        cls.whole = os.path.join(cls.tmp, "whole")
        cls.log = cls.train(cls.whole)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def model_dir(self, work):
        return os.path.join(work, "smoke", "model")
