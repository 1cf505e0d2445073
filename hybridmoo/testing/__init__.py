"""Conformance suites shipped with the package: every engine, space and backend inherits one."""
