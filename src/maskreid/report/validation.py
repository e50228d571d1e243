"""The report's section on validation runs (stage validate): settings chosen on held-out training
identities, shown apart from the test-set tables so that nobody reads them as results."""

from __future__ import annotations


def validation_table(rows: dict[str, dict]) -> str:
    """Markdown section of the report: one line per validation run, what it set and its score."""
    lines = ["", "## Validation split (held-out training identities, never the test set)", "",
             "| run | dataset | arch | masks | held-out ids (queries x gallery) | loss options | steps | rank-1 | mAP |",
             "|---|---|---|---|---|---|---|---|---|"]
    for key, r in rows.items():
        opts = ", ".join(f"{k}={v}" for k, v in sorted((r.get("loss_options") or {}).items()))
        masks = r.get("masks") or ("none" if "masks" in r else "—")  # records before these keys: —
        raw = r.get("raw")  # a weight-averaged run: its last step's own weights beside the average
        score = {k: f"{r[k]:.2f}" + (f" (last step {raw[k]:.2f})" if raw else "") for k in ("rank1", "mAP")}
        lines.append(f"| {key} | {r['dataset']} | {r.get('arch', '—')} | {masks} | "
                     f"{r['val_ids']} ({r['val_queries']} x {r['val_gallery']}) | "
                     f"{opts} | {r.get('steps')} | {score['rank1']} | {score['mAP']} |")
    return "\n".join(lines) + "\n"
