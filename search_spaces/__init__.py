"""Declarative search spaces, installed as the package data ``hybridmoo.search_spaces``
(black-box spaces here, elastic supernet specs in ``supernets/``)."""
