"""Validate an AgentSpeak (.asl) plan library before an agent runs it.

Why: with spade-bdi, a syntax error surfaces as an opaque "1 error and 0 warnings" exception, and
a call to an action that does not exist is only a *warning* at load time; at run time it kills
the agent's BDI behaviour while the agent still looks alive (docs/spade-traps.md, trap 4). A typo in a
plan file must instead be a clear error naming the file and the line.

Checked here, for the file and everything it includes:
- lexing and parsing (the interpreter's own parser);
- every internal action (`.name(...)`) must exist with that arity in the agent's action registry;
- every achievement goal posted (`!g`, `!!g`, initial `!g.`) must have at least one `+!g` plan of
  that arity, since posting a goal no plan handles is also a run-time failure.

Warned about (logged, the agent still runs), when the agent says which beliefs it keeps: a
belief read in a plan's context that nothing ever adds (not the agent's own, not an initial
belief or rule of the file, not added by any plan, not a plan's triggering belief). Such a plan
silently never fires, which is what a misspelt belief (`sucess_rate`) does.
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import agentspeak
import agentspeak.lexer
import agentspeak.parser
from agentspeak.parser import AstBinaryOp, AstFormula, AstGoal, AstLiteral, AstNode, AstUnaryOp

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AslProblem:
    """One problem found in a plan file: where, and what."""

    path: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        if not self.line:
            return f"{self.path}: {self.message}"
        return f"{self.path}:{self.line}:{self.column}: {self.message}"


class AslError(ValueError):
    """A plan library is invalid. `problems` lists each problem; the message names file and line."""

    def __init__(self, problems: list[AslProblem]):
        self.problems = problems
        first = problems[0]
        self.path = first.path
        self.line = first.line
        more = "".join(f"\n  {p}" for p in problems[1:])
        super().__init__(f"invalid plan file {first}{more}")


class _CollectingLog(agentspeak.Log):
    """The interpreter's error log, collecting problems instead of printing them to stderr."""

    def __init__(self) -> None:
        super().__init__(_log, max_errors=None)
        self.problems: list[tuple[str, object]] = []

    def error(self, msg, *args, **kwargs):
        self.num_errors += 1
        self.problems.append((msg % args if args else msg, kwargs.get("loc")))
        return agentspeak.AggregatedError(self.num_errors, self.num_warnings)

    exception = error

    def warning(self, msg, *args, **kwargs):
        self.num_warnings += 1


def _problem(path: str, loc, message: str) -> AslProblem:
    if loc is None:
        return AslProblem(path, 0, 0, message)
    return AslProblem(loc.filename or path, loc.lineno, loc.startcol + 1, message)


def parse_asl(path: str | Path) -> agentspeak.parser.AstAgent:
    """Parse a plan file (and its includes) into the interpreter's AST, or raise AslError."""
    path = str(path)
    log = _CollectingLog()
    try:
        with open(path, encoding="utf-8") as source:
            tokens = agentspeak.lexer.TokenStream(source, log)
            ast_agent = agentspeak.parser.parse(source.name, tokens, log)
    except FileNotFoundError:
        raise AslError([AslProblem(path, 0, 0, "plan file not found")]) from None
    except agentspeak.AggregatedError:
        ast_agent = None
    if log.problems or ast_agent is None:
        problems = [_problem(path, loc, f"syntax error: {msg}") for msg, loc in log.problems]
        raise AslError(problems or [AslProblem(path, 0, 0, "syntax error")])
    return ast_agent


