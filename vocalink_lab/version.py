"""The package's version, in a module of its own.

Modules inside the package read it from here, never from the package root: the root
is the notebook user's facade (it loads the Lab on first use), and a subpackage that
imported it would close a cycle through the Lab.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
