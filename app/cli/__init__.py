"""The ``pursuit`` command line: every command, one module per group (``main`` assembles them).

Commands wire the service's packages together (a composition root, like ``app.main``): no
service package imports this one.
"""
