"""A clinical knowledge-base world on the Human Phenotype Ontology (data from the hpo3 wheel).

``hpo.load_hpo`` reads the ontology and disease annotations; ``world.build_world`` makes a
differential with its question bank, naive-Bayes model and simulated patient; ``bench``
plays it through the 20 Questions machinery (``pursuit bench-kb``).
"""
