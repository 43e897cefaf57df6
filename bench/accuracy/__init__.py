"""The accuracy benchmark: replay a project's history through the product, then answer its test questions
with each strategy (a real product configuration) and score execution accuracy.

Run it with ``querylift bench accuracy --data DIR --out results.json``; see ``bench/README.md``.
"""
