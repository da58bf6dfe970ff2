"""Every ``>>>`` example in the installed package runs and prints what its docstring says."""

import doctest
import importlib
import pkgutil

import pytest

import noiseshape


def _modules():
    names = [noiseshape.__name__]
    names += [m.name for m in pkgutil.walk_packages(noiseshape.__path__, prefix="noiseshape.")]
    return sorted(n for n in names if not n.endswith("__main__"))


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples(name):
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(module, name):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"


def test_the_package_has_examples():
    # the public entry points document themselves with examples
    finder = doctest.DocTestFinder(exclude_empty=True)
    examples = sum(len(t.examples) for t in finder.find(importlib.import_module("noiseshape.numpy")))
    assert examples >= 5
