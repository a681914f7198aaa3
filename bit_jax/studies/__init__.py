"""What the studies need beyond training: the study configs' shared pieces (study_configs.py),
statistics (stats.py), learning curves and "how small can the target set be?"
(learning_curve.py, how_small.py), table cells, and the papers' protocol pieces (Prasad et
al.'s eq. 9 in stepwise.py, Soekhoe et al.'s class split in class_split.py)."""
