"""Per-module mutation score from a mutmut 3 run, minus the listed equivalent mutants.

Run from the directory mutmut ran in (the one holding `mutants/`):

    python tests/mutation/score.py [--fail-under 90] [--survivors] [MODULE ...]

It reads mutmut's own records (`mutants/**/*.py.meta`, one exit code per mutant, decoded
with mutmut's status table) rather than parsing `mutmut results`. A mutant counts as
detected when a test failed (killed), ran out of its time budget (timeout) or crashed the
interpreter (segfault). The score is detected / (mutants - equivalents) for every module
whose mutants were all checked. Each line of equivalent.txt holds a mutant's name, a
fingerprint of its diff and the reason it cannot change behaviour; the fingerprint makes a
stale line (the code moved and the name now means another mutant) an error, not a silent
exclusion, as is a listed mutant that a test killed (then it was never equivalent).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from mutmut.stats import status_by_exit_code

EQUIVALENT_FILE = Path(__file__).with_name("equivalent.txt")
DETECTED = frozenset({"killed", "timeout", "segfault", "caught by type check"})


@dataclass
class Equivalent:
    name: str
    fingerprint: str
    reason: str


@dataclass
class ModuleScore:
    module: str
    statuses: Counter[str] = field(default_factory=Counter)
    excluded: int = 0
    survivors: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.statuses.values())

    @property
    def detected(self) -> int:
        return sum(n for status, n in self.statuses.items() if status in DETECTED)

    @property
    def complete(self) -> bool:
        return self.statuses["not checked"] == 0

    @property
    def score(self) -> float:
        counted = self.total - self.excluded
        return 100.0 * self.detected / counted if counted else 100.0


def read_equivalents(path: Path = EQUIVALENT_FILE) -> dict[str, Equivalent]:
    """`name fingerprint reason...` per line; blank lines and `#` comments are skipped."""
    found: dict[str, Equivalent] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split(maxsplit=2)
        if len(parts) < 3:
            raise SystemExit(f"{path}:{number}: expected '<mutant> <fingerprint> <reason>'")
        found[parts[0]] = Equivalent(*parts)
    return found


def fingerprint(mutant: str, source_path: Path) -> str:
    """A short hash of the mutant's changed lines (not of line numbers or context)."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    diff = get_diff_for_mutant(mutant, path=source_path)
    changed = [
        line[0] + line[1:].strip()
        for line in diff.splitlines()
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    return hashlib.sha256("\n".join(changed).encode()).hexdigest()[:10]


def module_of(meta: Path, root: Path) -> tuple[str, Path]:
    """`mutants/inferstack/protocol/codec.py.meta` -> ("protocol.codec", its source path)."""
    source = meta.relative_to(root).with_suffix("")  # drops ".meta"
    dotted = ".".join(source.with_suffix("").parts)
    return dotted.removeprefix("inferstack."), source


def collect(root: Path, equivalents: dict[str, Equivalent]) -> tuple[list[ModuleScore], list[str]]:
    scores: list[ModuleScore] = []
    problems: list[str] = []
    existing: set[str] = set()
    for meta in sorted(root.rglob("*.py.meta")):
        module, source = module_of(meta, root)
        score = ModuleScore(module)
        exit_codes: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
        existing.update(exit_codes)
        for mutant, code in exit_codes.items():
            status = status_by_exit_code[code]
            score.statuses[status] += 1
            listed = equivalents.get(mutant)
            if listed is None:
                if status not in DETECTED and status != "not checked":
                    score.survivors.append(f"{mutant}: {status}")
                continue
            actual = fingerprint(mutant, source)
            if actual != listed.fingerprint:
                problems.append(
                    f"{mutant}: listed as equivalent with fingerprint {listed.fingerprint}, "
                    f"but that name is now the mutant {actual}: review the line"
                )
            elif status in DETECTED:
                problems.append(f"{mutant}: listed as equivalent, but the tests detect it")
            else:
                score.excluded += 1
        scores.append(score)
    problems += [
        f"{name}: listed as equivalent, but no such mutant"
        for name in equivalents.keys() - existing
    ]
    return scores, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help="only these modules (e.g. protocol.codec)")
    parser.add_argument("--fail-under", type=float, default=0.0, metavar="PERCENT")
    parser.add_argument("--survivors", action="store_true", help="list undetected mutants")
    parser.add_argument("--mutants", type=Path, default=Path("mutants"), metavar="DIR")
    parser.add_argument(
        "--fingerprint", nargs="+", metavar="MUTANT", help="print equivalent.txt lines to fill in"
    )
    parser.add_argument(
        "--undetected", action="store_true", help="print only the undetected mutants' names"
    )
    args = parser.parse_args(argv)

    if not args.mutants.is_dir():
        print(f"no {args.mutants}/ here: run mutmut first (make mutation)", file=sys.stderr)
        return 2
    if args.fingerprint:
        sources = {
            mutant: module_of(meta, args.mutants)[1]
            for meta in args.mutants.rglob("*.py.meta")
            for mutant in json.loads(meta.read_text())["exit_code_by_key"]
        }
        for mutant in args.fingerprint:
            print(mutant, fingerprint(mutant, sources[mutant]), "<reason>")
        return 0
    scores, problems = collect(args.mutants, read_equivalents())
    if args.modules:
        scores = [
            s
            for s in scores
            if s.module in args.modules or s.module.endswith(tuple("." + m for m in args.modules))
        ]
    if args.undetected:
        for s in scores:
            for survivor in s.survivors:
                print(survivor.split(": ")[0])
        return 0
    failed = bool(problems)
    print(
        f"{'module':<18}{'mutants':>8}{'equiv.':>8}{'killed':>8}{'timeout':>8}"
        f"{'survived':>9}{'no tests':>9}{'score':>8}"
    )
    for s in scores:
        if s.complete:
            score = f"{s.score:>7.1f}%"
            failed = failed or s.score < args.fail_under
        else:
            score = f"{'-':>8}  ({s.statuses['not checked']} not run yet)"
        print(
            f"{s.module:<18}{s.total:>8}{s.excluded:>8}{s.statuses['killed']:>8}"
            f"{s.statuses['timeout'] + s.statuses['segfault']:>8}"
            f"{len(s.survivors) - s.statuses['no tests']:>9}{s.statuses['no tests']:>9}"
            f"{score}"
        )
        if args.survivors:
            for survivor in s.survivors:
                print(f"    {survivor}")
    for problem in problems:
        print(f"equivalent.txt: {problem}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
