"""django-memopt's benchmarks: one harness, thin scenarios, one command.

``python -m benchmarks --help`` says how to run them; ``benchmarks/harness/`` holds what
every scenario shares, ``benchmarks/scenarios/`` one module per thing measured, and
``benchmarks/pages.py`` the pages they make.
"""
