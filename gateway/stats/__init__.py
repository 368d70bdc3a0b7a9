"""Statistics (Art. 17-23): roll-ups kept in the rating's transaction, indicators, rankings, analysis,
the department statistics API, exports and the public page."""
