"""Rendering graphs with Graphviz (the only place that imports graphviz)."""
