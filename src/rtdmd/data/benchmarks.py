"""The registry of public prompt sets: each set by name, with its source file (repository, pinned commit, path,
sha256, size, licence), its parser to a :class:`~rtdmd.data.prompts.PromptSet`, the number of prompts it parses
to, and the metrics the RTDMD paper reports on it. Files are fetched on first use (:mod:`rtdmd.data.fetch`).

Names (``rtdmd prompts list`` prints the table)::

    geneval                  553 prompts   paper: GenEval        (4 images per prompt, GenEval's protocol)
    drawbench                200 prompts   paper: CLIPScore, Aesthetic, PickScore, HPSv2, ImageReward
                                           (the file lists each prompt 5 times: 5 images per prompt)
    hpsv3                  1,024 prompts   paper: HPSv3          (HPSv3's test prompts)
    geneval2                 800 prompts   paper: GenEval2       (test split)
    ocr                    1,018 prompts   paper: OCR            (Flow-GRPO's test split)
    partiprompts           1,632 prompts   extra
    t2i_compbench/<cat>   ~300 each        extra; <cat> in color, shape, texture, spatial, 3d_spatial,
                                           non_spatial, numeracy, complex (``t2i_compbench`` names all 8)
    pickapic_sfw/train    15,471 prompts   training: the recipes' stage-1 prompts
    pickapic_sfw/test      1,024 prompts   held-out Pick-a-Pic captions

Metadata per prompt (the fields next to ``"prompt"`` in a JSONL prompt file):

- ``geneval``: GenEval's own schema, ``tag`` (task) + ``include`` / ``exclude`` (:mod:`rtdmd.data.geneval`);
- ``geneval2``: GenEval2's own, ``atom_count`` (int), ``vqa_list`` ([question, answer] pairs) and ``skills``
  (one per question);
- ``ocr``: ``text``, the quoted text the image must render;
- ``partiprompts``: ``tag`` (category), ``challenge``, ``note``;
- ``t2i_compbench/<cat>``: ``tag`` = ``<cat>``;
- the others: none.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rtdmd.config.strict import suggest
from rtdmd.data.fetch import RemoteFile, fetch
from rtdmd.data.geneval import parse_prompt_set
from rtdmd.data.prompts import PromptSet, load_prompts
from rtdmd.errors import UserError

# What the paper reports, by metric id (the id is also the reward name ``rtdmd evaluate`` looks for).
METRICS = {"clipscore": "CLIPScore", "aesthetic": "Aesthetic", "pickscore": "PickScore", "hpsv2": "HPSv2",
           "imagereward": "ImageReward", "geneval": "GenEval", "hpsv3": "HPSv3", "ocr": "OCR", "geneval2": "GenEval2"}

GENEVAL_AT = ("djghosh13/geneval", "af4902f24d3ca90ebbb446dd9891a59e0f82725f")
PARTI_AT = ("google-research/parti", "5a657978134374ce28973948331b319adef164bd")
COMPBENCH_AT = ("Karine-Huang/T2I-CompBench", "1b7094991a57f3c22abdd4f6e8ba6c1a15517073")
RTDMD_AT = ("Harahan/RTDMD", "6c3cb0309732b34313d296ca78d02b5f88a50ca0")
FLOW_GRPO_AT = ("yifan123/flow_grpo", "ac4c86e8cae021841f1fde853d340e0db67690dd")
FLOW_FACTORY_AT = ("X-GenGroup/Flow-Factory", "a0b2bc5a2b4fbf9125429b3fb70c0c5d7631047c")
COMPBENCH_CATEGORIES = ("color", "shape", "texture", "spatial", "3d_spatial", "non_spatial", "numeracy", "complex")


def _file(local: str, at: tuple[str, str], path: str, sha256: str, size: int, licence: str) -> RemoteFile:
    return RemoteFile(local, at[0], at[1], path, sha256, size, licence)


_COMPBENCH_FILES = {  # category -> (sha256, size)
    "color": ("1634259756dbc77d13093d907d414480080ec9790a8c97ad09efaea7b2534f2d", 11871),
    "shape": ("37e1a276906c7ea9516cbd7ac8501be896006c0c17ca7344f260562834455bae", 15935),
    "texture": ("fbb5363515b4a28009e360afaaaf389d2dd2289e50dbb0c6ef4ea0c7fe4f3d4f", 14211),
    "spatial": ("8707a1d7e42ce3002d95363cf55f74bd043c843ae27108f5125aaaa7840ca988", 9213),
    "3d_spatial": ("c9953597315f36a5fcb41291bb19bdc6ab5f64a0fa760d691b4854a73f5d1fe9", 7851),
    "non_spatial": ("04c56cc9ac441dc9ea6c5157652058bd1635b5308526dd31bb29a1caab9a758d", 17750),
    "numeracy": ("dad8df141604b70ba7554bec724e3db0a80023680769b5c514854ea2d2527bbe", 10863),
    "complex": ("1b808018b8d9916db3d47d5aa2ef18377a3549a56901a474156f799824cdf3b4", 22724),
}

FILES: dict[str, RemoteFile] = {f.local: f for f in (
    _file("geneval/evaluation_metadata.jsonl", GENEVAL_AT, "prompts/evaluation_metadata.jsonl",
          "5c48e0813e812e3c373fa5c8ed07a8f0a483be30272b4427b0559c8048e67c13", 85209, "MIT"),
    _file("geneval/object_names.txt", GENEVAL_AT, "prompts/object_names.txt",
          "608f6a0e5c8ca1c7a92b818430141fe268c85b7930b50f4160f1d65893b5bacd", 642, "MIT"),
    _file("partiprompts/PartiPrompts.tsv", PARTI_AT, "PartiPrompts.tsv",
          "fab29e41bb512a169b56acab4cf2a41dcb675e285df2efcde6640c7dd3c440eb", 123107, "Apache-2.0"),
    *(_file(f"t2i_compbench/{cat}_val.txt", COMPBENCH_AT, f"examples/dataset/{cat}_val.txt", sha, size, "MIT")
      for cat, (sha, size) in _COMPBENCH_FILES.items()),
    _file("drawbench/test.txt", RTDMD_AT, "dataset/drawbench/test.txt",
          "9006b98feabb94b28a2bc0c88de42fd4f31a9ec3c2a19e308a02c5385b7172f0", 65164,
          "repository Apache-2.0; DrawBench states no licence"),
    _file("hpsv3/test.txt", RTDMD_AT, "dataset/hpsv3/test.txt",
          "31592ea9af348610c0c840147bc5bc5eeac34d4dfd831c62a298c04e7ec4b65d", 90278,
          "repository Apache-2.0; upstream not checked"),
    _file("geneval2/test.jsonl", RTDMD_AT, "dataset/geneval2/test.jsonl",
          "09233adbc9f877fba205f1a20efa4a8640e7e62a91dfd55893562bed8a928e43", 423220,
          "repository Apache-2.0; upstream not checked"),
    _file("ocr/test.txt", FLOW_GRPO_AT, "dataset/ocr/test.txt",
          "4dd8caf3ab6ade73bd376c7d14c6ca49b6eacfb1bd321e22c40714ae4a98d4dc", 217565, "MIT"),
    _file("pickapic_sfw/train.txt", FLOW_FACTORY_AT, "dataset/pickscore/train.txt",
          "f7ccf3512532e8c86c677a09907dad85a38a2d22ca95e701c11779b88cad33f0", 1803713,
          "repository Apache-2.0; Pick-a-Pic's own licence not confirmed"),
    _file("pickapic_sfw/test.txt", FLOW_FACTORY_AT, "dataset/pickscore/test.txt",
          "d839050acb06aa045e399e76a81e4ade9a55fc743dc0e22e7b3eaeaca5c19107", 123967,
          "repository Apache-2.0; Pick-a-Pic's own licence not confirmed"),
)}


# ----------------------------------------------------------------------------------------------------------
# Parsers: a verified file -> PromptSet (every problem one UserError line naming the file)

Parser = Callable[[Path], PromptSet]


def plain_lines(path: Path) -> PromptSet:
    """One prompt per non-empty line, stripped; no metadata."""
    return load_prompts(path)


def tagged_lines(tag: str) -> Parser:
    """One prompt per line, each tagged ``tag`` (so that evaluation reports per-category means)."""
    def parse(path: Path) -> PromptSet:
        texts = load_prompts(path).texts
        return PromptSet(texts, tuple({"tag": tag} for _ in texts))
    return parse


def repeated_lines(times: int) -> Parser:
    """A file that lists every prompt ``times`` times (DrawBench as the paper evaluates it, 200 x 5): the
    distinct prompts in order of first appearance. The repetition becomes ``times`` seeds per prompt in
    evaluation: repeating a prompt under one seed would only draw the same image again."""
    def parse(path: Path) -> PromptSet:
        counts = Counter(load_prompts(path).texts)
        odd = next((p for p, n in counts.items() if n != times), None)
        if odd is not None:
            raise UserError(f"{path}: prompt {odd!r} appears {counts[odd]} times, expected every prompt {times} "
                            "times")
        return PromptSet(tuple(counts))
    return parse


def geneval_jsonl(path: Path) -> PromptSet:
    """GenEval's ``evaluation_metadata.jsonl``; every record's metadata validated."""
    prompts = load_prompts(path)
    parse_prompt_set(prompts.metadata, str(path))
    return prompts


def geneval2_jsonl(path: Path) -> PromptSet:
    """GenEval2's JSONL (``atom_count``, ``vqa_list``, ``skills``), shape-checked (scored by a VLM elsewhere)."""
    prompts = load_prompts(path)
    for number, meta in enumerate(prompts.metadata, 1):
        vqa, skills = meta.get("vqa_list"), meta.get("skills")
        pairs_ok = isinstance(vqa, list) and all(
            isinstance(q, list) and len(q) == 2 and all(isinstance(x, str) for x in q) for q in vqa)
        if not pairs_ok or not isinstance(skills, list) or len(skills) != len(vqa):
            raise UserError(f"{path} record {number}: needs 'vqa_list' ([question, answer] pairs) and one "
                            "'skills' entry per question")
    return prompts


