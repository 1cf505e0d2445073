"""Tests of hybridmoo.gradmoo (a package: its module names must not clash with other folders)."""
