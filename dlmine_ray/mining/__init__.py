"""Frequent-itemset and rule mining (pure Python/numpy, no Ray): the local step of the
distributed FP-Growth and the rule measures."""
