"""What prep prints: one summary of the dataset, and one line per kind of subject problem (the
details stay in manifest.json, so a cohort of hundreds does not print hundreds of lines)."""

from __future__ import annotations

from pathlib import Path


def outcome_lines(outcomes: dict[str, dict], per_reason: int = 3, per_warning: int = 5) -> list[str]:
    """One line per failed/excluded subject; a reason shared by many subjects (e.g. genes without an
    image) is printed once with a count. Subject warnings ("<kind>: <details>") are printed one line
    per kind with the subjects it concerns; the details stay in the manifest."""
    groups: dict[tuple[str, str], list[str]] = {}
    kinds: dict[str, dict[str, list[str]]] = {}
    for sid, o in sorted(outcomes.items()):
        if o["status"] != "ok":  # grouped by reason: 98 "no image" subjects are one line, not 98
            groups.setdefault((o["status"].upper(), o["reason"]), []).append(sid)
        for w in o.get("warnings", []):
            kind, _, detail = w.partition(": ")
            kinds.setdefault(kind, {}).setdefault(sid, []).append(detail)
    lines = []
    for (status, reason), sids in groups.items():
        if len(sids) <= per_reason:
            lines += [f"  {status:8s} {sid}: {reason}" for sid in sids]
        else:
            lines.append(f"  {status:8s} {len(sids)} subjects ({', '.join(sids[:per_reason])}, ...): {reason}")
    for kind, by_subject in kinds.items():
        sids = list(by_subject)
        if len(sids) == 1:
            lines.append(f"warning: {sids[0]}: {kind}: {'; '.join(d for d in by_subject[sids[0]] if d)}".rstrip(": "))
        else:
            more = ", ..." if len(sids) > per_warning else ""
            lines.append(f"warning: {len(sids)} subjects: {kind} ({', '.join(sids[:per_warning])}{more}; "
                         f"details in manifest.json subjects)")
    return lines


def summary(manifest: dict, out: Path) -> str:
    c = manifest["counts"]
    ok = manifest["splits"]
    genes = manifest["genes"]
    lines = [f"prep: {c['subjects']['ok']} subjects ok ({len(ok['train'])} train / {len(ok['val'])} val / "
             f"{len(ok['test'])} test), {c['subjects']['failed']} failed, {c['subjects']['excluded']} excluded; "
             f"processed {c['processed']}, reused {c['from_cache']} from cache",
             f"slices: {sum(c['slices']['nodule'].values())} nodule, {sum(c['slices']['background'].values())} "
             f"background; genes: {genes['n_kept']} of {genes['n_in_table']} kept"
             + "".join(f", {len(v)} dropped ({k})" for k, v in genes["dropped"].items())
             + (f", {len(genes['imputed_cells'])} NA cells imputed with the train median"
                if genes["imputed_cells"] else "")]
    if manifest["gene_stats"] is None:
        lines.append(f"gene statistics: no log_zscore ({genes['stats_note']})")
    lines += outcome_lines(manifest["subjects"])
    lines += [f"warning: {w}" for w in manifest["warnings"]]
    lines.append(f"wrote {out} ({len(manifest['files']['slices'])} slice files) in {manifest.get('seconds', 0):.1f} s")
    return "\n".join(lines)
