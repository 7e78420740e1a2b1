"""What a pass is: a matcher that proposes rewrites (or says why it declines)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator

from ..ir import Graph, Op


@dataclass(eq=False)
class Rewrite:
    """One proposed edit. `region` lists every op of the current graph whose inputs,
    outputs or constants the edit touches, plus the ops that carry a changed value until
    it cancels out (a shifted residual stream up to its compensating ADD). The manager
    checks the region before against after, and rolls `apply` back if they differ."""

    key: tuple                 # identifies the match, so a rolled-back one is not retried
    where: str                 # a tensor or op name users can find in the model
    region: list[Op]
    apply: Callable[[], None]
    summary: str = ""          # what the rewrite does, for the report
    details: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Refusal:
    where: str
    reason: str


Proposal = Rewrite | Refusal


class Pass:
    """Subclasses set `name` and implement `propose(graph)`, yielding Rewrites in order of
    preference (a fallback for the same match comes after its first choice) and a
    Refusal for each match a precondition rules out. The manager may call `propose` again,
    and apply the next rewrite, before the last one's check has ended (and undo both when
    that check fails): a pass keeps no state between calls."""

    name: str = ""

    def propose(self, graph: Graph) -> Iterator[Proposal]:
        raise NotImplementedError


PASSES: dict[str, Pass] = {}


def register_pass(cls):
    """Class decorator: register one instance under cls.name; duplicates are an error."""
    instance = cls()
    if not instance.name:
        raise ValueError(f"{cls.__name__} has no pass name")
    if instance.name in PASSES:
        raise ValueError(f"pass {instance.name!r} is registered twice")
    PASSES[instance.name] = instance
    return cls