QUOTED = re.compile(r'"([^"]+)"')


def ocr_lines(path: Path) -> PromptSet:
    """Text-rendering prompts: the first double-quoted span is the target text (``text``), which an OCR
    metric compares with what the image reads."""
    texts = load_prompts(path).texts
    metadata = []
    for number, text in enumerate(texts, 1):
        match = QUOTED.search(text)
        if match is None:
            raise UserError(f"{path} prompt {number}: no double-quoted target text in {text!r}")
        metadata.append({"text": match[1]})
    return PromptSet(texts, tuple(metadata))


PARTI_COLUMNS = ("Prompt", "Category", "Challenge", "Note")


def parti_tsv(path: Path) -> PromptSet:
    """PartiPrompts' TSV (columns ``Prompt, Category, Challenge, Note``; split on tabs only: prompts contain
    double quotes, which a CSV reader would take for quoting)."""
    rows = [line.split("\t") for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
    if not rows or tuple(c.strip() for c in rows[0]) != PARTI_COLUMNS:
        raise UserError(f"{path}: expected the tab-separated header {' '.join(PARTI_COLUMNS)}")
    texts, metadata = [], []
    for number, row in enumerate(rows[1:], 2):
        if len(row) != len(PARTI_COLUMNS) or not row[0].strip():
            raise UserError(f"{path} line {number}: expected {len(PARTI_COLUMNS)} tab-separated columns")
        texts.append(row[0].strip())
        metadata.append({"tag": row[1].strip(), "challenge": row[2].strip(), "note": row[3].strip()})
    return PromptSet(tuple(texts), tuple(metadata))


# ----------------------------------------------------------------------------------------------------------
# The registry

Use = Literal["paper", "extra", "train"]


@dataclass(frozen=True)
class Benchmark:
    """A registered prompt set."""

    name: str
    file: RemoteFile
    parse: Parser
    count: int  # prompts after parsing
    use: Use  # "paper": the paper reports metrics on it; "extra": evaluated beyond the paper; "train"
    metrics: tuple[str, ...] = ()  # ids of METRICS, as the paper reports them on this set
    samples_per_prompt: int = 1  # images per prompt in the set's own protocol
    about: str = ""
    # How a metric's per-image values become the reported number: their mean, or the mean of the per-tag means
    # (GenEval's overall score weighs its six tasks equally).
    aggregate: Literal["mean", "tag_mean"] = "mean"

    def load(self) -> PromptSet:
        """Fetch (or reuse the cached copy), verify, parse, and check the count."""
        prompts = self.parse(fetch(self.file))
        if len(prompts) != self.count:
            raise UserError(f"prompt set {self.name!r} parsed to {len(prompts)} prompts, the registry expects "
                            f"{self.count}: report this as a bug of rtdmd")
        return prompts

    def record(self) -> dict[str, Any]:
        """What an evaluation protocol records about the set."""
        return {"name": self.name, "url": self.file.url, "sha256": self.file.sha256, "num_prompts": self.count,
                "samples_per_prompt": self.samples_per_prompt, "aggregate": self.aggregate}


_PAPER = "paper"
BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (
    Benchmark("geneval", FILES["geneval/evaluation_metadata.jsonl"], geneval_jsonl, 553, _PAPER, ("geneval",), 4,
              "GenEval: object, count, colour and position prompts with detector-checkable metadata", "tag_mean"),
    Benchmark("drawbench", FILES["drawbench/test.txt"], repeated_lines(5), 200, _PAPER,
              ("clipscore", "aesthetic", "pickscore", "hpsv2", "imagereward"), 5,
              "DrawBench's 200 prompts; the paper's file lists each 5 times"),
    Benchmark("hpsv3", FILES["hpsv3/test.txt"], plain_lines, 1024, _PAPER, ("hpsv3",), 1, "HPSv3 test prompts"),
    Benchmark("geneval2", FILES["geneval2/test.jsonl"], geneval2_jsonl, 800, _PAPER, ("geneval2",), 1,
              "GenEval2 test prompts with VQA checks"),
    Benchmark("ocr", FILES["ocr/test.txt"], ocr_lines, 1018, _PAPER, ("ocr",), 1,
              "Flow-GRPO's text-rendering test prompts (quoted target text)"),
    Benchmark("partiprompts", FILES["partiprompts/PartiPrompts.tsv"], parti_tsv, 1632, "extra", (), 1,
              "PartiPrompts with category and challenge"),
    *(Benchmark(f"t2i_compbench/{cat}", FILES[f"t2i_compbench/{cat}_val.txt"], tagged_lines(cat), 300, "extra", (),
                1, f"T2I-CompBench {cat} validation prompts") for cat in COMPBENCH_CATEGORIES),
    Benchmark("pickapic_sfw/train", FILES["pickapic_sfw/train.txt"], plain_lines, 15471, "train", (), 1,
              "Pick-a-Pic captions filtered safe for work: the recipes' stage-1 prompts"),
    Benchmark("pickapic_sfw/test", FILES["pickapic_sfw/test.txt"], plain_lines, 1024, "extra", (), 1,
              "held-out Pick-a-Pic captions (safe for work)"),
)}


def get(name: str) -> Benchmark:
    if name not in BENCHMARKS:
        raise UserError(f"unknown prompt set {name!r}{suggest(name, BENCHMARKS)}: 'rtdmd prompts list' shows them")
    return BENCHMARKS[name]


def members(name: str) -> list[Benchmark]:
    """The set ``name``, or the members of the group ``name`` (``t2i_compbench``); [] for an unknown name."""
    if name in BENCHMARKS:
        return [BENCHMARKS[name]]
    return [b for b in BENCHMARKS.values() if b.name.startswith(f"{name}/")]


def expand(names: Sequence[str]) -> list[Benchmark]:
    """Benchmarks by name, where a group name (``t2i_compbench``) stands for all its members, in registry order;
    duplicates are dropped."""
    chosen: list[Benchmark] = []
    for name in names:
        for bench in members(name) or [get(name)]:
            if bench not in chosen:
                chosen.append(bench)
    return chosen


def load(name: str) -> PromptSet:
    """The prompt set ``name``, fetched and verified on first use."""
    return get(name).load()
