"""After the run: diagnosis and localisation, minimal counterexamples, reproduction scripts."""
