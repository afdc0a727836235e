"""The report: Tables 1–8 (Markdown, CSV, LaTeX) with the paper's numbers beside ours, Figure 1, and REPORT.md."""
