"""The grid: the axes and seeds a command line asks for, and the runs they make, each known by a key that stays
the same across sweeps (the whole prompt but its seeds, a digest, and the seed)."""
from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass

from .runs import Run

SEED_INPUTS = ("seed", "noise_seed")
GRID_LIMIT = 100_000  # runs a grid may have without --yes


class UsageError(Exception):
    """Something the command line or its files ask for that cannot be done: said to the user, exit status 2."""


@dataclass(frozen=True)
class Axis:
    node: str  # the node's id in the workflow
    input: str
    key: str  # as the user wrote it: NODE.INPUT
    values: tuple


def parse_value(text: str):
    """A value as a widget takes it: an integer, a number, true/false, or the text itself (combo choices)."""
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def find_node(workflow: dict, name: str) -> str:
    if name in workflow:
        return name
    titled = [nid for nid, node in workflow.items() if node.get("_meta", {}).get("title") == name]
    if len(titled) == 1:
        return titled[0]
    if titled:
        raise UsageError(f"--set: several nodes are titled {name!r} ({', '.join(titled)}); use a node id")
    raise UsageError(f"--set: no node with id or title {name!r}; nodes: " +
                     ", ".join(f"{nid} ({node.get('_meta', {}).get('title', node.get('class_type'))})"
                               for nid, node in workflow.items()))


def parse_axis(workflow: dict, spec: str) -> Axis:
    target, sep, values = spec.partition("=")
    node_name, dot, input_name = target.rpartition(".")
    if not sep or not dot or not node_name or not input_name or not values:
        raise UsageError(f"--set {spec!r}: write NODE.INPUT=V1,V2,... (NODE: a node id or its title)")
    node = find_node(workflow, node_name)
    inputs = workflow[node].get("inputs", {})
    if input_name not in inputs:
        raise UsageError(f"--set {spec!r}: node {node} ({workflow[node]['class_type']}) has no input {input_name!r}; "
                         f"its inputs: {', '.join(inputs)}")
    if isinstance(inputs[input_name], list):
        raise UsageError(f"--set {spec!r}: {input_name} is a link from another node, not a value")
    if input_name in SEED_INPUTS:
        raise UsageError(f"--set {spec!r}: the seeds are set with --seeds (e.g. --seeds {values}); they go to every "
                         f"{' and '.join(SEED_INPUTS)} input of the workflow")
    return Axis(node, input_name, target, distinct(parse_value(v.strip()) for v in values.split(",")))


def distinct(values) -> tuple:
    """The values in their order, each once (5 and 5.0 are one value)."""
    kept = []
    for value in values:
        if not any(same_value(value, k) for k in kept):
            kept.append(value)
    return tuple(kept)


def parse_seeds(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise UsageError(f"--seeds {text!r}: give a count N (seeds 0..N-1) or a list S1,S2,...") from None
    if len(values) == 1:
        if values[0] < 1:
            raise UsageError("--seeds: the count must be at least 1")
        return range(values[0])
    return list(distinct(values))


def same_value(a, b) -> bool:
    """Values of an axis compared as a user means them: 5 and 5.0 are one number; True is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def key_value(value):
    """A value as it enters a run's key: numbers as floats, so that 5 and 5.0 are one run."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


@dataclass
class Grid:
    """The runs of a sweep: the workflow with each cell's axis values and seed. Its size is known before any run
    is made, and a run's prompt is made when it is queued."""

    workflow: dict
    axes: list[Axis]
    seeds: list[int]

    def __post_init__(self):
        # (no axis is on a seed input: parse_axis refuses one)
        self.seed_targets = [(nid, name) for nid, node in self.workflow.items() for name in SEED_INPUTS
                             if name in node["inputs"] and not isinstance(node["inputs"][name], list)]
        # the key of a run is a digest of its whole prompt but its seeds: the workflow without the values the grid
        # sets, once, then each run's values and seed
        blank = json.loads(json.dumps(self.workflow))
        for nid, name in [*self.seed_targets, *((a.node, a.input) for a in self.axes)]:
            blank[nid]["inputs"][name] = None
        self.workflow_digest = hashlib.sha1(json.dumps(blank, sort_keys=True).encode()).hexdigest()

    @property
    def size(self) -> int:
        return math.prod(len(a.values) for a in self.axes) * len(self.seeds)

    def prompt(self, settings: tuple, seed: int) -> dict:
        prompt = json.loads(json.dumps(self.workflow))
        for axis, value in zip(self.axes, settings):
            prompt[axis.node]["inputs"][axis.input] = value
        for nid, name in self.seed_targets:
            prompt[nid]["inputs"][name] = seed
        return prompt

    def key(self, settings: tuple, seed: int) -> str:
        text = json.dumps([self.workflow_digest, [[a.node, a.input] for a in self.axes],
                           [key_value(v) for v in settings], seed])
        return hashlib.sha1(text.encode()).hexdigest()[:12]

    def runs(self) -> list[Run]:
        return [Run(settings, seed, self.key(settings, seed), self)
                for settings in itertools.product(*(a.values for a in self.axes)) for seed in self.seeds]

    def prompts_to_check(self) -> list[dict]:
        """Prompts that hold every value the grid gives (a server is checked for each, not for every run)."""
        first = tuple(a.values[0] for a in self.axes)
        prompts = [self.prompt(first, self.seeds[0])]
        for i, axis in enumerate(self.axes):
            for value in axis.values[1:]:
                prompts.append(self.prompt(first[:i] + (value,) + first[i + 1:], self.seeds[0]))
        return prompts


def grid(workflow: dict, axes: list[Axis], seeds: list[int]) -> list[Run]:
    return Grid(workflow, axes, seeds).runs()
