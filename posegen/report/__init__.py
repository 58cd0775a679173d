"""Visual report of an augment run: report.html contact sheet and score plots."""
