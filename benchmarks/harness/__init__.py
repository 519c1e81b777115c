"""What every benchmark stands on: one collection class, one cache of encodings, one way to time, one report
writer (which records command, date, machine and commit), a real `htp serve` to load, and the synthetic
long-document tasks. A benchmark is a small module on these; no benchmark imports another."""