def _walk(node: object) -> Iterator[AstNode]:
    """Every AST node under `node`, depth first."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, AstNode):
            yield item
            stack.extend(reversed(list(vars(item).values())))
        elif isinstance(item, (list, tuple)):
            stack.extend(reversed(item))


def _known_actions(actions: agentspeak.Actions) -> list[str]:
    names: set[str] = set()
    registry: agentspeak.Actions | None = actions
    while registry is not None:
        names.update(f"{f}/{n}" for f, n in registry.actions)
        names.update(f"{f}/*" for f in registry.variadic_actions)
        registry = registry.parent
    return sorted(names)


def _has_action(actions: agentspeak.Actions, functor: str, arity: int) -> bool:
    try:
        actions.lookup(functor, arity)
        return True
    except KeyError:
        return False


def find_problems(path: str | Path, actions: agentspeak.Actions) -> list[AslProblem]:
    """All problems of a plan file given the actions the agent provides (empty list: valid)."""
    path = str(path)
    ast_agent = parse_asl(path)
    problems: list[AslProblem] = []

    handled_goals = {
        (plan.event.head.functor, len(plan.event.head.terms))
        for plan in ast_agent.plans
        if plan.event.trigger == agentspeak.Trigger.addition
        and plan.event.goal_type == agentspeak.GoalType.achievement
    }
    posted_goals: list[AstLiteral] = [g.atom for g in ast_agent.goals if isinstance(g, AstGoal)]

    known = None
    for node in _walk([ast_agent.rules, ast_agent.plans, ast_agent.goals]):
        if isinstance(node, AstLiteral) and node.functor and node.functor.startswith("."):
            arity = len(node.terms)
            if not _has_action(actions, node.functor, arity):
                known = known or _known_actions(actions)
                hint = difflib.get_close_matches(f"{node.functor}/{arity}", known, n=1)
                suggestion = f"; did you mean {hint[0]}?" if hint else ""
                problems.append(_problem(path, node.loc, f"unknown action {node.functor}/{arity}{suggestion}"))
        elif isinstance(node, AstFormula) and node.formula_type in (
            agentspeak.FormulaType.achieve,
            agentspeak.FormulaType.achieve_later,
        ):
            if isinstance(node.term, AstLiteral):
                posted_goals.append(node.term)

    for goal in posted_goals:
        key = (goal.functor, len(goal.terms))
        if key not in handled_goals:
            problems.append(_problem(path, goal.loc, f"no plan handles goal !{goal.functor}/{key[1]} (add a '+!{goal.functor}' plan)"))

    problems.sort(key=lambda p: (p.path, p.line, p.column))
    return problems


def _context_beliefs(node: object) -> Iterator[AstLiteral]:
    """The belief literals a plan context reads (not their arguments, not actions)."""
    if isinstance(node, AstLiteral):
        if node.functor and not node.functor.startswith("."):
            yield node
    elif isinstance(node, AstBinaryOp):
        yield from _context_beliefs(node.left)
        yield from _context_beliefs(node.right)
    elif isinstance(node, AstUnaryOp):
        yield from _context_beliefs(node.operand)


def find_unknown_beliefs(path: str | Path, agent_beliefs: Iterable[str]) -> list[AslProblem]:
    """Plan contexts that read a belief nothing ever adds, with the closest known belief."""
    path = str(path)
    ast_agent = parse_asl(path)
    known = set(agent_beliefs)
    known.update(b.functor for b in ast_agent.beliefs if isinstance(b, AstLiteral))
    known.update(r.head.functor for r in ast_agent.rules)
    for plan in ast_agent.plans:
        if plan.event.goal_type == agentspeak.GoalType.belief:
            known.add(plan.event.head.functor)
    for node in _walk(ast_agent.plans):
        if isinstance(node, AstFormula) and node.formula_type in (
            agentspeak.FormulaType.add, agentspeak.FormulaType.replace
        ) and isinstance(node.term, AstLiteral):
            known.add(node.term.functor)
    warnings = []
    for plan in ast_agent.plans:
        for literal in _context_beliefs(plan.context):
            if literal.functor not in known:
                hint = difflib.get_close_matches(literal.functor, sorted(known), n=1)
                suggestion = f"; did you mean {hint[0]}?" if hint else ""
                warnings.append(_problem(path, literal.loc, f"the plan context reads belief '{literal.functor}', which nothing "
                                                            f"adds, so the plan never applies{suggestion}"))
    warnings.sort(key=lambda p: (p.path, p.line, p.column))
    return warnings


def check_asl(path: str | Path, actions: agentspeak.Actions, agent_beliefs: Iterable[str] | None = None) -> None:
    """Raise AslError naming file and line if the plan file is invalid for an agent with `actions`;
    with `agent_beliefs` (every belief the agent itself keeps), log a warning for each plan
    context that reads a belief nothing adds."""
    problems = find_problems(path, actions)
    if problems:
        raise AslError(problems)
    if agent_beliefs is not None:
        for warning in find_unknown_beliefs(path, agent_beliefs):
            _log.warning("plan file %s", warning)

