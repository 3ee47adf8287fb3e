"""What no single task owns.

File readers (readers.py), the classification task spec (spec.py), tokenisation, padding and batch order
(batching.py), dev splits (splits.py) and augmentation (augment.py). Each task kind's own readers live in
its folder of `distil.tasks`.
"""
