"""The application shell: the processes, the web routes, the CLI, the demo and the board.

Everything here may import the core (``dispatch``), the workflows and the activities; nothing
there imports this package (tests/test_layers.py keeps it so).
"""
