"""The model card's metadata and curves, read by real parsers: runs the C unit test test_card
with CKPT_CARD_OUT so that it writes the cards it renders (the fixture run of
tests/fixtures/trainer-output/ and a card made of hostile strings), parses their YAML front
matter with PyYAML, checks the model-index strictly, parses the SVGs with xml.etree, and posts
each README to the test hub's /api/validate-yaml, which must answer 200.

Needs PyYAML (Debian python3-yaml) besides the standard library."""

import json
import math
import os
import subprocess
import sys
import unittest
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ckpt_harness as h  # noqa: E402

try:
    import yaml
except ImportError:  # a clear failure, not a silent skip
    yaml = None

FIXTURES = os.path.join(h.SOURCE_DIR, "tests", "fixtures", "trainer-output")
SVG_NS = "{http://www.w3.org/2000/svg}"
OWNED = {"library_name", "license", "base_model", "datasets", "language", "tags",
         "pipeline_tag", "model-index"}


class CardYaml(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if yaml is None:
            raise AssertionError("PyYAML is required: install python3-yaml "
                                 "(scripts/install-deps.sh)")
        binary = os.path.join(h.BUILD_DIR, "tests", "test_card")
        if not os.path.isfile(binary):
            raise AssertionError(f"unit test binary not found at '{binary}': build first")
        cls.out = h.tempdir("ckpt-card-")
        env = dict(os.environ, CKPT_CARD_OUT=cls.out, CKPT_SOURCE_DIR=h.SOURCE_DIR)
        r = subprocess.run([binary], env=env, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise AssertionError(f"test_card failed:\n{r.stdout}{r.stderr}")
        with open(os.path.join(cls.out, "README.md"), encoding="utf-8") as f:
            cls.readme = f.read()
        with open(os.path.join(cls.out, "hostile", "README.md"), encoding="utf-8") as f:
            cls.hostile = f.read()
        with open(os.path.join(cls.out, "trainer-card-alone", "README.md"),
                  encoding="utf-8") as f:
            cls.alone = f.read()
        with open(os.path.join(FIXTURES, "all_results.json"), encoding="utf-8") as f:
            cls.results = json.load(f)
        with open(os.path.join(FIXTURES, "trainer_state.json"), encoding="utf-8") as f:
            cls.state = json.load(f)

    def check_model_index(self, meta):
        """The Hub's model-index shape, strictly: every level typed, nothing missing."""
        mi = meta["model-index"]
        self.assertIsInstance(mi, list)
        self.assertEqual(len(mi), 1)
        self.assertIsInstance(mi[0]["name"], str)
        self.assertIsInstance(mi[0]["results"], list)
        for r in mi[0]["results"]:
            self.assertEqual(set(r), {"task", "dataset", "metrics"})
            self.assertIsInstance(r["task"]["type"], str)
            for k, v in r["dataset"].items():
                self.assertIn(k, {"name", "type", "config", "split", "revision", "args"})
                self.assertIsInstance(v, str)
            self.assertIsInstance(r["dataset"]["name"], str)
            self.assertIsInstance(r["dataset"]["type"], str)
            self.assertIsInstance(r["metrics"], list)
            self.assertGreater(len(r["metrics"]), 0)
            for m in r["metrics"]:
                self.assertEqual(set(m), {"type", "value", "name"})
                self.assertIsInstance(m["type"], str)
                self.assertIsInstance(m["name"], str)
                self.assertIsInstance(m["value"], float)
                self.assertTrue(math.isfinite(m["value"]))
        return mi[0]

    def test_fixture_front_matter(self):
        fm, body = h.split_card(self.readme)
        meta = yaml.safe_load(fm)
        self.assertEqual(set(meta), OWNED)
        self.assertEqual(meta["library_name"], "transformers")
        self.assertEqual(meta["license"], "apache-2.0")
        self.assertEqual(meta["base_model"], "openai-community/gpt2")
        self.assertEqual(meta["language"], ["en"])
        self.assertEqual(meta["datasets"], ["synthetic-words"])
        self.assertIn("demo", meta["tags"])
        self.assertEqual(meta["pipeline_tag"], "text-generation")
        mi = self.check_model_index(meta)
        self.assertEqual(mi["name"], "tiny-gpt2-demo")
        (res,) = mi["results"]
        self.assertEqual(res["task"], {"type": "text-generation",
                                       "name": "Causal Language Modeling"})
        self.assertEqual(res["dataset"], {"name": "synthetic-words", "type": "synthetic-words",
                                          "split": "validation"})
        by_type = {m["type"]: m for m in res["metrics"]}
        self.assertEqual(by_type["loss"]["value"], self.results["eval_loss"])
        evals = [r for r in self.state["log_history"] if "eval_loss" in r]
        self.assertEqual(by_type["loss"]["value"], evals[-1]["eval_loss"])
        self.assertIn("![Training curves](training_curves.svg)", body)

    def test_trainer_card_alone_front_matter(self):
        """Rendered from the Trainer's README, trainer_state.json and all_results.json only:
        the Trainer's metadata, parsed, plus the results it left empty."""
        fm, _ = h.split_card(self.alone)
        meta = yaml.safe_load(fm)
        with open(os.path.join(FIXTURES, "README.generated-by-trainer.md"),
                  encoding="utf-8") as f:
            trainer_meta = yaml.safe_load(h.split_card(f.read())[0])
        for key in ("library_name", "license", "base_model", "language"):
            self.assertEqual(meta[key], trainer_meta[key], key)
        for tag in trainer_meta["tags"]:
            self.assertIn(tag, meta["tags"])
        self.assertEqual(trainer_meta["model-index"][0]["results"], [])
        mi = self.check_model_index(meta)
        self.assertEqual(mi["name"], trainer_meta["model-index"][0]["name"])
        (res,) = mi["results"]
        self.assertEqual(res["task"]["type"], "text-generation")
        self.assertEqual(res["dataset"]["name"], "synthetic-words")
        by_type = {m["type"]: m for m in res["metrics"]}
        self.assertEqual(by_type["loss"]["value"], self.results["eval_loss"])

    def test_hostile_front_matter(self):
        fm, body = h.split_card(self.hostile)
        meta = yaml.safe_load(fm)
        self.assertEqual(set(meta), OWNED - {"library_name"})
        # every hostile string comes back exactly as it went in
        self.assertEqual(meta["license"], 'mit"\nevil: true')
        self.assertEqual(meta["base_model"], 'a" onclick="x')
        self.assertEqual(meta["language"], ["en\n- fr"])
        self.assertEqual(meta["tags"], ["a\nb: c", "---", "#x", "'q'", '\\"',
                                        "\x01\x7f\x85\u2028", "é✓😀", "ckptpush"])
        mi = self.check_model_index(meta)
        self.assertEqual(mi["name"], "x\n---\n<script>alert(1)</script>")
        types = [m["type"] for m in mi["results"][0]["metrics"]]
        self.assertEqual(types, ["loss", "<script>x", "a|b\nc"])
        self.assertNotIn("<script", self.hostile)
        self.assertEqual(body.count("<!-- ckptpush:begin "), 11)
        self.assertEqual(body.count("<!-- ckptpush:end "), 11)

    def check_svg(self, path, want_labels):
        root = ET.parse(path).getroot()
        self.assertEqual(root.tag, SVG_NS + "svg")
        tags = {el.tag for el in root.iter()}
        self.assertNotIn(SVG_NS + "script", tags)
        self.assertNotIn(SVG_NS + "foreignObject", tags)
        for el in root.iter():
            for k, v in el.attrib.items():
                self.assertFalse(k.startswith("on"), k)
                self.assertFalse("href" in k, k)
        texts = ["".join(el.itertext()) for el in root.iter(SVG_NS + "text")]
        for label in want_labels:
            self.assertIn(label, texts)
        lines = root.findall(SVG_NS + "polyline")
        self.assertGreater(len(lines), 0)
        for pl in lines:
            pts = [tuple(map(float, p.split(","))) for p in pl.get("points").split()]
            self.assertGreater(len(pts), 0)
            for x, y in pts:
                self.assertTrue(0 <= x <= float(root.get("width")))
                self.assertTrue(0 <= y <= float(root.get("height")))
        return root, texts

    def test_svg(self):
        root, texts = self.check_svg(os.path.join(self.out, "training_curves.svg"),
                                     ["training loss", "eval loss", "step", "loss"])
        train_points = len([r for r in self.state["log_history"] if "loss" in r])
        pl = root.findall(SVG_NS + "polyline")
        self.assertEqual(len(pl[0].get("points").split()), train_points)
        # tick labels are numbers
        self.assertTrue(any(t.replace(".", "", 1).isdigit() for t in texts))
        self.check_svg(os.path.join(self.out, "hostile", "training_curves.svg"),
                       ["eval <script>x", "eval a|b c"])

    def test_hub_validate_yaml(self):
        hub = h.Hub()
        try:
            for text in (self.readme, self.hostile, self.alone):
                status, _, body = hub.request("POST", "/api/validate-yaml",
                                              body={"content": text, "repoType": "model"})
                self.assertEqual(status, 200, body)
                self.assertEqual(json.loads(body).get("errors"), None)
            # the check is real: a broken model-index is refused
            broken = self.readme.replace('      value: ', '      valu: ', 1)
            status, _, _ = hub.request("POST", "/api/validate-yaml",
                                       body={"content": broken, "repoType": "model"})
            self.assertEqual(status, 400)
        finally:
            hub.stop()


if __name__ == "__main__":
    unittest.main()
