"""Match the imaging subjects with the gene table's: who can be prepared, and why the others cannot."""

from __future__ import annotations

from data_prep import gene_table as gt
from data_prep.readers import SubjectError, SubjectInputs, check_subject_id


def _duplicated_in_gene_table(table: gt.GeneTable) -> dict[str, str]:
    counts: dict[str, int] = {}
    for s in table.subjects:
        counts[s] = counts.get(s, 0) + 1
    return {s: f"subject id appears {c} times in the gene table; ids must be unique - remove or rename the copies"
            for s, c in counts.items() if c > 1}


def match_subjects(cases: list[SubjectInputs], genes: gt.GeneTable, genes_name: str
                   ) -> tuple[list[SubjectInputs], dict[str, dict]]:
    """(subjects to prepare, {subject: outcome "excluded" with its reason} for every other id)."""
    by_id: dict[str, list[SubjectInputs]] = {}
    for c in cases:
        by_id.setdefault(c.subject_id, []).append(c)
    gene_problems = _duplicated_in_gene_table(genes)
    gene_ids = set(genes.subjects)
    runnable: list[SubjectInputs] = []
    excluded: dict[str, dict] = {}
    # Sorted ids: the manifest lists subjects in the same order whatever the order of the inputs.
    for sid in sorted(set(by_id) | gene_ids):
        entries = by_id.get(sid, [])
        reason = ""
        try:
            check_subject_id(sid)
        except SubjectError as err:
            reason = str(err)
        # Ambiguous ids are excluded rather than guessed: which image belongs to the genes is the user's call.
        if not reason and len(entries) > 1:
            reason = (f"subject id appears {len(entries)} times in the imaging inputs; ids must be unique - "
                      f"remove or rename the copies")
        if not reason and sid in gene_problems:
            reason = gene_problems[sid]
        if not reason and not entries:
            reason = "in the gene table but no image was found for it"
        if not reason and sid not in gene_ids:
            reason = f"has an image but no column in the gene table {genes_name}"
        if reason:
            excluded[sid] = {"status": "excluded", "reason": reason, "split": None}
        else:
            runnable.append(entries[0])
    return runnable, excluded


def no_match_hint(cases: list[SubjectInputs], genes: gt.GeneTable) -> str:
    """Why no subject matched, when the ids of the two sides look unrelated."""
    image_ids, gene_ids = {c.subject_id for c in cases}, set(genes.subjects)
    if not image_ids or not gene_ids or image_ids & gene_ids:
        return ""
    def some(ids: set) -> str:
        return ", ".join(str(i) for i in sorted(ids)[:3])  # str(): a numpy string's repr is not the id

    return (f"; no imaging subject id (e.g. {some(image_ids)}) is in the gene table (ids there look like "
            f"{some(gene_ids)}) - if the table is samples x genes pass --genes-orientation samples-x-genes")
